import { busy, exhausted, internal, invalid, notFound, precondition, unsupported } from '../../errors.js';
import { LibvirtSnapshotBlocks } from './snapshot-blocks.js';
import { log } from '../../log.js';
import { pageAfter, type Page } from '../../paging.js';
import { formatBytes, formatBytesPair, MiB, roundUp } from '../../units.js';
import type { Condition, CreateSnapshotSpec, CreateVolumeSpec, ParameterCheck, PoolBackend, PoolCapacity, PoolDescription, SnapshotRecord, VolumeRecord } from '../backend.js';
import type { Domains, RbdSource } from './domains.js';
import { VolumeDisks, type AttachedDisk } from './volume-disks.js';
import { FORMATS, idHash, markerName, parseName, snapshotName, volumeName, WIPE_ALGORITHMS, type Format, type SnapshotName, type VolumeName } from './names.js';
import { copyRunningDisk } from './backup-job.js';
import { LibvirtGroupSnapshots, YOUNG_MARKER_MS } from './group-snapshots.js';
import { detached } from '../../call-context.js';
import { isId } from '../../ids.js';
import { PoolListing, type Entry, type PoolVolume, type VolumeSizeAndPath } from './listing.js';
import { rbdSource } from './rbd.js';
import { CloneChains, rbdRecopyRefusal } from './clone-chains.js';
import type { Libvirt } from './libvirt-api.js';
import { attr, child, LibvirtMissingError, parseXml, text } from './virsh.js';
import { FILE_POOLS, LibvirtStore, type VolumeStore } from './volume-store.js';
import { cephFailure, CephStore } from './ceph-store.js';
import { Librbd, type CephIdentity, type CephImages } from './librbd.js';
import { probePool } from '../probe-once.js';
import { IO_BURST_PARAMETERS, IO_LIMIT_PARAMETERS, hasIoLimits, ioLimitsOf } from '../mutable-parameters.js';
import { checkBursts } from './io-tune.js';
import { LibvirtVolumeLimits, limitParameters } from './volume-limits.js';

export interface LibvirtPoolOptions {
  pool: string;
  reserveBytes: number;
  /** An rbd pool's controller with a Ceph identity of its own: images are made, cloned, flattened and sized by librbd (librbd.ts). */
  ceph?: CephIdentity;
}

/** How often the controller sweeps again what interrupted copies left (only markers past YOUNG_MARKER_MS go). */
const SWEEP_EVERY_MS = 10 * 60_000;
// Pool types libvirt can resize.
const RESIZABLE_POOLS = new Set([...FILE_POOLS, 'rbd']);
/**
 * A libvirt storage pool as the driver's pool: volumes are libvirt volumes named by the convention
 * in names.ts, created, copied, resized and deleted by libvirt itself (vol-create-as,
 * vol-create-from, vol-resize, vol-delete), so any pool type libvirt manages can serve, on any host
 * libvirt reaches. The pool listing is the only record; nothing is kept here between calls.
 */
export class LibvirtPool implements PoolBackend {
  readonly kind = 'libvirt';
  readonly snapshotBlocks = new LibvirtSnapshotBlocks();
  readonly expansion = 'controller' as const;
  readonly volumeParameters: Record<string, ParameterCheck>;
  readonly snapshotParameters: Record<string, ParameterCheck> = {};
  readonly groupSnapshots: LibvirtGroupSnapshots;
  /** QEMU throttles a disk with bursts too (libvirt's <iotune>). */
  readonly mutableParameters = { ...IO_LIMIT_PARAMETERS, ...IO_BURST_PARAMETERS };
  readonly limits: LibvirtVolumeLimits;
  /** rbd pools: every copy is a Ceph clone, and an image with clones is retired rather than removed. */
  readonly clones?: CloneChains;

