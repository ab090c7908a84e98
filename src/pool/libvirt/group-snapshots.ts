import { busy, internal, invalid, precondition, unavailable } from '../../errors.js';
import { detached } from '../../call-context.js';
import { log } from '../../log.js';
import type { GroupSnapshot, GroupSnapshots, SnapshotRecord } from '../backend.js';
import { copyRunningDisks, type DiskCopy } from './backup-job.js';
import type { DomainInfo } from './domains.js';
import type { Entry, PoolVolume, VolumeSizeAndPath } from './listing.js';
import { groupName, idHash, markerName, snapshotName, type Format, type SnapshotName, type VolumeName } from './names.js';
import type { Virsh } from './virsh.js';
import type { AttachedDisk } from './volume-disks.js';

/** What the group snapshots take of the libvirt pool. */
export interface LibvirtGroupPool {
  readonly poolType: string;
  readonly fileBacked: boolean;
  readonly virsh: Virsh;
  entries(): Promise<Entry[]>;
  complete(entries: Entry[]): PoolVolume[];
  groups(entries: Entry[]): Array<{ name: string; parsed: { kind: 'group'; id: string; members: number } }>;
  markerStart(entries: Entry[], id: string): number | undefined;
  snapshotRecord(s: PoolVolume<SnapshotName>, f: VolumeSizeAndPath, entries: Entry[]): SnapshotRecord;
  sizeAndPath(name: string): Promise<VolumeSizeAndPath | null>;
  /** The volume's read-write disks, all of one running domain (others refused: VolumeDisks.writersForCopy). */
  writersForCopy(v: PoolVolume): Promise<AttachedDisk[]>;
  requireSpace(bytes: number, what: string): Promise<void>;
  /** Creates a tiny volume under this name (a marker or a group record). */
  createMarker(name: string): Promise<void>;
  /** An empty volume to copy a running disk into. */
  createTarget(name: string, capacity: number, format: Format): Promise<void>;
  /** A copy of a volume no running domain writes, made by libvirt within timeoutMs. */
  copyVolume(name: string, capacity: number, format: Format, source: string, timeoutMs: number): Promise<void>;
  deleteNamed(name: string): Promise<void>;
  /** Removes what an unfinished create or delete left under an ID (a group's: its members, record and marker). */
  clearUnfinished(id: string, entries: Entry[]): Promise<void>;
  /** Refuses IDs whose deleted images Ceph clones still read (rbd: their names cannot be made again yet); the listing after. */
  refuseRetired(ids: readonly string[], entries: Entry[]): Promise<Entry[]>;
}

/** A cut (its backup job and its copies) gets this long, whatever becomes of the call. */
export const CUT_BOUND_MS = 60 * 60_000;
/** A group marker younger than this may be another controller process's cut under way: not swept, not cleared. */
export const YOUNG_MARKER_MS = CUT_BOUND_MS + 10 * 60_000;
/** The member count a record's name carries (n1 to n9999). */
const MAX_MEMBERS = 9999;

/**
 * Group snapshots of a libvirt pool, one point in time for all members:
 * - members no domain has read-write cannot change (the caller holds every member's lock, so no
 *   ControllerPublish attaches them meanwhile): libvirt copies them as they are. A member read-write
 *   in a domain that is not running is refused: the domain could start during the copy;
 * - members a running domain writes are copied by one backup job over all of them, which libvirt
 *   starts as one QEMU transaction: one instant for every disk of the job. So they must all be
 *   disks of ONE domain (a pod's volumes are all attached to its node's VM); members written by two
 *   running domains (a shared disk during a live migration included) are refused, as two jobs would
 *   be two instants. A pool whose volumes are not
 *   files (logical, rbd) cannot take a backup job's copy, so a written member there is refused too.
 * The record: libvirt keeps no metadata on a volume, so a group is its members' names (each carries
 * the group's hash) and a record volume `<group-id>.n<members>.group`. A marker `<group-id>.incomplete`
 * exists while the group is made or unmade: with it, neither the group nor its members are listed,
 * and the controller's next start (sweep) or a retry of the same group removes what is there, once
 * the marker is older than any cut can last (a younger one may be another controller process's cut
 * under way, whose targets libvirt would let us delete under QEMU's feet). The cut runs to its end
 * (bounded by CUT_BOUND_MS) whatever becomes of the call: the CO's retries wait on the locks.
 */
