import { log } from '../../log.js';
import { exhausted, precondition, unavailable } from '../../errors.js';
import { parseName } from './names.js';
import type { VolumeSizeAndPath } from './file-facts.js';
import type { Format } from './names.js';
import { RbdError, type CephImages } from './librbd.js';
import type { VolumeStore } from './volume-store.js';

/** The Ceph snapshot a clone is made from, one per clone and named for it, so it goes with the clone. */
export const cloneSnapshot = (target: string) => `to.${target}`;
const isCloneSnapshot = (snap: string) => snap.startsWith('to.');

/** How long a measured `df` stands: a monitor command, and creates are thin (a create does not move it, writes do). */
const SPACE_TTL_MS = 5_000;

/**
 * An rbd pool's volumes made by librbd itself, for a controller given a Ceph identity. libvirt
 * copies an rbd image once it has been copied and written no more (clone-chains.ts,
 * rbdRecopyRefusal), cannot flatten, and reports the cluster's raw free space for every pool; here
 * each copy clones a snapshot of its own (`to.<target>`, removed with the clone), a clone can be
 * flattened, and the room is the monitors' max_avail for this pool (its replication included), all
 * on one held librados connection (librbd.ts). libvirt then only attaches images to domains: it
 * does not see images made here until an operator refreshes its pool, and the driver never asks it
 * to (docs/libvirt.md, Ceph).
 */
export class CephStore implements VolumeStore {
  readonly kind = 'ceph' as const;
  private room?: { at: number; value: Promise<{ capacity: number; available: number }> };

  constructor(readonly rbd: CephImages) {}

  names(): Promise<string[]> {
    return this.rbd.images().catch(cephFailure);
  }

  async facts(name: string): Promise<VolumeSizeAndPath | null> {
    const i = await this.rbd.info(name).catch(cephFailure);
    // rbd images are thin: what one allocates is not read here (rbd du walks its object map); the driver uses only the capacity.
    return i && { capacity: i.size, allocation: i.size, path: `${this.rbd.cephPool}/${name}`, mtime: i.createdAt };
  }

  async create(name: string, capacity: number): Promise<void> {
    await this.rbd.create(name, capacity).catch(cephFailure);
    this.room = undefined;
  }

  /**
   * A clone of a snapshot of the source's own, taken now. A crash half-way leaves the snapshot (the
   * caller's marker makes the retry come here again, which takes it anew) or the clone (the retry's
   * clearing removes it, and its snapshot with it).
   */
  async copy(name: string, _capacity: number, _format: Format, source: string, timeoutMs: number, how: { flatten?: boolean } = {}): Promise<void> {
    const snap = cloneSnapshot(name);
    try {
      // A snapshot of this name is an earlier attempt's, of an earlier instant: the copy is of now.
      await this.dropSnapshot(source, snap, { missingOk: true });
      await this.rbd.snapCreate(source, snap);
      await this.rbd.snapProtect(source, snap);
      await this.rbd.clone(source, snap, name);
      if (how.flatten) await this.flatten(name);
    } catch (err) {
      // The clone is the caller's to remove; the snapshot it was made from goes here if nothing was cloned from it.
      await this.dropSnapshot(source, snap, { missingOk: true }).catch(() => undefined);
      cephFailure(err);
    }
    this.room = undefined;
  }

  /** Makes a clone read nothing from its parent, then drops the snapshot it was cloned from when that was its own. */
  async flatten(name: string): Promise<void> {
    const before = await this.rbd.info(name).catch(cephFailure);
    if (!before?.parent) return;
    const started = Date.now();
    await this.rbd.flatten(name).catch(cephFailure);
    log.info('flattened a Ceph clone', { image: name, parent: before.parent.image, ms: Date.now() - started });
    await this.dropParentSnapshot(name, before.parent);
    this.room = undefined;
  }

  private async dropSnapshot(image: string, snap: string, how: { missingOk: boolean }): Promise<void> {
    try {
      await this.rbd.snapUnprotect(image, snap).catch((err: unknown) => {
        // Not protected (or gone): rm says which.
        // EINVAL: not protected (rm then says whether it can go); ENOENT: gone.
        if (!(err instanceof RbdError) || (err.errno !== 22 && err.errno !== 2)) throw err;
      });
      await this.rbd.snapRemove(image, snap);
    } catch (err) {
      if (how.missingOk && err instanceof RbdError && err.failure === 'missing') return;
      throw err;
    }
  }