  private constructor(
    readonly libvirt: Libvirt,
    readonly domains: Domains,
    private readonly opts: LibvirtPoolOptions,
    /** libvirt's pool type: dir, logical, rbd, ... */
    readonly poolType: string,
    readonly granularity: number,
    /** Where the pool keeps its volumes: a directory, /dev/<vg>, or for rbd the Ceph pool. */
    private readonly targetPath: string,
    /** For rbd pools: how the images are reached (a network disk). */
    readonly rbd?: RbdSource,
    /** With a Ceph identity: the held connection to the pool's Ceph pool. */
    ceph?: CephImages,
  ) {
    const fileBacked = FILE_POOLS.has(poolType);
    this.store = ceph ? new CephStore(ceph) : new LibvirtStore(libvirt, opts.pool, poolType, targetPath);
    // The local daemon's file pool: the files are on this host, and their facts can be held while they are unchanged.
    this.listing = new PoolListing(this.store, fileBacked && libvirt.transport === 'rpc' ? targetPath : undefined);
    this.disks = new VolumeDisks(domains, opts.pool, (name) => this.pathOf(name));
    this.limits = new LibvirtVolumeLimits({ createRecord: (name) => this.createMarker(name), deleteNamed: (name) => this.deleteNamed(name), domains, disks: this.disks });
    const listing = this.listing;
    this.groupSnapshots = new LibvirtGroupSnapshots({
      poolType,
      fileBacked,
      virsh: libvirt.virsh,
      entries: () => listing.entries(),
      complete: (e) => listing.complete(e),
      groups: (e) => listing.groups(e),
      snapshotRecord: (v, f, e) => listing.snapshotRecord(v, f, e),
      sizeAndPath: (name) => this.sizeAndPath(name),
      writersForCopy: (v) => this.disks.writersForCopy(v),
      markerStart: (e, id) => listing.markerStart(e, id),
      requireSpace: (bytes, what) => this.requireSpace(bytes, what),
      createMarker: (name) => this.createMarker(name),
      createTarget: (name, capacity, format) => this.store.create(name, capacity, { preallocated: false, format }),
      copyVolume: async (name, capacity, format, source, timeoutMs) => {
        await this.copyFrom(name, capacity, format, source, timeoutMs, await this.copyHow(source));
      },
      deleteNamed: (name) => this.deleteNamed(name),
      clearUnfinished: (id, e) => this.clearUnfinished(id, e),
      refuseRetired: (ids, e) => this.refuseRetired(ids, e),
    });
    if (poolType === 'rbd') {
      const store = this.store;
      this.clones = new CloneChains({
        entries: () => listing.entries(),
        deleteImage: (name, wipe) => this.deleteNamed(name, wipe),
        createTombstone: (name) => this.createMarker(name),
        attached: async (e) => e.parsed.kind === 'vol' && (await this.disks.attached({ name: e.name, parsed: e.parsed })).length > 0,
        ceph:
          store instanceof CephStore
            ? {
                parent: async (name) => (await store.rbd.info(name).catch(cephFailure))?.parent?.image ?? null,
                children: (name) => store.rbd.children(name).catch(cephFailure),
                flatten: (name) => store.flatten(name),
                // Half of what is left after the reserve at most: a flatten that filled the pool would mark OSDs full, and stop every client's writes.
                hasRoom: async (bytes) => bytes <= Math.max(0, (await store.space()).available - opts.reserveBytes) / 2,
                size: async (name) => (await store.rbd.info(name).catch(cephFailure))?.size ?? 0,
              }
            : undefined,
      });
    }
    this.volumeParameters = {
      format: (v) => (!(FORMATS as readonly string[]).includes(v) ? 'raw or qcow2' : v === 'qcow2' && !fileBacked ? `a ${poolType} pool holds raw volumes only` : null),
      preallocate: (v) => (v === 'true' || v === 'false' ? null : 'true or false'),
      // libvirt wipes rbd images with zero or trim only (storage_backend_rbd.c).
      wipe: (v) => (!(WIPE_ALGORITHMS as readonly string[]).includes(v) ? `one of ${WIPE_ALGORITHMS.join(', ')}` : poolType === 'rbd' && v === 'random' ? 'zero or trim in an rbd pool (libvirt wipes rbd images with those only)' : null),
    };
  }

  /** Whether volumes are files (qcow2 possible, running disks copied by a backup job into a file). */
  get fileBacked(): boolean {
    return FILE_POOLS.has(this.poolType);
  }

  get poolName(): string {
    return this.opts.pool;
  }

