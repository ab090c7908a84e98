import { log } from '../../log.js';
import { precondition } from '../../errors.js';
import type { Entry } from './listing.js';
import { idHash, retiredName, type PoolName } from './names.js';

/**
 * How deep a chain of Ceph clones may grow (each restore generation adds two: a snapshot, then a
 * volume from it). libvirt clones but cannot flatten, and every level is one more lookup for the
 * data a clone has not written itself; past this a new clone is refused with the reason.
 */
export const MAX_CLONE_DEPTH = 16;

/** What a volume or snapshot was cloned from, by kind and ID hash (its name says). */
function parentRef(p: PoolName): { kind: 'vol' | 'snap'; hash: string } | null {
  if (p.kind === 'snap') return { kind: 'vol', hash: p.sourceHash };
  if (p.kind === 'vol' && p.source) return { kind: p.source.kind === 'volume' ? 'vol' : 'snap', hash: p.source.hash };
  return null;
}

const isImage = (e: Entry) => e.parsed.kind === 'vol' || e.parsed.kind === 'snap';

/**
 * The clones of an rbd pool. libvirt makes every copy within an rbd pool a Ceph copy-on-write clone
 * (vol-create-from: a protected snapshot of the source, and a clone of it), so a volume or snapshot
 * with clones cannot be removed: Ceph refuses while its snapshot has children, and libvirt offers no
 * flatten. Such an image is retired instead: a tombstone (`<id>.retired`) makes its ID read as
 * absent at once, and the image goes with its tombstone when its last clone goes, up the chain.
 * Who is whose clone is read from the names (a snapshot names its volume, a volume its source), so
 * a restart, or a second controller, knows it from the pool alone.
 */
export class CloneChains {
  constructor(
    private readonly deps: {
      entries(): Promise<Entry[]>;
      /** Removes an image with the snapshots libvirt took of it (and a tombstone, a plain image). */
      deleteImage(name: string, wipe?: string): Promise<void>;
      createTombstone(name: string): Promise<void>;
    },
  ) {}

  /** The images cloned from this one, retired ones included. */
  children(e: Entry, entries: readonly Entry[]): Entry[] {
    const hash = idHash(e.parsed.id);
    return entries.filter((c) => {
      const ref = isImage(c) ? parentRef(c.parsed) : null;
      return ref !== null && ref.kind === e.parsed.kind && ref.hash === hash;
    });
  }

  parent(e: Entry, entries: readonly Entry[]): Entry | undefined {
    const ref = parentRef(e.parsed);
    return ref ? entries.find((p) => isImage(p) && p.parsed.kind === ref.kind && idHash(p.parsed.id) === ref.hash) : undefined;
  }

  /** How many images this one's data is read through (0 for one cloned from nothing). */
  depth(e: Entry, entries: readonly Entry[]): number {
    let n = 0;
    const seen = new Set<string>();
    for (let p = this.parent(e, entries); p && !seen.has(p.name); p = this.parent(p, entries)) {
      seen.add(p.name);
      n++;
    }
    return n;
  }

  /** Refuses a clone of `source` that would make the chain deeper than MAX_CLONE_DEPTH. */
  checkDepth(source: Entry, entries: readonly Entry[]): void {
    const depth = this.depth(source, entries) + 1;
    if (depth > MAX_CLONE_DEPTH) {
      throw precondition(
        `${source.parsed.id} is already a clone ${depth - 1} levels deep in Ceph; a copy of it would read its data through ${depth} images (at most ${MAX_CLONE_DEPTH}), and libvirt cannot flatten it: copy from an earlier snapshot, or from a volume made without a source`,
      );
    }
  }

  isRetired(id: string, entries: readonly Entry[]): boolean {
    return entries.some((e) => e.parsed.kind === 'retired' && e.parsed.id === id);
  }

  /**
   * Removes a volume or snapshot image, or retires it while clones read it. A removal makes its
   * parent childless perhaps: a retired parent goes then too, and so on up the chain.
   */
  async remove(e: Entry, entries: Entry[], wipe?: string): Promise<'deleted' | 'retired'> {
    const kids = this.children(e, entries);
    if (kids.length) {
      if (!this.isRetired(e.parsed.id, entries)) {
        await this.deps.createTombstone(retiredName(e.parsed.id));
        log.info('retired an image that Ceph clones still read; it goes with the last of them', { image: e.name, clones: kids.map((k) => k.name) });
      }
      return 'retired';
    }
    await this.deps.deleteImage(e.name, wipe);
    if (this.isRetired(e.parsed.id, entries)) await this.deps.deleteImage(retiredName(e.parsed.id));
    const rest = entries.filter((x) => x.name !== e.name && !(x.parsed.kind === 'retired' && x.parsed.id === e.parsed.id));
    const parent = this.parent(e, rest);
    if (parent && this.isRetired(parent.parsed.id, rest)) await this.remove(parent, rest);
    return 'deleted';
  }

  /** Every retired image no clone reads any more goes (what a crash between a clone's removal and its parent's left). */
  async collect(): Promise<void> {
    const entries = await this.deps.entries();
    for (const t of entries.filter((e) => e.parsed.kind === 'retired')) {
      const image = entries.find((e) => isImage(e) && e.parsed.id === t.parsed.id);
      if (!image) {
        await this.deps.deleteImage(t.name);
        continue;
      }
      if (!this.children(image, entries).length) await this.remove(image, entries).catch((err: unknown) => log.warn('cannot remove a retired image', { image: image.name, err: String(err) }));
    }
  }
}