export class LibvirtGroupSnapshots implements GroupSnapshots {
  constructor(private readonly pool: LibvirtGroupPool) {}

  async get(id: string): Promise<GroupSnapshot | null> {
    const entries = await this.pool.entries();
    const record = this.pool.groups(entries).find((g) => g.parsed.id === id);
    if (!record) return null;
    const hash = idHash(id);
    const members = this.pool.complete(entries).filter((e): e is PoolVolume<SnapshotName> => e.parsed.kind === 'snap' && e.parsed.groupHash === hash);
    const snapshots: SnapshotRecord[] = [];
    for (const m of members) {
      const f = await this.pool.sizeAndPath(m.name);
      if (f) snapshots.push(this.pool.snapshotRecord(m, f, entries));
    }
    snapshots.sort((a, b) => (a.sourceVolumeId < b.sourceVolumeId ? -1 : a.sourceVolumeId > b.sourceVolumeId ? 1 : 0));
    const whole = snapshots.length === record.parsed.members;
    // Members are never deleted alone (DeleteSnapshot refuses them): a group short of one is a hand's work, and not ready.
    if (!whole) log.warn('a group snapshot has lost members', { group: id, expected: record.parsed.members, found: snapshots.length });
    return {
      group: {
        id,
        name: id,
        sourceVolumeIds: snapshots.map((s) => s.sourceVolumeId),
        snapshotIds: snapshots.map((s) => s.id),
        createdAt: Math.min(...snapshots.map((s) => s.createdAt), Date.now()),
      },
      snapshots,
    };
  }

  async create(spec: { id: string; name: string; members: ReadonlyArray<{ volumeId: string; snapshotId: string; snapshotName: string }> }): Promise<GroupSnapshot> {
    const existing = await this.get(spec.id);
    if (existing) return existing;
    if (spec.members.length > MAX_MEMBERS) throw invalid(`a group snapshot of the libvirt pool holds at most ${MAX_MEMBERS} volumes`);
    // A member of a deleted group may still be read by a restore of it (rbd): its ID cannot take a new image yet.
    let entries = await this.pool.refuseRetired(spec.members.map((m) => m.snapshotId), await this.pool.entries());
    // Under the group's lock no cut of this process is under way: a young marker is another process's (or a crash's, cleared once old).
    const startedAt = this.pool.markerStart(entries, spec.id);
    if (startedAt !== undefined && Date.now() - startedAt < YOUNG_MARKER_MS) {
      throw busy(`group snapshot ${spec.id} is being made or deleted by another controller process since ${new Date(startedAt).toISOString()} (or one that stopped then; cleared once ${YOUNG_MARKER_MS / 60_000} minutes old): retry later`);
    }
    // A create (or delete) of this group that stopped half-way left members and a marker: not of the cut about to be made.
    await this.pool.clearUnfinished(spec.id, entries);
    entries = await this.pool.entries();

    const complete = this.pool.complete(entries);
    const sources: Array<{ member: (typeof spec.members)[number]; volume: PoolVolume<VolumeName>; facts: VolumeSizeAndPath; writers: AttachedDisk[] }> = [];
    for (const m of spec.members) {
      const volume = complete.find((e): e is PoolVolume<VolumeName> => e.parsed.kind === 'vol' && e.parsed.id === m.volumeId);
      const facts = volume ? await this.pool.sizeAndPath(volume.name) : null;
      if (!volume || !facts) throw precondition(`volume ${m.volumeId} is not in this pool`);
      sources.push({ member: m, volume, facts, writers: await this.pool.writersForCopy(volume) });
    }
    const domains = new Map<string, DomainInfo>(sources.flatMap((s) => s.writers.map((w) => [w.domain.uuid, w.domain] as const)));
    if (domains.size > 1) {
      throw precondition(
        `the volumes are written by ${domains.size} running domains (${[...domains.values()].map((d) => d.name).join(', ')}): one consistent instant is one backup job in one domain; snapshot them apart, or group only volumes of one domain`,
      );
    }
    const written = sources.filter((s) => s.writers.length);
    if (written.length && !this.pool.fileBacked) {
      throw precondition(`volume ${written[0]!.member.volumeId} is attached read-write to running domain ${written[0]!.writers[0]!.domain.name}; a consistent copy of a running disk needs a file-backed pool (dir, fs, netfs), this one is ${this.pool.poolType}`);
    }
    await this.pool.requireSpace(
      sources.reduce((n, s) => n + s.facts.allocation, 0),
      `group snapshot ${spec.name} of ${sources.length} volumes`,
    );
    return detached(() => this.cut(spec, sources, [...domains.values()][0]));
  }

