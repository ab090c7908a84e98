import { log } from '../../log.js';
import { errorMessage, precondition } from '../../errors.js';
import type { Entry } from './listing.js';
import { idHash, retiredName, type PoolName } from './names.js';

/**
 * How deep a chain of Ceph clones may grow (each restore generation adds two: a snapshot, then a
 * volume from it). libvirt clones but cannot flatten, and every level is one more lookup for the
 * data a clone has not written itself; past this a new clone is refused with the reason.
 */
export const MAX_CLONE_DEPTH = 16;

/**
 * With a Ceph identity (ceph-store.ts) a copy deeper than this is flattened as it is made: reads of
 * what a clone has not written walk its chain, and ceph-csi keeps chains as short.
 */
export const FLATTEN_DEPTH = 8;

/**
 * Who is whose clone as Ceph says it (a controller with a Ceph identity), and what Ceph can do about
 * it: flatten a clone, and tell whether the pool has room for that.
 */
export interface CephGraph {
  /** The image this one is a clone of, null when none. */
  parent(name: string): Promise<string | null>;
  /** The images cloned from any snapshot of this one. */
  children(name: string): Promise<string[]>;
  flatten(name: string): Promise<void>;
  /** Whether the pool can take this many more bytes (a flatten writes up to the clone's size). */
  hasRoom(bytes: number): Promise<boolean>;
  size(name: string): Promise<number>;
}

/** What a volume or snapshot was cloned from, by kind and ID hash (its name says). */
function parentRef(p: PoolName): { kind: 'vol' | 'snap'; hash: string } | null {
  if (p.kind === 'snap') return { kind: 'vol', hash: p.sourceHash };
  if (p.kind === 'vol' && p.source) return { kind: p.source.kind === 'volume' ? 'vol' : 'snap', hash: p.source.hash };
  return null;
}

/**
 * libvirt's rbd backend (9.0, and upstream to this day) copies an image by cloning a snapshot of it,
 * reusing one that has no difference from the image: its search stops at the first snapshot with a
 * difference by returning -1 from rbd_diff_iterate2's callback, and then takes that -1 for a failure
 * ("An error occurred, but the cause is unknown"; its log: "failed to iterate RBD snapshot"). So once
 * an image has been copied and then written, libvirt copies it no more. The generic text may hide
 * another failure of the same call (libvirt loses the first error while it cleans up), so it is
 * mapped for volume sources only (a snapshot is never written) and the message says "most likely".
 */
