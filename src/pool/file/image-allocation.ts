import { stat } from 'node:fs/promises';
import { errno } from '../../errors.js';
import { log } from '../../log.js';
import type { VolumeRecord } from '../backend.js';

/** How long a measurement of the images' allocation stands. */
const TTL_MS = 5_000;
/** Images stat'ed at once when the allocation is measured. */
const BATCH = 16;

/**
 * What each volume's sparse image has allocated, for the pool's free space: what a volume may still
 * allocate counts as used. Measured (a stat per image, on libuv's threads, a few at a time) at most
 * every TTL_MS and in the background, so a call never waits on a thousand stats; a create or a delete
 * sets its own figure at once, and keeps it over a measurement that began before it.
 */
export class ImageAllocation {
  /** Bytes each image had allocated when last measured or made. */
  private readonly bytes = new Map<string, number>();
  private measuredAt = -Infinity;
  /** Goes up with every change to `bytes`. */
  private version = 0;
  private sum?: { key: string; bytes: number };
  private measuring: Promise<void> | null = null;
  /** When each volume was last created or deleted, in tickets (see touched()). */
  private readonly lastTouched = new Map<string, number>();
  private ticket = 0;

  constructor(
    private readonly imageOf: (id: string) => string,
    /** For the log: the pool's directory. */
    private readonly pool: string,
  ) {}

  /** Measures now (awaited) when asked; otherwise starts a measurement in the background once the last is stale. */
  async refresh(ids: Iterable<string>, opts: { now: boolean }): Promise<void> {
    if (opts.now) return this.measure(ids);
    if (performance.now() - this.measuredAt <= TTL_MS || this.measuring) return;
    // Not awaited: a call uses the last measurement, which errs low (FilePool.capacity()).
    this.measuring = this.measure(ids)
      .catch((err: unknown) => log.warn("measuring the images' allocation failed; the last measurement stands", { pool: this.pool, error: String(err) }))
      .finally(() => (this.measuring = null));
  }

  /** What the volumes may still allocate, summed again only when the records (their version) or the figures changed. */
  unallocated(vols: ReadonlyMap<string, VolumeRecord>, recordsVersion: number): number {
    const key = `${recordsVersion}/${this.version}`;
    if (this.sum?.key !== key) {
      let sum = 0;
      for (const v of vols.values()) sum += Math.max(0, v.capacityBytes - (this.bytes.get(v.id) ?? 0));
      this.sum = { key, bytes: sum };
    }
    return this.sum.bytes;
  }

  /** A create (its image's bytes) or a delete (null) of a volume: its figure as of now. */
  touched(id: string, bytes: number | null): void {
    this.lastTouched.set(id, ++this.ticket);
    if (bytes === null) this.bytes.delete(id);
    else this.bytes.set(id, bytes);
    this.version++;
  }

  private async measure(ids: Iterable<string>): Promise<void> {
    const list = [...ids];
    const started = performance.now();
    const ticket = this.ticket + 1;
    const measured = new Map<string, number>();
    for (let i = 0; i < list.length; i += BATCH) {
      await Promise.all(
        list.slice(i, i + BATCH).map(async (id) => {
          try {
            measured.set(id, (await stat(this.imageOf(id))).blocks * 512);
          } catch (err) {
            if (errno(err) !== 'ENOENT') throw err;
          }
        }),
      );
    }
    // A newer measurement already landed: this one is older news.
    if (started < this.measuredAt) return;
    // A volume created or deleted since this measurement began keeps what its create or delete set:
    // a stat taken before it (of an image since removed and made anew) could count a new, empty
    // image as allocated and report space that is not there.
    const next = new Map<string, number>();
    for (const [id, bytes] of measured) if ((this.lastTouched.get(id) ?? -1) < ticket) next.set(id, bytes);
    for (const [id, at] of this.lastTouched) {
      if (at < ticket) this.lastTouched.delete(id);
      else if (this.bytes.has(id)) next.set(id, this.bytes.get(id)!);
    }
    this.bytes.clear();
    for (const [id, bytes] of next) this.bytes.set(id, bytes);
    this.measuredAt = started;
    this.version++;
  }
}