  /**
   * Opens the pool. `sweep`: this process creates volumes (the controller), so what interrupted
   * copies left (a marker and its partial volume: never listed, and removed otherwise only by a retry
   * of the same name, which a deleted claim never makes) is removed (sweep()).
   */
  static async open(libvirt: Libvirt, domains: Domains, opts: LibvirtPoolOptions, how: { sweep: boolean } = { sweep: true }): Promise<LibvirtPool> {
    const xml = await libvirt.poolXml(opts.pool);
    if (xml === null) throw new Error(`libvirt pool ${opts.pool} does not exist at ${libvirt.uri}; define it with virsh pool-define-as (see docs/libvirt.md)`);
    const doc = child(parseXml(xml), 'pool');
    const type = attr(doc, 'type') ?? 'unknown';
    // LVM allocates whole extents (4 MiB by default); everything else is byte-addressed, MiB keeps sizes tidy.
    const rbd = type === 'rbd' ? rbdSource(doc) : undefined;
    const target = rbd ? rbd.cephPool : (text(child(doc, 'target'), 'path') ?? '');
    if (opts.ceph && !rbd) throw new Error(`a Ceph identity (--ceph-conf) serves rbd pools only; libvirt pool ${opts.pool} is of type ${type}`);
    const ceph = opts.ceph && rbd ? await Librbd.connect(opts.ceph, rbd.cephPool).catch(cephFailure) : undefined;
    const pool = new LibvirtPool(libvirt, domains, opts, type, type === 'logical' ? 4 * MiB : MiB, target, rbd, ceph);
    await pool.probe();
    // No pool-refresh here, though libvirtd lists an rbd pool as it last read it from Ceph: a refresh
    // that fails (Ceph down at that moment) makes libvirt stop the pool (docs/libvirt.md, Ceph).
    if (how.sweep) {
      await pool.sweep({ atStart: true });
      // Again now and then, dated markers only: a crash's young markers are left at start, and must go once old even if no retry comes.
      setInterval(() => void pool.sweep({ atStart: false }).catch((err: unknown) => log.warn('sweep of interrupted copies failed', { err: String(err) })), SWEEP_EVERY_MS).unref();
    }
    return pool;
  }

  /**
   * Removes each interrupted copy's partial volume, then its marker. A copy still under way (another
   * controller replica's, during a rollout) is not touched: libvirt refuses to delete a volume it is
   * still building, and the marker stays with it, so the ID still reads as absent.
   */
  private async sweep(how: { atStart: boolean }): Promise<void> {
    // In the background: a collected image may be wiped first, which takes as long as its size.
    void this.clones?.collect().catch((err: unknown) => log.warn('collecting retired images failed', { err: String(err) }));
    // At start only: then no copy of this process is between its snapshot and its clone.
    if (how.atStart && this.store instanceof CephStore) void this.store.dropOrphanSnapshots().catch((err: unknown) => log.warn('looking for snapshots whose clones are gone failed', { err: String(err) }));
    const entries = await this.listing.entries();
    for (const id of new Set(entries.filter((e) => e.parsed.kind === 'marker').map((e) => e.parsed.id))) {
      const started = this.listing.markerStart(entries, id);
      // An undated marker (a copy libvirt makes) is swept at start only: later it may be this process's own copy under way.
      if (started === undefined && !how.atStart) continue;
      const age = started === undefined ? Infinity : Date.now() - started;
      if (age < YOUNG_MARKER_MS) {
        // A backup job writes its targets through QEMU, and libvirt would let us delete them: a young one may be another process's, under way.
        log.info('leaving a young marker (another controller process may be copying a running disk under it)', { id, ageSeconds: Math.round(age / 1000) });
        continue;
      }
      try {
        // Read again just before: the listing above may be older than a copy that has since finished (its marker gone).
        const fresh = await this.listing.entries();
        if (!fresh.some((e) => e.parsed.kind === 'marker' && e.parsed.id === id)) continue;
        await this.clearUnfinished(id, fresh);
      } catch (err) {
        log.warn('cannot remove what an interrupted copy left (still being written?)', { id, err: String(err) });
      }
    }
    await this.limits.sweep(await this.listing.entries());
  }

  /** The pool can serve: libvirt's pool runs, or with a Ceph identity Ceph answers the controller's user. */
  async probe(): Promise<void> {
    if (this.store instanceof CephStore) {
      await this.store.names();
      return;
    }
    const info = await this.libvirt.poolInfo(this.opts.pool);
    if (!info.running) throw new Error(`libvirt pool ${this.opts.pool} is ${info.state}, not running (virsh pool-start ${this.opts.pool})`);
  }

  /** Without a Ceph identity an rbd pool's room is libvirt's figure: the cluster's raw free space. */
  async capacity(): Promise<PoolCapacity> {
    const room = await this.store.space();
    return { totalBytes: room.capacity, availableBytes: Math.max(0, room.available - this.opts.reserveBytes) };
  }