export function rbdRecopyRefusal(err: unknown, source: string): Error | null {
  const m = errorMessage(err);
  if (!/An error occurred, but the cause is unknown|failed to iterate RBD snapshot/i.test(m)) return null;
  return precondition(
    `libvirt cannot copy ${source} again, most likely because it was copied before (a snapshot or clone of it) and written since: libvirt's rbd backend fails every copy of such an image (its search for a reusable snapshot takes "a difference found" for an error). libvirt said only: ${m.trim()}; libvirtd's log names the cause ("failed to iterate RBD snapshot" for this one). Restores from snapshots still work; see docs/libvirt.md (Ceph)`,
  );
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
 *
 * A tombstone names an ID, so an ID must have one image: a name whose image is retired is not made
 * again (refused by the pool), and where two images carry one ID or one hash all the same, nothing
 * of theirs is removed here (which of them a tombstone or a clone means cannot be proven).
 */
export class CloneChains {
  constructor(
    private readonly deps: {
      entries(): Promise<Entry[]>;
      /** Removes an image with the snapshots libvirt took of it (and a tombstone, a plain image), wiping it first if asked. */
      deleteImage(name: string, wipe?: string): Promise<void>;
      createTombstone(name: string): Promise<void>;
      /** Whether a domain has the image as a disk (then it is never removed here, whatever its name says). */
      attached(e: Entry): Promise<boolean>;
      /** With a Ceph identity: the chain from Ceph itself, and flattening (else from the names, and no flatten). */
      ceph?: CephGraph;
    },
  ) {}

  /** Whether clones can be flattened (the controller has a Ceph identity). */
  get canFlatten(): boolean {
    return this.deps.ceph !== undefined;
  }

  /**
   * The images cloned from this one, retired ones included. From Ceph, an image cloned from it that
   * is not one of ours counts too (it blocks the removal all the same), as an entry of no kind.
   */
  async children(e: Entry, entries: readonly Entry[]): Promise<Entry[]> {
    if (this.deps.ceph) {
      const names = await this.deps.ceph.children(e.name);
      return names.map((n) => entries.find((x) => x.name === n) ?? { name: n, parsed: { kind: 'marker', id: `foreign:${n}` } as Entry['parsed'] });
    }
    const hash = idHash(e.parsed.id);
    return entries.filter((c) => {
      const ref = isImage(c) ? parentRef(c.parsed) : null;
      return ref !== null && ref.kind === e.parsed.kind && ref.hash === hash;
    });
  }

  /** The image this one was cloned from; undefined when none, or when more than one image could be it. */
  async parent(e: Entry, entries: readonly Entry[]): Promise<Entry | undefined> {
    if (this.deps.ceph) {
      const name = await this.deps.ceph.parent(e.name);
      return name ? entries.find((x) => x.name === name && isImage(x)) : undefined;
    }
    const ref = parentRef(e.parsed);
    if (!ref) return undefined;
    const found = entries.filter((p) => isImage(p) && p.parsed.kind === ref.kind && idHash(p.parsed.id) === ref.hash);
    return found.length === 1 ? found[0] : undefined;
  }

  /** How many images this one's data is read through (0 for one cloned from nothing). */
  async depth(e: Entry, entries: readonly Entry[]): Promise<number> {
    let n = 0;
    const seen = new Set<string>();
    for (let p = await this.parent(e, entries); p && !seen.has(p.name); p = await this.parent(p, entries)) {
      seen.add(p.name);
      n++;
    }
    return n;
  }

  /**
   * How a copy of `source` is made: a plain clone, or with a Ceph identity past FLATTEN_DEPTH one
   * flattened as it is made; without one, refused past MAX_CLONE_DEPTH.
   */
  async copyHow(source: Entry, entries: readonly Entry[]): Promise<{ flatten: boolean }> {
    const depth = (await this.depth(source, entries)) + 1;
    if (this.deps.ceph) {
      if (depth <= FLATTEN_DEPTH) return { flatten: false };
      // A flatten writes as much as the copy is large: without room the chain grows one more instead.
      const room = await this.deps.ceph.hasRoom(await this.deps.ceph.size(source.name));
      if (!room) log.warn('no room in the Ceph pool to flatten a deep copy: made as a clone, one level deeper', { source: source.name, depth });
      return { flatten: room };
    }
    if (depth > MAX_CLONE_DEPTH) {
      throw precondition(
        `${source.parsed.id} is already a clone ${depth - 1} levels deep in Ceph; a copy of it would read its data through ${depth} images (at most ${MAX_CLONE_DEPTH}), and libvirt cannot flatten it: copy from an earlier snapshot, or from a volume made without a source, or give the controller a Ceph identity (--ceph-conf; it flattens)`,
      );
    }
    return { flatten: false };
  }

  /**
   * With a Ceph identity, the clones of an image that must go are flattened, so it can: only when
   * every one is ours and the pool has room for all of them at full size. False when it cannot (the
   * image is retired then, as without one).
   */
  private async flattenAway(e: Entry, kids: Entry[]): Promise<boolean> {
    const ceph = this.deps.ceph;
    if (!ceph) return false;
    const foreign = kids.filter((k) => !isImage(k) && k.parsed.kind !== 'retired');
    if (foreign.length) {
      log.warn('an image is read by clones that are not the driver\'s: retired, not flattened', { image: e.name, clones: foreign.map((k) => k.name) });
      return false;
    }
    let bytes = 0;
    for (const k of kids) bytes += await ceph.size(k.name);
    if (!(await ceph.hasRoom(bytes))) {
      log.warn('no room in the Ceph pool to flatten the clones of an image: retired, flattened later', { image: e.name, clones: kids.map((k) => k.name), bytes });
      return false;
    }
    try {
      for (const k of kids) await ceph.flatten(k.name);
    } catch (err) {
      log.warn('flattening the clones of an image failed: retired, flattened later', { image: e.name, err: String(err) });
      return false;
    }
    return true;
  }

  isRetired(id: string, entries: readonly Entry[]): boolean {
    return entries.some((e) => e.parsed.kind === 'retired' && e.parsed.id === id);
  }

  /** The one image under an ID, or undefined when there is none or more than one. */
  private only(id: string, entries: readonly Entry[]): Entry | undefined {
    const found = entries.filter((e) => isImage(e) && e.parsed.id === id);
    return found.length === 1 ? found[0] : undefined;
  }

  /**
   * Removes a volume or snapshot image, or retires it while clones read it. A removal makes its
   * parent childless perhaps: a retired parent goes then too, and so on up the chain, as far as it
   * can now (what stays is collected later: collect()).
   */
  async remove(e: Entry, entries: Entry[], wipe?: string): Promise<'deleted' | 'retired'> {
    const kids = await this.children(e, entries);
    if (kids.length && !(await this.flattenAway(e, kids))) {
      if (!this.isRetired(e.parsed.id, entries)) {
        await this.deps.createTombstone(retiredName(e.parsed.id));
        log.info('retired an image that Ceph clones still read; it goes with the last of them', { image: e.name, clones: kids.map((k) => k.name) });
      }
      return 'retired';
    }
    // The tombstone names the ID: with two images under it, which one it means is not proven.
    if (this.isRetired(e.parsed.id, entries) && !this.only(e.parsed.id, entries)) {
      log.warn('two images carry one retired ID: neither is removed', { id: e.parsed.id, images: entries.filter((x) => isImage(x) && x.parsed.id === e.parsed.id).map((x) => x.name) });
      return 'retired';
    }
    // A retired volume is found by no lookup, so no busy check saw it: a domain may have it (attached by hand).
    if (this.isRetired(e.parsed.id, entries) && (await this.deps.attached(e))) {
      log.warn('a retired image is a disk of a domain: left alone', { image: e.name });
      return 'retired';
    }
    // Read before the image goes: from Ceph, a removed image has no parent to ask for.
    const parent = await this.parent(e, entries);
    await this.deps.deleteImage(e.name, wipe ?? (e.parsed.kind === 'vol' ? e.parsed.wipe : undefined));
    if (this.isRetired(e.parsed.id, entries)) await this.deps.deleteImage(retiredName(e.parsed.id));
    const rest = entries.filter((x) => x.name !== e.name && !(x.parsed.kind === 'retired' && x.parsed.id === e.parsed.id));
    if (parent && this.isRetired(parent.parsed.id, rest)) {
      // This call's own image is gone: a parent that cannot go now is collect()'s, not this call's failure.
      await this.removeRetired(parent, rest).catch((err: unknown) => log.warn('a retired parent stays for now (collected later)', { image: parent.name, err: String(err) }));
    }
    return 'deleted';
  }

  /** A retired image no clone reads, unless a domain has it as a disk. */
  private async removeRetired(e: Entry, entries: Entry[]): Promise<void> {
    if ((await this.children(e, entries)).length && !this.canFlatten) return;
    if (await this.deps.attached(e)) {
      log.warn('a retired image is a disk of a domain: left alone', { image: e.name });
      return;
    }
    await this.remove(e, entries);
  }

  /**
   * Every retired image no clone reads any more goes (what a crash between a clone's removal and
   * its parent's left, or a parent that could not go then); a tombstone without its image goes too.
   * Each failure is logged and the rest go on.
   */
  async collect(): Promise<void> {
    const entries = await this.deps.entries();
    for (const t of entries.filter((e) => e.parsed.kind === 'retired')) {
      const images = entries.filter((e) => isImage(e) && e.parsed.id === t.parsed.id);
      try {
        if (!images.length) await this.deps.deleteImage(t.name);
        else if (images.length === 1) await this.removeRetired(images[0]!, await this.deps.entries());
        else log.warn('two images carry one retired ID: neither is removed', { id: t.parsed.id, images: images.map((x) => x.name) });
      } catch (err) {
        log.warn('a retired image stays for now', { tombstone: t.name, err: String(err) });
      }
    }
  }
}
