import { readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { errno, errorMessage, precondition, unavailable } from '../../errors.js';
import { detached } from '../../call-context.js';
import { filesystemOn, freezeFilesystem, thawFilesystem } from '../../host/freeze.js';
import { loopsBackedBy } from '../../host/loop.js';
import { log } from '../../log.js';
import type { GroupSnapshot, GroupSnapshots, GroupSnapshotRecord, SnapshotRecord, VolumeRecord } from '../backend.js';
import { syncDir, syncFile, writeTempSynced } from './atomic.js';
import type { ImageCopies } from './image-copies.js';
import type { RecordIndex } from './record-index.js';

/** What the group snapshots take of the file pool. */
export interface FileGroupPool {
  tmpDir: string;
  snapshotsDir: string;
  groupsDir: string;
  volumeImage(id: string): string;
  snapshotImage(id: string): string;
  getVolume(id: string): Promise<VolumeRecord | null>;
  snapshots: RecordIndex<SnapshotRecord>;
  groups: RecordIndex<GroupSnapshotRecord>;
  copies: ImageCopies;
  withSpace<T>(bytes: number, fn: () => Promise<T>): Promise<T>;
}

const FREEZE_MARK = /^freeze-(group-[a-z0-9-]+)\.json$/;
/** How long a freeze that timed out is watched for taking hold late (then thawed). */
const LATE_THAW_MS = 10 * 60_000;
/** A reflink under freeze takes milliseconds; one that takes this long is given up (and the filesystems thawed). */
const FROZEN_COPY_TIMEOUT_MS = 30_000;

/**
 * Group snapshots of the file pool, one point in time for all members:
 * - a member no loop device backs cannot be written (NodeStageVolume waits for its lock, which the
 *   caller holds): its image is copied as it is;
 * - a member attached with a filesystem mounted from it has that filesystem frozen (FIFREEZE: dirty
 *   data written, new writes held) while every member's image is reflinked, then thawed: no write
 *   lands in one member's copy that was issued after a write still missing from another's. Only by
 *   reflink (XFS, btrfs), which takes milliseconds: copying a frozen volume would hold its workload
 *   for as long as the copy takes, so a pool that cannot reflink refuses;
 * - a member attached as a raw block device (a VM disk) has nothing to freeze: the loop device
 *   cannot hold writes, so the group is refused rather than cut inconsistently.
 * Crash safety: the mount points are written to `.tmp/freeze-<group>.json` before the first freeze,
 * and the next start thaws them (sweep); members are committed before the group record, the
 * commit point, and members without a group are not listed, and are removed at the next start or
 * by a retry of the same group.
 */
export class FileGroupSnapshots implements GroupSnapshots {
  constructor(private readonly pool: FileGroupPool) {}

  async get(id: string): Promise<GroupSnapshot | null> {
    const group = await this.pool.groups.get(id);
    if (!group) return null;
    const snapshots: SnapshotRecord[] = [];
    for (const sid of group.snapshotIds) {
      const s = await this.pool.snapshots.get(sid);
      if (s) snapshots.push(s);
    }
    return { group, snapshots };
  }

  async create(spec: { id: string; name: string; members: ReadonlyArray<{ volumeId: string; snapshotId: string; snapshotName: string }> }): Promise<GroupSnapshot> {
    const existing = await this.get(spec.id);
    if (existing) return existing;
    // A create that crashed half-way left members of this group: they are not of the cut about to be made.
    await this.removeMembers(spec.id);

    const volumes: VolumeRecord[] = [];
    const mountPoints = new Set<string>();
    let attached = 0;
    for (const m of spec.members) {
      const vol = await this.pool.getVolume(m.volumeId);
      if (!vol) throw precondition(`volume ${m.volumeId} is not in this pool`);
      volumes.push(vol);
      const loops = await loopsBackedBy(this.pool.volumeImage(vol.id));
      if (loops.length) attached++;
      for (const l of loops) {
        const fs = await filesystemOn(l.device);
        if (!fs) {
          throw precondition(
            `volume ${vol.id} is attached as ${l.device} with no filesystem mounted from it here (used as a raw block device, or mounted only in another mount namespace): the file pool cannot hold its writes, ` +
              'so a group snapshot of it would not be one point in time; stop its workload (detach it), or snapshot it alone',
          );
        }
        mountPoints.add(fs);
      }
    }
    if (attached && !(await this.pool.copies.canReflink())) {
      throw precondition(
        `${attached} of the volumes are attached and the pool's filesystem cannot reflink: their filesystems would be held frozen for as long as whole copies take; ` +
          'detach them, or put the pool on a filesystem with reflink (XFS, btrfs)',
      );
    }

    const allocated = (await Promise.all(volumes.map(async (v) => ((await stat(this.pool.volumeImage(v.id))).blocks ?? 0) * 512))).reduce((a, b) => a + b, 0);
    const tmps = spec.members.map((m) => path.join(this.pool.tmpDir, `${m.snapshotId}.img`));
    return this.pool.withSpace(allocated, async () => {
      const committed: string[] = [];
      try {
        const createdAt = await this.cut(spec.id, [...mountPoints].sort(), async () => {
          // Under a freeze only reflinks, and each bounded: the workloads wait for as long as this takes.
          for (const [i, vol] of volumes.entries()) {
            await this.pool.copies.copy(this.pool.volumeImage(vol.id), tmps[i]!, { kind: 'volume', id: vol.id }, attached ? 'reflink' : 'plain', attached ? FROZEN_COPY_TIMEOUT_MS : undefined);
          }
        });
        const snapshots: SnapshotRecord[] = [];
        for (const [i, m] of spec.members.entries()) {
          const record: SnapshotRecord = { id: m.snapshotId, name: m.snapshotName, sourceVolumeId: m.volumeId, sizeBytes: volumes[i]!.capacityBytes, createdAt, readyToUse: true, groupId: spec.id };
          await syncFile(tmps[i]!);
          const meta = await writeTempSynced(`${m.snapshotId}.json`, JSON.stringify(record), this.pool.tmpDir);
          await this.pool.snapshots.put(record, meta, () => rename(tmps[i]!, this.pool.snapshotImage(m.snapshotId)));
          committed.push(m.snapshotId);
          snapshots.push(record);
        }
        await syncDir(this.pool.snapshotsDir);
        const group: GroupSnapshotRecord = {
          id: spec.id,
          name: spec.name,
          sourceVolumeIds: spec.members.map((m) => m.volumeId),
          snapshotIds: spec.members.map((m) => m.snapshotId),
          createdAt,
        };
        // The commit point: from here the group and its members are listed (and, synced, after a power loss too).
        await this.pool.groups.put(group, await writeTempSynced(`${spec.id}.json`, JSON.stringify(group), this.pool.tmpDir));
        await syncDir(this.pool.groupsDir);
        return { group, snapshots };
      } catch (err) {
        // A group record that made it in goes first: never a committed group without its members.
        if (await this.pool.groups.get(spec.id)) await this.pool.groups.remove(spec.id).catch((e: unknown) => log.error('a half-made group snapshot could not be removed', { group: spec.id, err: String(e) }));
        for (const id of committed) await this.removeSnapshot(id);
        for (const t of tmps) await rm(t, { force: true });
        throw err;
      }
    });
  }

  /**
   * Runs `copy` with every filesystem in `mountPoints` frozen, and returns the time of the cut. The
   * mount points are on disk before the first freeze, so a crash while they are frozen is undone by
   * the next start. Whatever happens here (a failure, the call cancelled or past its deadline), each
   * filesystem a freeze was begun on is thawed, outside the call, before the mark goes; one that
   * cannot be confirmed thawed keeps the mark and is watched (thawWhenFrozen).
   */
  private async cut(groupId: string, mountPoints: string[], copy: () => Promise<void>): Promise<number> {
    if (!mountPoints.length) {
      const at = Date.now();
      await copy();
      return at;
    }
    const mark = path.join(this.pool.tmpDir, `freeze-${groupId}.json`);
    await rename(await writeTempSynced(`freeze-${groupId}.json.new`, JSON.stringify(mountPoints), this.pool.tmpDir), mark);
    await syncDir(this.pool.tmpDir);
    const begun: Array<{ mountPoint: string; failed: boolean }> = [];
    try {
      for (const mp of mountPoints) {
        // Counted before it is asked: a freeze that fails or is cut short may still take hold in the kernel.
        const entry = { mountPoint: mp, failed: true };
        begun.push(entry);
        try {
          await freezeFilesystem(mp);
        } catch (err) {
          throw unavailable(`the filesystem at ${mp} could not be frozen for the group snapshot: ${errorMessage(err)}`);
        }
        entry.failed = false;
      }
      const at = Date.now();
      await copy();
      return at;
    } finally {
      await detached(async () => {
        const unsure: string[] = [];
        for (const { mountPoint, failed } of [...begun].reverse()) {
          try {
            // A freeze that failed and is not in effect now may yet take hold: watched all the same.
            if (!(await thawFilesystem(mountPoint)) && failed) unsure.push(mountPoint);
          } catch (err) {
            log.error('a filesystem frozen for a group snapshot could not be thawed; trying again (a restart tries too)', { mountPoint, err: String(err) });
            unsure.push(mountPoint);
          }
        }
        if (unsure.length) void this.thawWhenFrozen(unsure, mark);
        else await rm(mark, { force: true });
      });
    }
  }

  /**
   * Filesystems a freeze may still hold (a freeze that failed or was cut short, a thaw that failed):
   * thawed should they be frozen, tried every 5 s for LATE_THAW_MS, outside any call. The freeze mark
   * stays until each is confirmed thawed, so a restart thaws what this could not.
   */
  private async thawWhenFrozen(mountPoints: string[], mark: string): Promise<void> {
    const left = new Set(mountPoints);
    const until = Date.now() + LATE_THAW_MS;
    while (left.size && Date.now() < until) {
      await new Promise((r) => setTimeout(r, 5_000).unref());
      for (const mp of [...left]) {
        const thawed = await thawFilesystem(mp).catch(() => null);
        if (thawed) {
          log.warn('a filesystem a group snapshot had left frozen is thawed', { mountPoint: mp });
          left.delete(mp);
        }
      }
    }
    if (left.size) log.warn('filesystems a group snapshot may yet leave frozen are still watched at the next start (freeze mark kept)', { mountPoints: [...left], mark });
    else await rm(mark, { force: true });
  }

  async delete(id: string): Promise<void> {
    // The group goes first (the commit point): a crash after it leaves members no list shows, removed by a retry or the next start.
    if (await this.pool.groups.get(id)) await this.pool.groups.remove(id);
    await this.removeMembers(id);
  }

  private async removeMembers(groupId: string): Promise<void> {
    for (const s of await this.pool.snapshots.sorted()) if (s.groupId === groupId) await this.removeSnapshot(s.id);
  }

  private async removeSnapshot(id: string): Promise<void> {
    await this.pool.snapshots.remove(id, async () => {
      await syncDir(this.pool.snapshotsDir);
      await rm(this.pool.snapshotImage(id), { force: true });
    });
  }

  /** Whether a snapshot is listed: a member only once its group is committed. */
  async listed(s: SnapshotRecord): Promise<boolean> {
    return !s.groupId || (await this.pool.groups.get(s.groupId)) !== null;
  }

  /**
   * At start, before `.tmp` is cleared: thaws what a crash left frozen (its freeze mark), then removes
   * members whose group was never committed (or whose delete did not finish).
   */
  async sweep(): Promise<void> {
    for (const f of await readdir(this.pool.tmpDir)) {
      if (!FREEZE_MARK.test(f)) continue;
      let mountPoints: unknown;
      try {
        mountPoints = JSON.parse(await readFile(path.join(this.pool.tmpDir, f), 'utf8'));
      } catch (err) {
        if (errno(err) === 'ENOENT') continue;
        log.error('a freeze mark cannot be read; check its filesystems are not frozen (fsfreeze --unfreeze)', { file: f, err: String(err) });
        continue;
      }
      let unsure = false;
      for (const mp of Array.isArray(mountPoints) ? mountPoints : []) {
        if (typeof mp !== 'string') continue;
        try {
          const thawed = await thawFilesystem(mp);
          log.warn('a group snapshot was cut short while its filesystems were frozen; thawed', { mountPoint: mp, wasFrozen: thawed });
        } catch (err) {
          // Gone (unmounted), or fsfreeze failed: the mark stays for the next start; a person may look.
          log.error('a filesystem named by a freeze mark could not be thawed (is it still mounted?)', { mountPoint: mp, err: String(err) });
          unsure = true;
        }
      }
      if (!unsure) await rm(path.join(this.pool.tmpDir, f), { force: true });
    }
    for (const s of await this.pool.snapshots.sorted()) {
      if (s.groupId && !(await this.pool.groups.get(s.groupId))) {
        log.warn('removing a group member whose group snapshot was never committed', { snapshot: s.id, group: s.groupId });
        await this.removeSnapshot(s.id);
      }
    }
  }
}