  async describe(): Promise<PoolDescription> {
    const room = await this.store.space();
    const where = this.store instanceof CephStore ? `, Ceph pool ${this.rbd?.cephPool ?? '?'} through the controller's Ceph identity` : '';
    return {
      location: `libvirt pool ${this.opts.pool} (${this.poolType}${where})`,
      devices: [{ name: this.opts.pool, sizeBytes: room.capacity, freeBytes: room.available }],
      reserveBytes: this.opts.reserveBytes,
    };
  }

  /** What libvirt (or Ceph) says each volume has allocated; one pass over the pool, as ListVolumes reads it. */
  async allocation(volumes: readonly VolumeRecord[]): Promise<Map<string, number>> {
    const wanted = new Set(volumes.map((v) => v.id));
    const all = await this.all('vol', (v, f, e) => ({ id: this.listing.volumeRecord(v, f, e).id, allocation: f.allocation }));
    return new Map(all.filter((a) => wanted.has(a.id)).map((a) => [a.id, a.allocation]));
  }

  /** Canonical form of the parameters for comparison: defaults are the same as leaving the key out. */
  canonicalParameters(p: Record<string, string>): Record<string, string> {
    const out = { ...p };
    if (out.format === 'raw') delete out.format;
    if (out.preallocate === 'false') delete out.preallocate;
    return out;
  }

  /** Where a volume of this pool is, as a domain's disk source names it (no libvirt call: libvirt's own rule). */
  pathOf(name: string): string {
    return `${this.targetPath}/${name}`;
  }


  private readonly listing: PoolListing;
  /** Where volumes are made: libvirt, or librbd. */
  readonly store: VolumeStore;
  /** Which domain disks are which of this pool's volumes. */
  readonly disks: VolumeDisks;

  sizeAndPath(name: string): Promise<VolumeSizeAndPath | null> {
    return this.listing.sizeAndPath(name);
  }

  /** A complete volume of ours by ID (a volume's or a snapshot's). */
  find<K extends 'vol' | 'snap'>(kind: K, id: string, entries?: Entry[]): Promise<PoolVolume<K extends 'vol' ? VolumeName : SnapshotName> | null> {
    return this.listing.find(kind, id, entries);
  }

  /** A complete volume and the I/O limits recorded for it, from one listing (what an attach needs). */
  async findWithLimits(id: string): Promise<{ v: PoolVolume<VolumeName>; limits: Record<string, string> } | null> {
    const entries = await this.listing.entries();
    const v = await this.find('vol', id, entries);
    return v ? { v, limits: limitParameters(entries, id) } : null;
  }

  /** One volume or snapshot by ID: one listing (kept for the act that follows) and its XML. */
  private async lookup<K extends 'vol' | 'snap', R>(kind: K, id: string, make: (v: PoolVolume<K extends 'vol' ? VolumeName : SnapshotName>, f: VolumeSizeAndPath, entries: Entry[]) => R): Promise<R | null> {
    const entries = await this.listing.entries();
    this.listing.remember(id, entries);
    const v = await this.find(kind, id, entries);
    const f = v ? await this.sizeAndPath(v.name) : null;
    return v && f ? make(v, f, entries) : null;
  }

  /** Every complete volume or snapshot, with its XML. */
  private async all<K extends 'vol' | 'snap', R>(kind: K, make: (v: PoolVolume<K extends 'vol' ? VolumeName : SnapshotName>, f: VolumeSizeAndPath, entries: Entry[]) => R): Promise<R[]> {
    const entries = await this.listing.entries();
    const items = this.listing.complete(entries).filter((e) => e.parsed.kind === kind) as PoolVolume<K extends 'vol' ? VolumeName : SnapshotName>[];
    return this.listing.withFacts(items, (v, f) => make(v, f, entries));
  }

  getVolume(id: string): Promise<VolumeRecord | null> {
    return this.lookup('vol', id, (v, f, e) => this.listing.volumeRecord(v, f, e));
  }

  listVolumes(): Promise<VolumeRecord[]> {
    return this.all('vol', (v, f, e) => this.listing.volumeRecord(v, f, e));
  }

