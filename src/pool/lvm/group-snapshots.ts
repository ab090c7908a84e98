import { mkdir, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { detached } from '../../call-context.js';
import { errorMessage, precondition, unavailable } from '../../errors.js';
import { run } from '../../exec.js';
import { log } from '../../log.js';
import type { GroupSnapshot, GroupSnapshots, SnapshotRecord } from '../backend.js';
import { dmDeviceOf, dmName } from './dm.js';
import type { LvmCli, LvRow } from './lvm-cli.js';
import { groupOfRow, isIncomplete, isSnapshotRow, isVolumeRow, snapshotFromRow, snapshotTags, visibleSnapshotRows } from './tags.js';

/** What the group snapshots take of the lvm pool. */
export interface LvmGroupPool {
  vg: string;
  lvm: LvmCli;
  /** Where the marks of suspended devices are kept: a tmpfs (/run), gone at reboot with the suspensions themselves. */
  runDir: string;
  /** Makes one snapshot LV of `src` with these tags: a thin snapshot of a thin volume, else (or with copyOnWrite) a copy-on-write one. */
  snapshotLv(src: LvRow, id: string, tags: string[], copyOnWrite: boolean): Promise<void>;
  /** Why a volume cannot be snapshotted now (its extents are being moved to its tier), or null. */
  moving?(volumeId: string): string | null;
  /** A sysfs to read the dm table from (dm.ts), for tests. */
  sysBlock?: string;
}

/** A dm suspend flushes what the device holds first: on a disk that answers, milliseconds to seconds. */
const SUSPEND_TIMEOUT_MS = 30_000;
const RESUME_TIMEOUT_MS = 30_000;
const MARK = /^lvm-suspend-(.+)\.json$/;
/** How long the members' I/O may be held while they are cut, all of them together. */
const CUT_DEADLINE_MS = 120_000;
/** How long a suspend that may yet take hold is watched. */
const LATE_RESUME_MS = 10 * 60_000;

/**
 * Group snapshots of the lvm pool, one point in time for every member: every member active on this
 * node has its device-mapper device suspended (I/O held in the kernel, dirty data of a filesystem on
 * it flushed: dm's lockfs) before the first snapshot is cut, and stays suspended until its own is
 * (lvcreate resumes the origin it snapshots; any left are resumed after). So no write completes to
 * any member between the first cut and its own: for writes that each wait for the one before, no
 * member holds a later write without every earlier one. Filesystem or raw block (a VM disk) alike;
 * a member not active here has no writer and is cut as it stands (a thin one as a thin snapshot).
 *
 * An active member is cut as a copy-on-write snapshot, thin volumes too: LVM creates a thin snapshot
 * by sending the pool a message while it suspends the origin, and skips that for an origin already
 * suspended, committing a snapshot to its metadata that the kernel never made (then the pool's
 * transaction IDs disagree and lvm refuses further changes). A copy-on-write snapshot needs no
 * message: lvm loads its tables on the suspended origin and resumes it. Its cost is the classic one:
 * a reserve outside the thin pool (20% of the volume), and a copy of each origin chunk first written
 * while it exists. Freezing the filesystems instead is no way round: lvm's own suspend then fails
 * (EBUSY on a frozen filesystem) and a thick origin is left for manual repair.
 *
 * The group is its members' LV tags (its ID, name and size): a member is listed only once all are
 * made, so the last lvcreate is the commit point; members a crash left short of it are removed by
 * the retry, by DeleteVolumeGroupSnapshot, or at the next start. The names of suspended devices go
 * to a mark under runDir first, and a start resumes any the mark names that are still suspended.
 */
export class LvmGroupSnapshots implements GroupSnapshots {
  constructor(private readonly pool: LvmGroupPool) {}

  private async rows(): Promise<LvRow[]> {
    return this.pool.lvm.lvs(this.pool.vg);
  }

  async get(id: string): Promise<GroupSnapshot | null> {
    const members = visibleSnapshotRows(await this.rows()).filter((r) => groupOfRow(r)?.id === id);
    return members.length ? groupOf(members) : null;
  }

  async create(spec: { id: string; name: string; members: ReadonlyArray<{ volumeId: string; snapshotId: string; snapshotName: string }> }): Promise<GroupSnapshot> {
    const existing = await this.get(spec.id);
    if (existing) return existing;
    // Before any member is cut: pvmove suspends and resumes a moving LV's tables itself.
    for (const m of spec.members) {
      const why = this.pool.moving?.(m.volumeId);
      if (why) throw precondition(why);
    }
    // A cut a crash left half-made: its members are not of the point in time about to be taken.
    await this.delete(spec.id);
    const rows = await this.rows();
    const sources = spec.members.map((m) => {
      const src = rows.find((r) => r.lv_name === m.volumeId && isVolumeRow(r));
      if (!src) throw precondition(`volume ${m.volumeId} is not in volume group ${this.pool.vg}`);
      if (isIncomplete(src)) throw precondition(`volume ${m.volumeId} is still being filled (a clone or restore); retry once it is ready`);
      return src;
    });
    const isActive = sources.map((s) => dmDeviceOf(this.pool.vg, s.lv_name, this.pool.sysBlock) !== null);
    const active = sources.filter((_, i) => isActive[i]).map((s) => dmName(this.pool.vg, s.lv_name));
    const made: string[] = [];
    try {
      await this.suspended(spec.id, active, async (createdAt) => {
        const deadline = Date.now() + CUT_DEADLINE_MS;
        for (const [i, m] of spec.members.entries()) {
          // The first member's workload has waited since the cut began: past the bound, the group fails and every device resumes.
          if (active.length && Date.now() > deadline) throw unavailable(`the group snapshot's cut took longer than ${CUT_DEADLINE_MS / 1000} s with its members' I/O held; given up, nothing kept`);
          const src = sources[i]!;
          const tags = snapshotTags({ name: m.snapshotName, createdAt, sourceVolumeId: src.lv_name, sizeBytes: Number(src.lv_size), group: { id: spec.id, name: spec.name, size: spec.members.length } });
          made.push(m.snapshotId);
          // An active thin member is cut copy-on-write: lvm sends the pool its thin snapshot message only
          // when it suspends the origin itself, and of one suspended already it records a snapshot the
          // kernel never made (lvm2 2.03.16 on Linux 6.1, test/vm/snapshot-backup-lvm.vm-test.ts).
          await this.pool.snapshotLv(src, m.snapshotId, tags, isActive[i]!);
        }
      });
    } catch (err) {
      await detached(async () => {
        for (const id of made.reverse()) {
          await this.pool.lvm.exec('lvremove', ['-y', `${this.pool.vg}/${id}`]).catch((e: unknown) => {
            // Not listed (its group is short of a member); the retry or the next start removes it.
            if (!/not found|Failed to find/i.test(String(e))) log.error('a member of a failed group snapshot could not be removed', { lv: id, err: String(e) });
          });
        }
      });
      throw err;
    }
    const g = await this.get(spec.id);
    if (!g) throw unavailable(`group snapshot ${spec.id} was cut but its members are not all listed`);
    return g;
  }

  async delete(id: string): Promise<void> {
    for (const r of (await this.rows()).filter((x) => isSnapshotRow(x) && groupOfRow(x)?.id === id)) {
      await this.pool.lvm.exec('lvremove', ['-y', `${this.pool.vg}/${r.lv_name}`]);
    }
  }

  /**
   * Runs `cut` with every device in `devices` suspended, giving it the time of the cut. Each device is
   * resumed after, whatever happened (a failure, the call cancelled), outside the call; the mark
   * naming them is on disk before the first suspend and goes once all are resumed.
   */
  private async suspended(groupId: string, devices: string[], cut: (createdAt: number) => Promise<void>): Promise<void> {
    if (!devices.length) return cut(Date.now());
    const mark = markPath(this.pool.runDir, this.pool.vg, groupId);
    await mkdir(this.pool.runDir, { recursive: true, mode: 0o700 });
    // A mark an earlier cut of this group left (devices not confirmed resumed): those first, or not now.
    const earlier = await readMark(mark);
    if (earlier) {
      const left = await resumeSuspended(earlier);
      if (left.length) throw unavailable(`devices ${left.join(', ')} an earlier cut of this group suspended are not resumed yet; retry later`);
      await rm(mark, { force: true });
    }
    await writeFile(`${mark}.new`, JSON.stringify({ vg: this.pool.vg, devices }), { mode: 0o600 });
    await rename(`${mark}.new`, mark);
    const begun: string[] = [];
    const unsure: string[] = [];
    try {
      for (const d of devices) {
        // Counted before it is asked: a suspend that times out may still take hold.
        begun.push(d);
        try {
          await run('dmsetup', ['suspend', d], { timeoutMs: SUSPEND_TIMEOUT_MS, uninterruptible: true });
        } catch (err) {
          // Its flush may still be under way in the kernel, and the suspend take hold after this gives up.
          unsure.push(d);
          throw unavailable(`device ${d} could not be suspended for the group snapshot: ${errorMessage(err)}`);
        }
      }
      await cut(Date.now());
    } finally {
      await detached(async () => {
        const left = await resumeSuspended(begun);
        if (left.length || unsure.length) void resumeWhenSuspended([...new Set([...left, ...unsure])], mark);
        else await rm(mark, { force: true });
      });
    }
  }
}

function markPath(runDir: string, vg: string, groupId: string): string {
  return path.join(runDir, `lvm-suspend-${Buffer.from(vg).toString('hex')}-${groupId}.json`);
}

/** The group of its members' rows, all present. */
function groupOf(members: LvRow[]): GroupSnapshot {
  const snapshots: SnapshotRecord[] = members.map(snapshotFromRow).sort((a, b) => a.sourceVolumeId.localeCompare(b.sourceVolumeId));
  const g = groupOfRow(members[0]!)!;
  return {
    group: { id: g.id, name: g.name, sourceVolumeIds: snapshots.map((s) => s.sourceVolumeId), snapshotIds: snapshots.map((s) => s.id), createdAt: snapshots[0]!.createdAt },
    snapshots,
  };
}

/**
 * Resumes those of `devices` that are suspended with only their live table (as a suspend of ours
 * leaves them; one with a table lvm loaded meanwhile is lvm's to finish). Returns those that could
 * not be resumed.
 */
async function resumeSuspended(devices: readonly string[]): Promise<string[]> {
  const left: string[] = [];
  for (const d of [...devices].reverse()) {
    try {
      const info = await run('dmsetup', ['info', d], { timeoutMs: RESUME_TIMEOUT_MS, okExitCodes: [1] });
      if (info.exitCode !== 0 || !/State:\s+SUSPENDED/.test(info.stdout)) continue;
      if (/INACTIVE/.test(info.stdout)) {
        log.error('a device suspended for a group snapshot has a table loaded that is not live; left to lvm', { device: d });
        left.push(d);
        continue;
      }
      await run('dmsetup', ['resume', d], { timeoutMs: RESUME_TIMEOUT_MS, uninterruptible: true });
    } catch (err) {
      log.error('a device suspended for a group snapshot could not be resumed', { device: d, err: String(err) });
      left.push(d);
    }
  }
  return left;
}

/**
 * Devices a suspend may still take hold of (it timed out with its flush under way in the kernel), or
 * that could not be resumed: resumed should they be suspended, tried every 5 s for LATE_RESUME_MS,
 * outside any call. The mark stays until each is confirmed, so a restart resumes what this could not.
 */
async function resumeWhenSuspended(devices: string[], mark: string): Promise<void> {
  log.error('devices of a group snapshot may be left suspended; watching them to resume them', { devices, mark });
  const until = Date.now() + LATE_RESUME_MS;
  // Each device to the end of the watch: one active now may yet be suspended by a suspend still stuck in the kernel.
  while (Date.now() < until) {
    await new Promise((r) => setTimeout(r, 5_000).unref());
    await resumeSuspended(devices);
  }
  const left = await resumeSuspended(devices);
  if (!left.length) await rm(mark, { force: true });
  else log.error('devices suspended for a group snapshot could not be resumed; the mark stays for the next start', { mark, devices: left });
}

async function readMark(mark: string): Promise<string[] | null> {
  try {
    return (JSON.parse(await readFile(mark, 'utf8')) as { devices: string[] }).devices;
  } catch {
    return null;
  }
}

/** At start: devices a crashed group snapshot left suspended (its mark names them) are resumed. */
export async function resumeLeftSuspended(runDir: string, vg: string): Promise<string[]> {
  let names: string[];
  try {
    names = (await readdir(runDir)).filter((n) => MARK.test(n) && n.startsWith(`lvm-suspend-${Buffer.from(vg).toString('hex')}-`));
  } catch {
    return [];
  }
  const resumed: string[] = [];
  for (const n of names) {
    const mark = path.join(runDir, n);
    let devices: string[];
    try {
      const m = JSON.parse(await readFile(mark, 'utf8')) as { vg: string; devices: string[] };
      if (m.vg !== vg) continue;
      devices = m.devices;
    } catch {
      await rm(mark, { force: true });
      continue;
    }
    log.warn('a group snapshot left devices suspended (the driver stopped during its cut); resuming them', { devices });
    const left = await resumeSuspended(devices);
    if (!left.length) await rm(mark, { force: true });
    resumed.push(...devices.filter((d) => !left.includes(d)));
  }
  return resumed;
}
