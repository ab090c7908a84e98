import { precondition } from '../../errors.js';
import type { DomainDisk, DomainInfo, Domains } from './domains.js';
import type { PoolVolume } from './listing.js';
import { serialFor } from './names.js';

export interface AttachedDisk {
  domain: DomainInfo;
  disk: DomainDisk;
}

/**
 * Which domain disks are which volume of one pool: the one rule the pool (busy checks, copies of a
 * running disk) and the attacher (publish, unpublish, published nodes) share.
 */
export class VolumeDisks {
  constructor(
    private readonly domains: Domains,
    private readonly pool: string,
    /** The path of a volume of the pool by its name (a disk attached by hand names its file). */
    private readonly pathOf: (name: string) => string,
  ) {}

  /** Every domain disk that is this volume: by our serial, or by its pool source, whoever attached it. */
  async attached(v: PoolVolume, domains?: DomainInfo[]): Promise<AttachedDisk[]> {
    const out: AttachedDisk[] = [];
    for (const domain of domains ?? (await this.domains.all())) {
      for (const disk of this.of(domain, v)) out.push({ domain, disk });
    }
    return out;
  }

  /** A domain's disks that are this volume: by our serial, by its pool source, or by its path (attached by hand). */
  of(domain: DomainInfo, v: PoolVolume): DomainDisk[] {
    return domain.disks.filter((disk) => this.isVolume(disk, v.parsed.id, v.name));
  }

  /**
   * The one rule for "this disk is that volume". Without the volume's name (it may be deleted
   * already) a disk is matched by serial and by a source in this pool carrying the ID.
   */
  isVolume(disk: DomainDisk, volumeId: string, name?: string): boolean {
    if (disk.serial === serialFor(volumeId)) return true;
    if (disk.sourcePool === this.pool && disk.sourceVolume?.split('.')[0] === volumeId) return true;
    return name !== undefined && disk.sourceFile === this.pathOf(name);
  }

  /**
   * Who may write this volume while it is copied: its read-write disks, all in running domains. A
   * read-write disk of a domain that is not running is refused (the domain could start during the
   * copy), and so are read-write disks in two domains (a shared disk during a live migration: one
   * backup job catches the writes of one QEMU only).
   */
  async writersForCopy(v: PoolVolume): Promise<AttachedDisk[]> {
    const readWrite = (await this.attached(v)).filter((a) => !a.disk.readOnly);
    const stopped = readWrite.find((a) => !a.domain.running);
    if (stopped) {
      throw precondition(`volume ${v.parsed.id} is attached read-write to domain ${stopped.domain.name}, which is not running but could start while it is copied; detach it (ControllerUnpublishVolume) first`);
    }
    const domains = [...new Set(readWrite.map((a) => a.domain.name))];
    if (domains.length > 1) {
      throw precondition(`volume ${v.parsed.id} is written by ${domains.length} running domains (${domains.join(', ')}): one backup job copies what one of them writes; detach it from all but one`);
    }
    return readWrite;
  }
}
