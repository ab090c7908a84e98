import { constants, statfsSync, statSync } from 'node:fs';
import { access, mkdir, open, readdir, realpath, rename, rm, stat, statfs, truncate } from 'node:fs/promises';
import path from 'node:path';
import { errno, exhausted, invalid, notFound } from '../../errors.js';
import { deviceUsers } from '../../host/in-use.js';
import { loopsBackedBy } from '../../host/loop.js';
import { readMounts } from '../../host/mounts.js';
import type { Condition, CreateSnapshotSpec, CreateVolumeSpec, PoolBackend, PoolCapacity, PoolDescription, PoolTuning, ReadableData, GroupSnapshotRecord, SnapshotRecord, VolumeRecord } from '../backend.js';
import { syncDir, syncFile, unlinkIfPresent, writeTempSynced } from './atomic.js';
import { Mutex } from 'async-mutex';
import { formatBytesPair, MiB } from '../../units.js';
import { RecordIndex } from './record-index.js';
import { ImageAllocation } from './image-allocation.js';
import { newImage, sweepImagesWithoutRecords } from './leftovers.js';
import { FileSnapshotBlocks } from './snapshot-blocks.js';
import { FileGroupSnapshots } from './group-snapshots.js';
import { ImageCopies } from './image-copies.js';
import { IO_LIMIT_PARAMETERS } from '../mutable-parameters.js';

/** Within this share of the pool's size from full, a create measures the allocation first. */
const NEAR_FULL = 0.1;

/**
 * The embedded pool: one sparse file per volume in `<pool>/volumes`, one copy per snapshot in
 * `<pool>/snapshots`, each beside a JSON metadata file. The metadata file is the commit point: a
 * volume exists exactly when its `<id>.json` does, so a crash mid-create leaves at most an image
 * with no metadata, which the next create of that name overwrites and startup sweeps away.
 */
export class FilePool implements PoolBackend {
  readonly kind = 'file';
  readonly expansion = 'node' as const;
  readonly granularity = MiB;
  readonly volumeParameters = {};
  readonly snapshotParameters = {};
  readonly mutableParameters = IO_LIMIT_PARAMETERS;
  private readonly volumesDir: string;
  private readonly snapshotsDir: string;
  private readonly tmpDir: string;
  /** Bytes promised to creates that are still copying, so two of them cannot both take the last space. */
  private pendingBytes = 0;
  private readonly spaceCheck = new Mutex();
  private readonly volumes: RecordIndex<VolumeRecord>;
  /** What the images have allocated, measured at most every few seconds (see capacity()). */
  private readonly allocated: ImageAllocation;
  private readonly snapshots: RecordIndex<SnapshotRecord>;

  private constructor(
    readonly root: string,
    private reserveBytes: number,
  ) {
    this.volumesDir = path.join(root, 'volumes');
    this.snapshotsDir = path.join(root, 'snapshots');
    this.tmpDir = path.join(root, '.tmp');
    this.volumes = new RecordIndex(this.volumesDir, 'vol');
    this.allocated = new ImageAllocation((id) => this.volumeImage(id), root);
    this.snapshots = new RecordIndex(this.snapshotsDir, 'snap');
    this.copies = new ImageCopies(root, this.tmpDir);
    this.groupsDir = path.join(root, 'groups');
    this.groups = new RecordIndex(this.groupsDir, 'group');
    const pool = this;
    this.groupSnapshots = new FileGroupSnapshots({
      tmpDir: this.tmpDir,
      snapshotsDir: this.snapshotsDir,
      groupsDir: this.groupsDir,
      volumeImage: (id) => this.volumeImage(id),
      snapshotImage: (id) => this.snapshotImage(id),
      getVolume: (id) => this.getVolume(id),
      snapshots: this.snapshots,
      groups: this.groups,
      copies: this.copies,
      withSpace: (bytes, fn) => pool.withSpace(bytes, fn),
    });
  }

  private readonly copies: ImageCopies;
  readonly snapshotBlocks = new FileSnapshotBlocks(
    (id) => this.snapshotImage(id),
    () => this.copies.canReflink(),
  );
  private readonly groupsDir: string;
  private readonly groups: RecordIndex<GroupSnapshotRecord>;
  readonly groupSnapshots: FileGroupSnapshots;

  /**
   * Creates the pool layout if needed; paths are resolved so they match what the kernel reports for
   * loop devices. Only a process that creates volumes sweeps crash leftovers: a node-only process
   * beside a controller on the same directory must not remove a create in progress.
   */
  static async open(dir: string, reserveBytes: number, opts: { sweep: boolean }): Promise<FilePool> {
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const pool = new FilePool(await realpath(dir), reserveBytes);
    for (const d of [pool.volumesDir, pool.snapshotsDir, pool.groupsDir, pool.tmpDir]) await mkdir(d, { recursive: true, mode: 0o700 });
    if (opts.sweep) await pool.sweep();
    return pool;
  }