  /** Marker, copies, record, then the marker removed: the commit point. Runs to its end (or its bound) whatever becomes of the call. */
  private async cut(
    spec: { id: string; name: string },
    sources: ReadonlyArray<{ member: { snapshotId: string; volumeId: string }; volume: PoolVolume<VolumeName>; facts: VolumeSizeAndPath; writers: AttachedDisk[] }>,
    domain: DomainInfo | undefined,
  ): Promise<GroupSnapshot> {
    const createdAt = Date.now();
    const deadline = createdAt + CUT_BOUND_MS;
    const marker = markerName(spec.id, createdAt);
    const names = sources.map((s) =>
      snapshotName({ id: s.member.snapshotId, sourceHash: idHash(s.volume.parsed.id), createdAt, format: s.volume.parsed.format, groupHash: idHash(spec.id) }),
    );
    await this.pool.createMarker(marker);
    try {
      const copies: DiskCopy[] = [];
      for (const [i, s] of sources.entries()) {
        if (!s.writers.length) continue;
        await this.pool.createTarget(names[i]!, s.facts.capacity, s.volume.parsed.format);
        const target = await this.pool.sizeAndPath(names[i]!);
        if (!target) throw internal(`snapshot volume ${names[i]} vanished`);
        copies.push({ disk: s.writers[0]!.disk, targetPath: target.path, format: s.volume.parsed.format });
      }
      // The written members first: their instant is the job's start; the others are not changing.
      if (copies.length && domain) await copyRunningDisks(this.pool.virsh, domain, copies, spec.id, deadline - Date.now());
      for (const [i, s] of sources.entries()) {
        if (s.writers.length) continue;
        const left = deadline - Date.now();
        if (left <= 0) throw unavailable(`group snapshot ${spec.id} did not finish its copies within ${CUT_BOUND_MS / 60_000} minutes`);
        await this.pool.copyVolume(names[i]!, s.facts.capacity, s.volume.parsed.format, s.volume.name, left);
      }
      // Every member still there (nothing removed them meanwhile, such as another process's sweep): only then the record.
      const present = new Set((await this.pool.entries()).map((e) => e.name));
      const lost = names.filter((n) => !present.has(n));
      if (lost.length) throw unavailable(`members of group snapshot ${spec.id} vanished while it was cut (${lost.join(', ')}): cut again`);
      await this.pool.createMarker(groupName({ id: spec.id, members: sources.length }));
    } catch (err) {
      await this.pool.clearUnfinished(spec.id, await this.pool.entries()).catch((e) => log.error('cleanup after a failed group snapshot', { group: spec.id, err: String(e) }));
      throw err;
    }
    await this.pool.deleteNamed(marker);
    const made = await this.get(spec.id);
    if (!made) throw internal(`group snapshot ${spec.id} vanished right after it was made`);
    return made;
  }

  async delete(id: string): Promise<void> {
    const entries = await this.pool.entries();
    const hash = idHash(id);
    if (!entries.some((e) => e.parsed.id === id || (e.parsed.kind === 'snap' && e.parsed.groupHash === hash))) return;
    // The marker first: a delete that stops half-way leaves a group that is not listed, finished by its retry or the next start.
    if (!entries.some((e) => e.parsed.kind === 'marker' && e.parsed.id === id)) await this.pool.createMarker(markerName(id, Date.now()));
    await this.pool.clearUnfinished(id, await this.pool.entries());
  }
}