  /**
   * IDs come from the names in one listing; only the page's volumes have their facts read. The
   * pages after the first reuse the first page's listing for up to two seconds (one listing of a
   * thousand names costs as much as a page): a page is as fresh as the listing it continues.
   */
  async listVolumePage(after: string, limit: number): Promise<Page<VolumeRecord>> {
    const now = performance.now();
    const reuse = after && this.pagedListing && now - this.pagedListing.at < 2000 ? this.pagedListing.entries : null;
    const entries = reuse ?? (await this.listing.entries());
    if (!reuse) this.pagedListing = { at: now, entries };
    const vols = this.listing.complete(entries).filter((e) => e.parsed.kind === 'vol') as PoolVolume<VolumeName>[];
    const page = pageAfter(vols, (v) => v.parsed.id, after, limit);
    return { items: await this.listing.withFacts(page.items, (v, f) => this.listing.volumeRecord(v, f, entries)), more: page.more };
  }

  getSnapshot(id: string): Promise<SnapshotRecord | null> {
    return this.lookup('snap', id, (s, f, e) => this.listing.snapshotRecord(s, f, e));
  }

  listSnapshots(): Promise<SnapshotRecord[]> {
    return this.all('snap', (s, f, e) => this.listing.snapshotRecord(s, f, e));
  }


  private async deleteNamed(name: string, wipe?: string): Promise<void> {
    try {
      if (wipe) {
        const started = Date.now();
        await this.store.wipe(name, wipe, 3_600_000);
        log.info('wiped a volume before deleting it', { volume: name, algorithm: wipe, ms: Date.now() - started });
      }
      await this.store.remove(name);
    } catch (err) {
      if (!(err instanceof LibvirtMissingError)) throw err;
    }
  }

  /**
   * Removes what an interrupted copy left under this ID (the partial volume and its marker); under a
   * group's ID, its members and record too.
   */
  private async clearUnfinished(id: string, entries: Entry[]): Promise<void> {
    const group = isId('group', id) ? idHash(id) : undefined;
    const leftovers = entries.filter((e) => e.parsed.id === id || (group && e.parsed.kind === 'snap' && e.parsed.groupHash === group));
    if (!leftovers.length) return;
    log.warn('removing what an interrupted create left', { id, volumes: leftovers.map((e) => e.name) });
    // A tombstone stays: its image goes when its clones do (clones.remove).
    for (const e of leftovers.filter((l) => l.parsed.kind !== 'marker' && l.parsed.kind !== 'retired')) await this.removeEntry(e);
    for (const e of leftovers.filter((l) => l.parsed.kind === 'marker')) await this.deleteNamed(e.name);
  }

  /**
   * Removes one of our images: in an rbd pool through its clone chain (retired while clones read
   * it), judged on a fresh listing: clones are made under their own ID's lock, not this one's, so a
   * listing kept from this ID's lookup may not have them yet.
   */
  private async removeEntry(e: Entry, wipe?: string): Promise<void> {
    if (this.clones) await this.clones.remove(e, await this.listing.entries(), wipe);
    else await this.deleteNamed(e.name, wipe);
  }

  /** A copy within the pool (in rbd, a clone), libvirt's known rbd failure said for what it is. */
  private async copyFrom(name: string, capacity: number, format: Format, source: string, timeoutMs: number, how: { flatten: boolean }): Promise<void> {
    try {
      await this.store.copy(name, capacity, format, source, timeoutMs, how);
    } catch (err) {
      // A snapshot is never written: its copies never meet libvirt's failure, whatever the message.
      throw (this.clones && this.store.kind === 'libvirt' && parseName(source)?.kind === 'vol' && rbdRecopyRefusal(err, source)) || err;
    }
  }

  /** rbd: a copy is a clone, flattened (with a Ceph identity) or refused (without) past the depth a chain may have. */
  private async copyHow(sourceName: string, entries?: Entry[]): Promise<{ flatten: boolean }> {
    if (!this.clones) return { flatten: false };
    const all = entries ?? (await this.listing.entries());
    const source = all.find((e) => e.name === sourceName);
    return source ? this.clones.copyHow(source, all) : { flatten: false };
  }

  /**
   * A name whose volume or snapshot was retired (deleted, its image still read by clones) cannot be
   * made again while the image is there: its image has the name the new one would take.
   */
  private async refuseRetired(ids: readonly string[], entries: Entry[]): Promise<Entry[]> {
    // No collection here: the retired image goes when its last clone is deleted (or at the next sweep).
    const still = this.clones ? ids.find((id) => this.clones!.isRetired(id, entries)) : undefined;
    if (still) throw precondition(`${still} was deleted, and its image is still read by Ceph clones made from it; the name can be used again once they are deleted`);
    return entries;
  }