  /** Settings that may change while serving (a VolumePool edited). */
  applySettings(t: PoolTuning): void {
    this.reserveBytes = t.reserveBytes;
  }

  volumeImage(id: string): string {
    return path.join(this.volumesDir, `${id}.img`);
  }

  private snapshotImage(id: string): string {
    return path.join(this.snapshotsDir, `${id}.img`);
  }

  async probe(): Promise<void> {
    await access(this.volumesDir, constants.W_OK | constants.R_OK | constants.X_OK);
    await access(this.tmpDir, constants.W_OK);
  }

  /**
   * Sparse volumes may still grow to their full size: what they may yet take counts as used, so the
   * pool never overcommits. What each image has allocated is re-measured (a stat per image) at most
   * every few seconds (image-allocation.ts), so that a call costs the same at a thousand volumes as at none. Between
   * measurements a write to a volume lowers the free space the estimate starts from without raising
   * the allocation it subtracts: the figure errs low, never high. Only space given back (a discard,
   * a deleted file outside the pool) goes unseen until the next measurement, and a create that comes
   * near the edge measures first (withSpace).
   */
  async capacity(opts: { measure?: boolean } = {}): Promise<PoolCapacity> {
    const vols = await this.volumes.all();
    await this.allocated.refresh(vols.keys(), { now: opts.measure === true });
    // statfs reads the superblock's counters in memory: no disk I/O, cheaper than a thread-pool round trip.
    const fs = statfsSync(this.root);
    const promised = this.pendingBytes + this.allocated.unallocated(vols, this.volumes.version);
    return { totalBytes: fs.blocks * fs.bsize, availableBytes: Math.max(0, fs.bavail * fs.bsize - this.reserveBytes - promised) };
  }

  async describe(): Promise<PoolDescription> {
    const fs = await statfs(this.root);
    const real = await realpath(this.root);
    // The filesystem the directory is on: the mount with the longest mount point above it.
    const under = (await readMounts()).filter((m) => real === m.mountPoint || real.startsWith(m.mountPoint === '/' ? '/' : `${m.mountPoint}/`));
    const m = under.sort((a, b) => a.mountPoint.length - b.mountPoint.length).pop();
    return {
      location: this.root,
      devices: [{ name: m ? `${m.source} (${m.mountPoint})` : real, fsType: m?.fsType, sizeBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize }],
      reserveBytes: this.reserveBytes,
    };
  }