  /** The snapshot a removed or flattened clone was made from, when no other clone reads it (ours, or one libvirt took). */
  private async dropParentSnapshot(name: string, parent: { image: string; snapshot: string }): Promise<void> {
    try {
      await this.dropSnapshot(parent.image, parent.snapshot, { missingOk: true });
    } catch (err) {
      // libvirt shares one snapshot among the clones it made: Ceph refuses while another reads it, and it stays.
      const shared = err instanceof RbdError && err.failure === 'busy';
      if (!shared || isCloneSnapshot(parent.snapshot)) log.warn('the snapshot a clone was made from stays', { clone: name, parent: parent.image, snapshot: parent.snapshot, err: String(err) });
    }
  }

  resize(name: string, capacity: number): Promise<void> {
    return this.rbd.resize(name, capacity).catch(cephFailure);
  }

  /** Both of libvirt's rbd wipes (zero, trim) leave an image that reads zeros: a discard of all of it does that in one pass. */
  async wipe(name: string): Promise<void> {
    await this.rbd.discardAll(name).catch((err: unknown) => {
      if (!(err instanceof RbdError && err.failure === 'missing')) cephFailure(err);
    });
  }

  /**
   * Removes an image: its own snapshots first (the caller never removes one that clones read: Ceph
   * would refuse), then the image, then the snapshot it was cloned from.
   */
  async remove(name: string): Promise<void> {
    try {
      const i = await this.rbd.info(name);
      if (!i) return;
      for (const s of await this.rbd.snapshots(name)) await this.dropSnapshot(name, s.name, { missingOk: true });
      await this.rbd.remove(name).catch((err: unknown) => {
        if (!(err instanceof RbdError && err.failure === 'missing')) throw err;
      });
      if (i.parent) await this.dropParentSnapshot(name, i.parent);
    } catch (err) {
      cephFailure(err);
    }
    this.room = undefined;
  }

  /** The pool's room from `ceph df`, held for a few seconds (creates are thin; writes move it, a create does not). */
  space(): Promise<{ capacity: number; available: number }> {
    const now = Date.now();
    if (!this.room || now - this.room.at > SPACE_TTL_MS) {
      const value = this.rbd.poolSpace().then(
        (s) => {
          // A byte quota bounds the pool below what its OSDs could still take.
          const available = s.quotaBytes > 0 ? Math.min(s.maxAvail, Math.max(0, s.quotaBytes - s.stored)) : s.maxAvail;
          return { capacity: s.stored + available, available };
        },
        (err: unknown) => {
          this.room = undefined;
          return cephFailure(err);
        },
      );
      this.room = { at: now, value };
    }
    return this.room.value;
  }

  /**
   * Our `to.*` snapshots whose clone is gone (a crash between a clone's removal and its snapshot's,
   * or between a snapshot and its clone): at start, when no copy of this process is under way.
   */
  async dropOrphanSnapshots(): Promise<number> {
    const images = await this.rbd.images();
    const exists = new Set(images);
    const listing: Array<{ image: string; snapshot: string }> = [];
    // Only images of the driver's naming are opened (a pool may hold thousands of others).
    for (const image of images.filter((i) => parseName(i))) {
      const snaps = await this.rbd.snapshots(image).catch(() => []);
      for (const s of snaps) listing.push({ image, snapshot: s.name });
    }
    let dropped = 0;
    for (const l of listing) {
      // Only a snapshot of the driver's naming on an image of the driver's naming: anyone else's `to.x` is theirs.
      if (!isCloneSnapshot(l.snapshot) || !parseName(l.snapshot.slice(3)) || exists.has(l.snapshot.slice(3))) continue;
      try {
        await this.dropSnapshot(l.image, l.snapshot, { missingOk: true });
        dropped++;
      } catch (err) {
        log.warn('a snapshot whose clone is gone stays for now', { image: l.image, snapshot: l.snapshot, err: String(err) });
      }
    }
    if (dropped) log.info('removed snapshots whose clones are gone', { count: dropped });
    return dropped;
  }
}

/** A Ceph tool's failure as the driver's error: the cluster out of reach, full, or the user not allowed. */
export function cephFailure(err: unknown): never {
  if (!(err instanceof RbdError)) throw err;
  if (err.failure === 'unreachable') throw unavailable(`Ceph does not answer the controller, or has cut it off (${err.message}); check the monitors, the controller's --ceph-conf, and \`ceph osd blocklist ls\` (a blocklisted controller must be restarted); retry once it answers`);
  if (err.failure === 'denied') throw precondition(`Ceph refuses the controller's user (${err.message}); it needs mon 'profile rbd' and osd 'profile rbd pool=<pool>' (docs/libvirt.md, Ceph)`);
  if (err.failure === 'full') throw exhausted(`the Ceph pool is full or over its quota (${err.message})`);
  if (err.failure === 'busy') throw precondition(`Ceph refuses: the image or snapshot is in use (${err.message})`);
  throw err;
}