  private async requireSpace(bytes: number, what: string): Promise<void> {
    const { availableBytes } = await this.capacity();
    if (bytes > availableBytes) {
      const [free, asked] = formatBytesPair(availableBytes, bytes);
      throw exhausted(`libvirt pool ${this.opts.pool} has ${free} free (after the reserve), ${what} needs ${asked}: delete volumes or snapshots, or grow the pool`);
    }
  }

  async createVolume(spec: CreateVolumeSpec): Promise<VolumeRecord> {
    if (spec.fill) throw unsupported(`a volume from another node's ${spec.source?.kind ?? 'source'} is not supported by the ${this.kind} pool yet`);
    const p = spec.parameters;
    const entries = await this.refuseRetired([spec.id], await this.listing.entriesFor(spec.id));
    await this.clearUnfinished(spec.id, entries);
    const size = roundUp(spec.capacityBytes, this.granularity);
    await this.requireSpace(size, `a ${size}-byte volume`);
    const preallocated = p.preallocate === 'true';
    checkBursts(p);
    let source: PoolVolume | null = null;
    if (spec.source) {
      source = spec.source.kind === 'volume' ? await this.find('vol', spec.source.id, entries) : await this.find('snap', spec.source.id, entries);
      if (!source) throw notFound(`source ${spec.source.kind} ${spec.source.id} does not exist in libvirt pool ${this.opts.pool}`);
    }
    // The StorageClass decides the format, a copy included (vol-create-from converts): retries compare like for like.
    const format: Format = (p.format as Format | undefined) ?? 'raw';
    const name = volumeName({
      id: spec.id,
      format,
      fsType: p.fsType,
      preallocated,
      wipe: p.wipe,
      source: spec.source ? { kind: spec.source.kind, hash: idHash(spec.source.id) } : undefined,
    });
    // The limits first: a volume is never seen without the limits it was made with (a crash before
    // the volume leaves a record its retry replaces, or the sweep removes). A retry without limits
    // removes what an earlier attempt recorded.
    const limited = hasIoLimits(ioLimitsOf(p));
    await this.limits.record(spec.id, p, entries);
    try {
      if (!source) {
        await this.createBlank(name, size, format, preallocated);
      } else {
        await this.copy(spec.id, source, name, size, format, preallocated);
      }
    } catch (err) {
      if (limited) await this.limits.drop(spec.id, await this.listing.entries()).catch((e: unknown) => log.error('cleanup after a failed create', { id: spec.id, err: String(e) }));
      throw err;
    }
    const f = await this.sizeAndPath(name);
    const parsed = parseName(name);
    if (!f || parsed?.kind !== 'vol') throw internal(`volume ${name} vanished right after it was created`);
    return this.listing.volumeRecord({ name, parsed }, f, await this.listing.entries());
  }

  /** The smallest volume the pool can hold (one byte in a file, one extent in a VG): it marks a copy in progress. */
  private async createMarker(marker: string): Promise<void> {
    await this.store.create(marker, 1, { preallocated: false, format: 'raw' });
  }

  private async createBlank(name: string, size: number, format: Format, preallocated: boolean): Promise<void> {
    try {
      await this.store.create(name, size, { preallocated, format });
    } catch (err) {
      // A failed create can leave the half-made file behind (libvirt does not always clean up).
      await this.deleteNamed(name);
      throw err;
    }
  }

  /**
   * Copies a volume or snapshot into a new volume. A marker volume exists for the whole copy, so a
   * crash at any point leaves an ID that reads as absent and is cleared and redone by the retry.
   */
  private async copy(id: string, source: PoolVolume, name: string, size: number, format: Format, preallocated: boolean): Promise<void> {
    // A disk read-write in a stopped domain is refused too (writersForCopy): the domain could start during the copy.
    // In rbd a copy is a clone of a Ceph snapshot, taken at one instant whoever writes.
    const writers = source.parsed.kind === 'vol' && !this.clones ? await this.disks.writersForCopy(source) : [];
    if (writers.length) throw precondition(`volume ${source.parsed.id} is attached read-write to running domain ${writers[0]!.domain.name}; clone it from a snapshot instead (CreateSnapshot copies a running disk consistently)`);
    const how = await this.copyHow(source.name);
    const marker = markerName(id);
    await this.createMarker(marker);
    try {
      await this.copyFrom(name, size, format, source.name, 3_600_000, how);
      const f = await this.sizeAndPath(name);
      // qemu-img convert keeps the source's virtual size; a larger request is a resize afterwards.
      if (f && f.capacity < size) await this.store.resize(name, size);
    } catch (err) {
      await this.deleteNamed(name).catch((e) => log.error('cleanup after a failed copy', { name, err: String(e) }));
      await this.deleteNamed(marker).catch((e) => log.error('cleanup after a failed copy', { name: marker, err: String(e) }));
      throw err;
    }
    await this.deleteNamed(marker);
  }