  async allocation(volumes: readonly VolumeRecord[]): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    for (const v of volumes) {
      const st = await stat(this.volumeImage(v.id)).catch((err: unknown) => {
        if (errno(err) === 'ENOENT') return null;
        throw err;
      });
      if (st) out.set(v.id, st.blocks * 512);
    }
    return out;
  }

  async getVolume(id: string): Promise<VolumeRecord | null> {
    return this.volumes.get(id);
  }

  async listVolumes(): Promise<VolumeRecord[]> {
    return this.volumes.sorted();
  }

  async createVolume(spec: CreateVolumeSpec): Promise<VolumeRecord> {
    const imagePath = this.volumeImage(spec.id);
    // A copy or a transfer takes a while and is written at a temporary name; a new empty image is
    // made in place (one rename fewer): until its record is renamed in, no volume exists, and the
    // startup sweep (or the next create of the name) removes an image a crash left without a record.
    const tmp = spec.fill || spec.source ? path.join(this.tmpDir, `${spec.id}.img`) : null;
    const record: VolumeRecord = {
      id: spec.id,
      name: spec.name,
      capacityBytes: spec.capacityBytes,
      createdAt: Date.now(),
      ...(spec.source ? { source: spec.source } : {}),
      parameters: spec.parameters,
    };
    const mode = spec.source?.kind === 'volume' && !spec.fill ? await this.copies.mode(this.volumeImage(spec.source.id), spec.source.id, 'a clone of it') : 'plain';
    // Metadata is committed inside the space reservation, so no other create counts space twice.
    await this.withSpace(spec.capacityBytes, async () => {
      let metaTmp: string | undefined;
      let madeImage = false;
      let committed = false;
      try {
        // A copy or a transfer is written and synced under .tmp/ meanwhile; a new empty image is made
        // at the commit, right before its record (an image without its record exists only that long).
        const image = async () => {
          if (!tmp) return;
          if (spec.fill) {
            // From another node: an empty sparse image, written by the transfer, synced, then committed like any other.
            const fh = await open(tmp, 'w', 0o600);
            await fh.truncate(spec.capacityBytes).finally(() => fh.close());
            await spec.fill({ path: tmp, file: true });
            await syncFile(tmp);
          } else if (spec.source) {
            const from = spec.source.kind === 'snapshot' ? this.snapshotImage(spec.source.id) : this.volumeImage(spec.source.id);
            await this.copies.copy(from, tmp, spec.source, mode);
            await truncate(tmp, spec.capacityBytes);
            await syncFile(tmp);
          }
        };
        const meta = async () => {
          metaTmp = await writeTempSynced(`${spec.id}.json`, JSON.stringify(record), this.tmpDir);
        };
        // Both settle before either failure is thrown: the cleanup below must know every file they made.
        const made = await Promise.allSettled([image(), meta()]);
        for (const m of made) if (m.status === 'rejected') throw m.reason;
        // The commit point: the image moved in or made, then the record renamed in.
        await this.volumes.put(record, metaTmp!, async () => {
          if (tmp) await rename(tmp, imagePath);
          else await newImage(imagePath, spec.capacityBytes, () => this.volumes.forget());
          madeImage = true;
        });
        committed = true;
        this.allocated.touched(spec.id, tmp ? statSync(imagePath).blocks * 512 : 0); // a new sparse image has nothing allocated
        await syncDir(this.volumesDir);
      } catch (err) {
        // Once committed, the volume exists: a retry finds it whole. Before, only what this call made
        // is removed: an image found in place (refused by newImage) is not this call's.
        if (!committed) await Promise.all([tmp, madeImage ? imagePath : undefined, metaTmp].map((f) => (f ? rm(f, { force: true }) : undefined)));
        throw err;
      }
    });
    return record;
  }

  async deleteVolume(id: string): Promise<void> {
    // Uncommit first: from here on the volume does not exist, whatever happens to the image.
    await this.volumes.remove(id, async () => {
      await syncDir(this.volumesDir);
      await unlinkIfPresent(this.volumeImage(id));
    });
    this.allocated.touched(id, null);
  }

  async expandVolume(id: string, capacityBytes: number): Promise<VolumeRecord> {
    const rec = await this.getVolume(id);
    if (!rec) throw notFound(`volume ${id} does not exist`);
    if (capacityBytes <= rec.capacityBytes) return rec;
    await this.withSpace(capacityBytes - rec.capacityBytes, () => truncate(this.volumeImage(id), capacityBytes));
    const grown = { ...rec, capacityBytes };
    await this.volumes.put(grown, await writeTempSynced(`${id}.json`, JSON.stringify(grown), this.tmpDir));
    await syncDir(this.volumesDir);
    return grown;
  }

  async setParameters(id: string, parameters: Record<string, string>): Promise<VolumeRecord> {
    const rec = await this.getVolume(id);
    if (!rec) throw notFound(`volume ${id} does not exist`);
    const changed = { ...rec, parameters };
    await this.volumes.put(changed, await writeTempSynced(`${id}.json`, JSON.stringify(changed), this.tmpDir));
    await syncDir(this.volumesDir);
    return changed;
  }

  /** A stat per image, made in a row: cheaper than a thread-pool round trip each, for a page of a hundred. */
  async volumeConditions(volumes: readonly VolumeRecord[]): Promise<Condition[]> {
    return volumes.map((v) => {
      let size: number;
      try {
        size = statSync(this.volumeImage(v.id)).size;
      } catch (err) {
        if (errno(err) === 'ENOENT') return { abnormal: true, message: `backing file ${this.volumeImage(v.id)} is missing` };
        throw err;
      }
      if (size !== v.capacityBytes) return { abnormal: true, message: `backing file is ${size} bytes, the volume should be ${v.capacityBytes}` };
      return { abnormal: false, message: 'volume is healthy' };
    });
  }

  /** Attached on this node, by whatever path: a loop device reads the image's inode. */
  async volumeBusy(id: string): Promise<string | null> {
    const loops = await loopsBackedBy(this.volumeImage(id));
    if (!loops.length) return null;
    // Where it is used, for whoever has to find it (a pod, another mount namespace); attached is reason enough.
    const users = await deviceUsers(loops.map((l) => l.device));
    return `volume ${id} is still attached as ${loops.map((l) => l.device).join(', ')}${users.length ? ` (${users.join('; ')})` : ''}; unstage it first`;
  }

  async getSnapshot(id: string): Promise<SnapshotRecord | null> {
    const s = await this.snapshots.get(id);
    return s && (await this.groupSnapshots.listed(s)) ? s : null;
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    // One look at the groups for the whole list (ListSnapshots pages through every snapshot).
    const groups = await this.groups.all();
    return (await this.snapshots.sorted()).filter((s) => !s.groupId || groups.has(s.groupId));
  }

  async createSnapshot(spec: CreateSnapshotSpec): Promise<SnapshotRecord> {
    const source = await this.getVolume(spec.sourceVolumeId);
    if (!source) throw notFound(`source volume ${spec.sourceVolumeId} does not exist`);
    const tmp = path.join(this.tmpDir, `${spec.id}.img`);
    const image = this.snapshotImage(spec.id);
    const from = this.volumeImage(source.id);
    const allocated = ((await stat(from)).blocks ?? 0) * 512;
    const record: SnapshotRecord = {
      id: spec.id,
      name: spec.name,
      sourceVolumeId: source.id,
      sizeBytes: source.capacityBytes,
      createdAt: Date.now(),
      readyToUse: true,
    };
    await this.withSpace(allocated, async () => {
      try {
        await this.copies.copy(from, tmp, { kind: 'volume', id: source.id }, 'plain');
        await syncFile(tmp);
        const meta = await writeTempSynced(`${spec.id}.json`, JSON.stringify(record), this.tmpDir);
        await this.snapshots.put(record, meta, () => rename(tmp, image));
        await syncDir(this.snapshotsDir);
      } catch (err) {
        await rm(tmp, { force: true });
        await rm(image, { force: true });
        throw err;
      }
    });
    return record;
  }

  async deleteSnapshot(id: string): Promise<void> {
    // The spec: a member of a group is deleted with its group, never alone (whoever asks: the CO, the orphan reaper).
    const s = await this.snapshots.get(id);
    if (s?.groupId && (await this.groups.get(s.groupId))) {
      throw invalid(`snapshot ${id} is a member of group snapshot ${s.groupId} and cannot be deleted alone: delete the group (DeleteVolumeGroupSnapshot)`);
    }
    await this.snapshots.remove(id, async () => {
      await syncDir(this.snapshotsDir);
      await rm(this.snapshotImage(id), { force: true });
    });
  }

  /**
   * A snapshot's image is read as it is (nothing writes it). A volume's, as of now, held by the
   * caller's lock of it (NodeStageVolume takes the same lock, so nothing attaches it meanwhile):
   * a volume no loop device backs cannot be written, and is read in place, no copy; an attached one
   * may be written while it is read, and is read from a reflink made now (copyOfVolume), removed at
   * release (or swept at the next start after a crash); refused where the pool cannot reflink.
   */
  async openData(kind: 'volume' | 'snapshot', id: string): Promise<ReadableData | null> {
    if (kind === 'snapshot') {
      const snap = await this.getSnapshot(id);
      return snap ? { path: this.snapshotImage(id), size: snap.sizeBytes, file: true, release: async () => undefined } : null;
    }
    const vol = await this.getVolume(id);
    if (!vol) return null;
    if ((await this.copies.mode(this.volumeImage(id), id, 'sending it to another node')) === 'plain') return { path: this.volumeImage(id), size: vol.capacityBytes, file: true, release: async () => undefined };
    const copy = path.join(this.tmpDir, `${id}.send-${process.pid}-${Date.now()}.img`);
    try {
      await this.copies.copy(this.volumeImage(id), copy, { kind: 'volume', id }, 'reflink');
    } catch (err) {
      await rm(copy, { force: true });
      throw err;
    }
    return { path: copy, size: vol.capacityBytes, file: true, release: () => rm(copy, { force: true }) };
  }

  private async withSpace<T>(bytes: number, fn: () => Promise<T>): Promise<T> {
    await this.spaceCheck.runExclusive(async () => {
      let { availableBytes, totalBytes } = await this.capacity();
      // Near the edge the estimate may be stale either way: measure before saying yes or no.
      if (bytes > availableBytes - totalBytes * NEAR_FULL) ({ availableBytes } = await this.capacity({ measure: true }));
      if (bytes > availableBytes) {
        const [free, asked] = formatBytesPair(availableBytes, bytes);
        throw exhausted(`pool ${this.root} has ${free} free (after the reserve), ${asked} asked: delete volumes or snapshots, lower --reserve, or give the pool a larger disk`);
      }
      this.pendingBytes += bytes;
    });
    try {
      return await fn();
    } finally {
      this.pendingBytes -= bytes;
    }
  }

  /** Removes what a crash left half-made: temporaries, and images whose metadata was never committed. */
  private async sweep(): Promise<void> {
    // First: a crash while a group snapshot held filesystems frozen is undone before .tmp (its mark) is cleared.
    await this.groupSnapshots.sweep();
    for (const f of await readdir(this.tmpDir)) await rm(path.join(this.tmpDir, f), { force: true });
    await sweepImagesWithoutRecords(this.volumesDir, 'vol');
    await sweepImagesWithoutRecords(this.snapshotsDir, 'snap');
  }
}
