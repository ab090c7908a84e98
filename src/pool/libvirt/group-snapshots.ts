import { internal, precondition } from '../../errors.js';
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
  snapshotRecord(s: PoolVolume<SnapshotName>, f: VolumeSizeAndPath, entries: Entry[]): SnapshotRecord;
  sizeAndPath(name: string): Promise<VolumeSizeAndPath | null>;
  runningWriter(v: PoolVolume): Promise<AttachedDisk | null>;
  requireSpace(bytes: number, what: string): Promise<void>;
  /** Creates a tiny volume under this name (a marker or a group record). */
  createMarker(name: string): Promise<void>;
  /** An empty volume to copy a running disk into. */
  createTarget(name: string, capacity: number, format: Format): Promise<void>;
  /** A copy of a volume no running domain writes, made by libvirt. */
  copyVolume(name: string, capacity: number, format: Format, source: string): Promise<void>;
  deleteNamed(name: string): Promise<void>;
  /** Removes what an unfinished create or delete left under an ID (a group's: its members, record and marker). */
  clearUnfinished(id: string, entries: Entry[]): Promise<void>;
}

/**
 * Group snapshots of a libvirt pool, one point in time for all members:
 * - members no running domain writes cannot change (the caller holds every member's lock, so no
 *   ControllerPublish attaches them meanwhile): libvirt copies them as they are;
 * - members a running domain writes are copied by one backup job over all of them, which libvirt
 *   starts as one QEMU transaction: one instant for every disk of the job. So they must all be
 *   disks of ONE domain (a pod's volumes are all attached to its node's VM); members written by two
 *   running domains are refused, as two jobs would be two instants. A pool whose volumes are not
 *   files (logical, rbd) cannot take a backup job's copy, so a written member there is refused too.
 * The record: libvirt keeps no metadata on a volume, so a group is its members' names (each carries
 * the group's hash) and a record volume `<group-id>.n<members>.group`. A marker `<group-id>.incomplete`
 * exists while the group is made or unmade: with it, neither the group nor its members are listed,
 * and the controller's next start (sweep) or a retry of the same group removes what is there.
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
      snapshots: whole ? snapshots : snapshots.map((s) => ({ ...s, readyToUse: false })),
    };
  }

  async create(spec: { id: string; name: string; members: ReadonlyArray<{ volumeId: string; snapshotId: string; snapshotName: string }> }): Promise<GroupSnapshot> {
    const existing = await this.get(spec.id);
    if (existing) return existing;
    let entries = await this.pool.entries();
    // A create (or delete) of this group that stopped half-way left members and a marker: not of the cut about to be made.
    await this.pool.clearUnfinished(spec.id, entries);
    entries = await this.pool.entries();

    const complete = this.pool.complete(entries);
    const sources: Array<{ member: (typeof spec.members)[number]; volume: PoolVolume<VolumeName>; facts: VolumeSizeAndPath; writer: AttachedDisk | null }> = [];
    for (const m of spec.members) {
      const volume = complete.find((e): e is PoolVolume<VolumeName> => e.parsed.kind === 'vol' && e.parsed.id === m.volumeId);
      const facts = volume ? await this.pool.sizeAndPath(volume.name) : null;
      if (!volume || !facts) throw precondition(`volume ${m.volumeId} is not in this pool`);
      sources.push({ member: m, volume, facts, writer: await this.pool.runningWriter(volume) });
    }
    const written = sources.filter((s) => s.writer);
    const domains = new Map<string, DomainInfo>(written.map((s) => [s.writer!.domain.uuid, s.writer!.domain]));
    if (domains.size > 1) {
      throw precondition(
        `the volumes are written by ${domains.size} running domains (${[...domains.values()].map((d) => d.name).join(', ')}): one consistent instant is one backup job in one domain; snapshot them apart, or group only volumes of one domain`,
      );
    }
    if (written.length && !this.pool.fileBacked) {
      throw precondition(`volume ${written[0]!.member.volumeId} is attached read-write to running domain ${written[0]!.writer!.domain.name}; a consistent copy of a running disk needs a file-backed pool (dir, fs, netfs), this one is ${this.pool.poolType}`);
    }
    await this.pool.requireSpace(
      sources.reduce((n, s) => n + s.facts.allocation, 0),
      `group snapshot ${spec.name} of ${sources.length} volumes`,
    );

    const marker = markerName(spec.id);
    const createdAt = Date.now();
    const names = sources.map((s) =>
      snapshotName({ id: s.member.snapshotId, sourceHash: idHash(s.volume.parsed.id), createdAt, format: s.volume.parsed.format, groupHash: idHash(spec.id) }),
    );
    await this.pool.createMarker(marker);
    try {
      const copies: DiskCopy[] = [];
      for (const [i, s] of sources.entries()) {
        if (!s.writer) continue;
        await this.pool.createTarget(names[i]!, s.facts.capacity, s.volume.parsed.format);
        const target = await this.pool.sizeAndPath(names[i]!);
        if (!target) throw internal(`snapshot volume ${names[i]} vanished`);
        copies.push({ disk: s.writer.disk, targetPath: target.path, format: s.volume.parsed.format });
      }
      // The running members first: their instant is the job's start; the others are not changing.
      if (copies.length) await copyRunningDisks(this.pool.virsh, [...domains.values()][0]!, copies, spec.id);
      for (const [i, s] of sources.entries()) if (!s.writer) await this.pool.copyVolume(names[i]!, s.facts.capacity, s.volume.parsed.format, s.volume.name);
      await this.pool.createMarker(groupName({ id: spec.id, members: sources.length }));
    } catch (err) {
      await this.pool.clearUnfinished(spec.id, await this.pool.entries()).catch((e) => log.error('cleanup after a failed group snapshot', { group: spec.id, err: String(e) }));
      throw err;
    }
    // The commit point: from here the group and its members are listed.
    await this.pool.deleteNamed(marker);
    const made = await this.get(spec.id);
    if (!made) throw internal(`group snapshot ${spec.id} vanished right after it was made`);
    return made;
  }

  async delete(id: string): Promise<void> {
    const entries = await this.pool.entries();
    const hash = idHash(id);
    if (!entries.some((e) => e.parsed.id === id || (e.parsed.kind === 'snap' && e.parsed.groupHash === hash))) return;
    // The marker first: a delete that stops half-way leaves a group that is not listed, finished by the next start or a retry.
    if (!entries.some((e) => e.parsed.kind === 'marker' && e.parsed.id === id)) await this.pool.createMarker(markerName(id));
    await this.pool.clearUnfinished(id, await this.pool.entries());
  }
}