  async deleteVolume(id: string): Promise<void> {
    const entries = (await this.listing.entriesFor(id)).filter((e) => e.parsed.id === id);
    for (const e of entries) if (e.parsed.kind === 'vol') await this.removeEntry(e, e.parsed.wipe);
    for (const e of entries) if (e.parsed.kind === 'marker') await this.deleteNamed(e.name);
    // After the volume: a crash in between leaves a record the next start removes, never a volume without its limits.
    await this.limits.drop(id, await this.listing.entriesFor(id));
  }

  /** Records a volume's I/O limits (the record's one create is the change); the caller holds its lock. */
  async setParameters(id: string, parameters: Record<string, string>): Promise<VolumeRecord> {
    checkBursts(parameters);
    const entries = await this.listing.entries();
    if (!(await this.find('vol', id, entries))) throw notFound(`volume ${id} does not exist in libvirt pool ${this.opts.pool}`);
    await this.limits.record(id, parameters, entries);
    const updated = await this.getVolume(id);
    if (!updated) throw notFound(`volume ${id} does not exist in libvirt pool ${this.opts.pool}`);
    return updated;
  }

  /** Throttles the volume's disk in every domain it is attached to as its record says. */
  async applyParameters(vol: VolumeRecord): Promise<void> {
    const v = await this.find('vol', vol.id);
    if (v) await this.limits.apply(v, vol.parameters);
  }

  async expandVolume(id: string, capacityBytes: number): Promise<VolumeRecord> {
    const v = await this.find('vol', id);
    const f = v ? await this.sizeAndPath(v.name) : null;
    if (!v || !f) throw notFound(`volume ${id} does not exist in libvirt pool ${this.opts.pool}`);
    const target = roundUp(capacityBytes, this.granularity);
    if (target > f.capacity) {
      if (!RESIZABLE_POOLS.has(this.poolType)) {
        throw precondition(`libvirt cannot resize volumes of a ${this.poolType} pool (${this.opts.pool}); create a larger volume from a snapshot instead`);
      }
      await this.requireSpace(target - f.capacity, `growing ${id} to ${formatBytes(target)}`);
      const running = (await this.disks.attached(v)).filter((a) => a.domain.running);
      if (running.length) {
        // A disk in use is grown by its QEMU, which also tells the guest; vol-resize would go behind QEMU's back.
        for (const a of running) await this.domains.blockResize(a.domain, a.disk.target, target);
      } else {
        await this.store.resize(v.name, target);
      }
    }
    const grown = await this.getVolume(id);
    if (!grown) throw notFound(`volume ${id} vanished while it was resized`);
    return grown;
  }

  /**
   * The record was just read from the pool, so the volume exists as described; what can still be
   * wrong is the pool itself. One pool-info serves a whole ListVolumes page (cached for a second).
   */
  async volumeConditions(volumes: readonly VolumeRecord[]): Promise<Condition[]> {
    const now = Date.now();
    if (!this.poolState || now - this.poolState.at > 1000) {
      // Shared with the Probes under way (a slow libvirtd is asked once, not once a second per listing),
      // and not ended by this listing's end: the answer is kept for the next listing.
      this.poolState = { at: now, problem: detached(() => probePool(this)).then(() => null, (err: unknown) => (err instanceof Error ? err.message : String(err))) };
    }
    const problem = await this.poolState.problem;
    return volumes.map(() => (problem ? { abnormal: true, message: problem } : { abnormal: false, message: 'volume is healthy' }));
  }

  private poolState?: { at: number; problem: Promise<string | null> };

  private pagedListing?: { at: number; entries: Entry[] };

  async volumeBusy(id: string): Promise<string | null> {
    // The listing the lookup before it made, kept again for the delete that follows under the same lock.
    const entries = await this.listing.entriesFor(id);
    this.listing.remember(id, entries);
    const v = await this.find('vol', id, entries);
    if (!v) return null;
    const disks = await this.disks.attached(v);
    return disks.length ? `volume ${id} is attached to domain ${[...new Set(disks.map((d) => d.domain.name))].join(', ')}; ControllerUnpublishVolume it first` : null;
  }


