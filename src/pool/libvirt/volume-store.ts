import { LibvirtMissingError, xmlEscape } from './virsh.js';
import { lvmNameProblem, type Format } from './names.js';
import { precondition } from '../../errors.js';
import { volumeFacts } from './listing.js';
import type { VolumeSizeAndPath } from './file-facts.js';
import type { Libvirt } from './libvirt-api.js';

/**
 * Where a libvirt pool's volumes are made, copied, grown and removed: libvirt's storage API for
 * every pool type (LibvirtStore), or for an rbd pool whose controller holds a Ceph identity, Ceph's
 * own tools (CephStore in ceph-store.ts). The names, markers and tombstones above it are the same.
 */
export interface VolumeStore {
  readonly kind: 'libvirt' | 'ceph';
  names(): Promise<string[]>;
  /** null when there is no such volume. */
  facts(name: string): Promise<VolumeSizeAndPath | null>;
  create(name: string, capacity: number, how: { preallocated: boolean; format: Format }): Promise<void>;
  /** A new volume with the source's data (in rbd a clone; `flatten`: one that reads nothing from the source afterwards). */
  copy(name: string, capacity: number, format: Format, source: string, timeoutMs: number, how?: { flatten?: boolean }): Promise<void>;
  resize(name: string, capacity: number): Promise<void>;
  wipe(name: string, algorithm: string, timeoutMs: number): Promise<void>;
  /** Removes a volume; a missing one is a LibvirtMissingError (or nothing: callers treat both as gone). */
  remove(name: string): Promise<void>;
  space(): Promise<{ capacity: number; available: number }>;
}

// Pool types whose volumes are files (qcow2 is possible).
export const FILE_POOLS = new Set(['dir', 'fs', 'netfs', 'gluster', 'vstorage']);

/** libvirt's storage API on one pool. */
export class LibvirtStore implements VolumeStore {
  readonly kind = 'libvirt' as const;

  constructor(
    private readonly libvirt: Libvirt,
    private readonly pool: string,
    private readonly poolType: string,
    /** Where the pool keeps its volumes: for a logical pool /dev/<vg>. */
    private readonly targetPath: string,
  ) {}

  private get fileBacked(): boolean {
    return FILE_POOLS.has(this.poolType);
  }

  names(): Promise<string[]> {
    return this.libvirt.volumeNames(this.pool);
  }

  async facts(name: string): Promise<VolumeSizeAndPath | null> {
    const xml = await this.libvirt.volumeXml(this.pool, name);
    return xml === null ? null : volumeFacts(xml);
  }

  /**
   * A new volume's XML. File pools take a format; LVM and rbd volumes are raw by nature and take
   * none. Sparse unless asked otherwise, where sparse is a plain property of the volume (files; rbd
   * is always thin): in a logical pool libvirt would make a "sparse" LV a COW snapshot of nothing,
   * so LVs there are always allocated in full.
   */
  private volumeXml(name: string, capacity: number, preallocated: boolean, format: Format): string {
    // Refused here, before libvirt's lvcreate fails with an error that names nothing the user chose.
    const tooLong = this.poolType === 'logical' ? lvmNameProblem(name, this.targetPath.split('/').pop() ?? '') : null;
    if (tooLong) throw precondition(tooLong);
    const sparse = this.fileBacked && !preallocated;
    return [
      '<volume>',
      `  <name>${xmlEscape(name)}</name>`,
      `  <capacity unit='bytes'>${capacity}</capacity>`,
      ...(sparse ? ["  <allocation unit='bytes'>0</allocation>"] : []),
      ...(this.fileBacked ? [`  <target><format type='${format}'/></target>`] : []),
      '</volume>',
    ].join('\n');
  }

  create(name: string, capacity: number, how: { preallocated: boolean; format: Format }): Promise<void> {
    return this.libvirt.createVolume(this.pool, this.volumeXml(name, capacity, how.preallocated, how.format));
  }

  copy(name: string, capacity: number, format: Format, source: string, timeoutMs: number): Promise<void> {
    return this.libvirt.createVolumeFrom(this.pool, this.volumeXml(name, capacity, false, format), source, timeoutMs);
  }

  resize(name: string, capacity: number): Promise<void> {
    return this.libvirt.resizeVolume(this.pool, name, capacity);
  }

  wipe(name: string, algorithm: string, timeoutMs: number): Promise<void> {
    return this.libvirt.wipeVolume(this.pool, name, algorithm, timeoutMs);
  }

  remove(name: string): Promise<void> {
    // libvirt snapshotted an rbd image to clone it: they go with it (while its clones live, Ceph refuses).
    return this.libvirt.deleteVolume(this.pool, name, { withSnapshots: this.poolType === 'rbd' });
  }

  async space(): Promise<{ capacity: number; available: number }> {
    const info = await this.libvirt.poolInfo(this.pool);
    return { capacity: info.capacity, available: info.available };
  }
}

export { LibvirtMissingError };
