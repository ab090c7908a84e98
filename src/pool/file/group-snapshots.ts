import { readFile, readdir, rename, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { errno, errorMessage, precondition, unavailable } from '../../errors.js';
import { CommandError } from '../../exec.js';
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
          for (const [i, vol] of volumes.entries()) await this.pool.copies.copy(this.pool.volumeImage(vol.id), tmps[i]!, { kind: 'volume', id: vol.id }, attached ? 'reflink' : 'plain');
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
        // The commit point: from here the group and its members are listed.
        await this.pool.groups.put(group, await writeTempSynced(`${spec.id}.json`, JSON.stringify(group), this.pool.tmpDir));
        return { group, snapshots };
      } catch (err) {
        for (const id of committed) await this.removeSnapshot(id);
        for (const t of tmps) await rm(t, { force: true });
        throw err;
      }
    });
  }

  /**
   * Runs `copy` with every filesystem in `mountPoints` frozen, and returns the time of the cut. The
   * mount points are on disk before the first freeze, so a crash while they are frozen is undone by
   * the next start; each is thawed whatever happens here.
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
    const frozen: string[] = [];
    let late: string | undefined;
    try {
      for (const mp of mountPoints) {
        try {
          await freezeFilesystem(mp);
        } catch (err) {
          // A freeze that timed out may still be waiting in the kernel (a disk slow to take the sync) and take hold later.
          if (err instanceof CommandError && err.timedOut) late = mp;
          throw unavailable(`the filesystem at ${mp} could not be frozen for the group snapshot: ${errorMessage(err)}`);
        }
        frozen.push(mp);
      }
      const at = Date.now();
      await copy();
      return at;
    } finally {
      for (const mp of frozen.reverse()) {
        await thawFilesystem(mp).catch((err: unknown) => log.error('a filesystem frozen for a group snapshot could not be thawed; thaw it by hand (fsfreeze --unfreeze)', { mountPoint: mp, err: String(err) }));
      }
      if (late) void this.thawWhenFrozen(late, mark);
      else await rm(mark, { force: true });
    }
  }

  /**
   * After a freeze that timed out: thaws the filesystem should the freeze take hold later, trying for
   * LATE_THAW_MS; the freeze mark stays meanwhile, so a restart thaws it too.
   */
  private async thawWhenFrozen(mountPoint: string, mark: string): Promise<void> {
    const until = Date.now() + LATE_THAW_MS;
    while (Date.now() < until) {
      await new Promise((r) => setTimeout(r, 5_000).unref());
      if (await thawFilesystem(mountPoint).catch(() => false)) {
        log.warn('a freeze that had timed out took hold later; thawed', { mountPoint });
        break;
      }
    }
    await rm(mark, { force: true });
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
      for (const mp of Array.isArray(mountPoints) ? mountPoints : []) {
        if (typeof mp !== 'string') continue;
        const thawed = await thawFilesystem(mp).catch(() => false);
        log.warn('a group snapshot was cut short while its filesystems were frozen; thawed', { mountPoint: mp, wasFrozen: thawed });
      }
      await rm(path.join(this.pool.tmpDir, f), { force: true });
    }
    for (const s of await this.pool.snapshots.sorted()) {
      if (s.groupId && !(await this.pool.groups.get(s.groupId))) {
        log.warn('removing a group member whose group snapshot was never committed', { snapshot: s.id, group: s.groupId });
        await this.removeSnapshot(s.id);
      }
    }
  }
}