  async createSnapshot(spec: CreateSnapshotSpec): Promise<SnapshotRecord> {
    const entries = await this.refuseRetired([spec.id], await this.listing.entriesFor(spec.id));
    // Under the snapshot's lock no copy of this process is under way: a young dated marker is another process's backup job (or a crash's, cleared once old).
    const startedAt = this.listing.markerStart(entries, spec.id);
    if (startedAt !== undefined && Date.now() - startedAt < YOUNG_MARKER_MS) {
      throw busy(`snapshot ${spec.id} is being copied by another controller process since ${new Date(startedAt).toISOString()} (or one that stopped then; cleared once ${YOUNG_MARKER_MS / 60_000} minutes old): retry later`);
    }
    await this.clearUnfinished(spec.id, entries);
    const source = await this.find('vol', spec.sourceVolumeId, entries);
    const f = source ? await this.sizeAndPath(source.name) : null;
    if (!source || !f) throw notFound(`source volume ${spec.sourceVolumeId} does not exist`);
    // In rbd a snapshot is a clone: it takes space only as the volume is written after it.
    if (!this.clones) await this.requireSpace(f.allocation, `a snapshot of ${spec.sourceVolumeId}`);
    // rbd: the copy is a clone of a Ceph snapshot, one instant of the image however many write it (crash-consistent).
    const running = this.clones ? null : ((await this.disks.writersForCopy(source))[0] ?? null);
    const how = await this.copyHow(source.name, entries);
    if (running && !this.fileBacked) {
      throw precondition(`volume ${source.parsed.id} is attached read-write to running domain ${running.domain.name}; a consistent copy of a running disk needs a file-backed pool (dir, fs, netfs), this one is ${this.poolType}`);
    }
    const createdAt = Date.now();
    const name = snapshotName({ id: spec.id, sourceHash: idHash(source.parsed.id), createdAt, format: source.parsed.format });
    // A backup job's target is a file libvirt lets anyone delete: its marker is dated, so another process leaves it while young.
    const marker = running ? markerName(spec.id, createdAt) : markerName(spec.id);
    // Once begun the copy runs to its end whatever becomes of the call (a backup job outlasts csi-snapshotter's 300 s): its retries wait on the lock.
    return detached(() => this.copyForSnapshot(spec.id, source, f, name, marker, running, how));
  }

  private async copyForSnapshot(id: string, source: PoolVolume<VolumeName>, f: VolumeSizeAndPath, name: string, marker: string, running: AttachedDisk | null, how: { flatten: boolean }): Promise<SnapshotRecord> {
    await this.createMarker(marker);
    try {
      if (running) {
        await this.store.create(name, f.capacity, { preallocated: false, format: source.parsed.format });
        const target = await this.sizeAndPath(name);
        if (!target) throw internal(`snapshot volume ${name} vanished`);
        await copyRunningDisk(this.libvirt.virsh, running, target.path, source.parsed.format, name);
      } else {
        await this.copyFrom(name, f.capacity, source.parsed.format, source.name, 3_600_000, how);
      }
    } catch (err) {
      await this.deleteNamed(name).catch((e) => log.error('cleanup after a failed snapshot', { name, err: String(e) }));
      await this.deleteNamed(marker).catch((e) => log.error('cleanup after a failed snapshot', { name: marker, err: String(e) }));
      throw err;
    }
    await this.deleteNamed(marker);
    const snap = await this.getSnapshot(id);
    if (!snap) throw internal(`snapshot ${name} vanished right after it was made`);
    return snap;
  }

  async deleteSnapshot(id: string): Promise<void> {
    const entries = await this.listing.entriesFor(id);
    const member = await this.find('snap', id, entries);
    if (member?.parsed.groupHash) {
      const group = this.listing.groups(entries).find((g) => idHash(g.parsed.id) === member.parsed.groupHash);
      if (group) throw invalid(`snapshot ${id} is a member of group snapshot ${group.parsed.id} and cannot be deleted alone: delete the group (DeleteVolumeGroupSnapshot)`);
    }
    for (const e of entries.filter((x) => x.parsed.id === id && x.parsed.kind === 'snap')) await this.removeEntry(e);
    for (const e of entries.filter((x) => x.parsed.id === id && x.parsed.kind === 'marker')) await this.deleteNamed(e.name);
  }
}
