import { log } from '../../log.js';
import { isId } from '../../ids.js';
import { ioLimitsOf } from '../mutable-parameters.js';
import type { Domains } from './domains.js';
import { tuneOf } from './io-tune.js';
import type { Entry, PoolVolume } from './listing.js';
import { idHash, limitsName, type LimitsName, type VolumeName } from './names.js';
import type { VolumeDisks } from './volume-disks.js';

type LimitsEntry = { name: string; parsed: LimitsName };

const isLimits = (e: Entry): e is LimitsEntry => e.parsed.kind === 'limits';

/** A volume's limit records, oldest first (one, but for a change a crash cut short). */
export function limitRecords(entries: readonly Entry[], volumeId: string): LimitsEntry[] {
  const hash = idHash(volumeId);
  return entries.filter(isLimits).filter((e) => e.parsed.hash === hash).sort((a, b) => a.parsed.sequence - b.parsed.sequence);
}

/** The limits in force: the newest record's, as parameters (strings, as every pool records them). */
export function limitParameters(entries: readonly Entry[], volumeId: string): Record<string, string> {
  const newest = limitRecords(entries, volumeId).pop();
  return newest ? Object.fromEntries(Object.entries(newest.parsed.limits).map(([k, v]) => [k, String(v)])) : {};
}

/** The hashes of the volumes there (and of those a copy is making): their records are theirs. */
function volumesByHash(entries: readonly Entry[]): Set<string> {
  return new Set(entries.filter((e) => (e.parsed.kind === 'vol' || e.parsed.kind === 'marker') && isId('vol', e.parsed.id)).map((e) => idHash(e.parsed.id)));
}

export interface LimitsDeps {
  /** Makes the smallest volume the pool holds under this name (the record is its name). */
  createRecord(name: string): Promise<void>;
  deleteNamed(name: string): Promise<void>;
  domains: Domains;
  disks: VolumeDisks;
}

/**
 * The libvirt pool's record of each volume's I/O limits, and QEMU's throttling of its disks.
 * libvirt keeps no metadata on a volume and a volume's name cannot change, so the limits are a
 * record volume of their own whose name holds them (names.ts). A change makes the next sequence
 * and then removes the older ones: a crash between the two leaves both, and the newer is read.
 */
export class LibvirtVolumeLimits {
  constructor(private readonly deps: LimitsDeps) {}

  /** Records these limits (none: no record) in one create; then the older records go. */
  async record(volumeId: string, parameters: Record<string, string>, entries: readonly Entry[]): Promise<void> {
    const older = limitRecords(entries, volumeId);
    const limits = ioLimitsOf(parameters) as Record<string, number>;
    if (Object.keys(limits).length) {
      const sequence = (older[older.length - 1]?.parsed.sequence ?? 0) + 1;
      await this.deps.createRecord(limitsName({ hash: idHash(volumeId), sequence, limits }));
    }
    for (const e of older) await this.deps.deleteNamed(e.name);
  }

  /**
   * Removes every record of a deleted volume. Records are found by the ID's hash: while any volume
   * (or a copy in the making) of that hash is still there, they are its, whatever ID the delete named.
   */
  async drop(volumeId: string, entries: readonly Entry[]): Promise<void> {
    if (volumesByHash(entries).has(idHash(volumeId))) return;
    for (const e of limitRecords(entries, volumeId)) await this.deps.deleteNamed(e.name);
  }

  /**
   * Sets the disk's throttling in every domain the volume is attached to, live and in the persistent
   * definition; all fields at once, so a lifted limit is 0 and nothing set earlier stays.
   */
  async apply(v: PoolVolume<VolumeName>, parameters: Record<string, string>): Promise<number> {
    const fields = tuneOf(parameters);
    let disks = 0;
    for (const { domain, disk } of await this.deps.disks.attached(v)) {
      await this.deps.domains.setTune(domain, disk.target, fields);
      disks++;
    }
    return disks;
  }

  /** Records without a volume, seen by the last sweep: removed when the next still finds them so. */
  private suspects = new Set<string>();

  /**
   * Records a crash left behind. One older than a newer record of the same volume goes at once (a
   * change removes it anyway). One whose volume is not there goes only when the next sweep still finds
   * it so (ten minutes later): another controller process (a rolling update) may be between a new
   * volume's record and the volume or its copy marker.
   */
  async sweep(entries: readonly Entry[]): Promise<void> {
    const volumes = volumesByHash(entries);
    const newest = new Map<string, number>();
    for (const e of entries.filter(isLimits)) newest.set(e.parsed.hash, Math.max(newest.get(e.parsed.hash) ?? 0, e.parsed.sequence));
    const orphans = new Set<string>();
    for (const e of entries.filter(isLimits)) {
      const superseded = e.parsed.sequence !== newest.get(e.parsed.hash);
      if (!superseded && volumes.has(e.parsed.hash)) continue;
      if (!superseded && !this.suspects.has(e.name)) {
        orphans.add(e.name);
        continue;
      }
      try {
        await this.deps.deleteNamed(e.name);
        log.info('removed an I/O limits record left behind', { record: e.name, why: superseded ? 'a newer one exists' : 'its volume is gone' });
      } catch (err) {
        log.warn('cannot remove an I/O limits record left behind', { record: e.name, err: String(err) });
      }
    }
    this.suspects = orphans;
  }
}
