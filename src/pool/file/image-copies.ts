import { constants } from 'node:fs';
import { access, open, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { notFound, precondition } from '../../errors.js';
import { run } from '../../exec.js';
import { loopsBackedBy } from '../../host/loop.js';
import { log } from '../../log.js';
import { progressReporter } from '../../operations.js';

/** How an image may be copied: plainly (a sparse copy, a reflink where one can be had, or read in place), or only by a reflink. */
export type CopyMode = 'plain' | 'reflink';

/** Copies of a file pool's images, each of one point in time or refused. */
export class ImageCopies {
  private reflinks?: Promise<boolean>;

  constructor(
    private readonly root: string,
    private readonly tmpDir: string,
  ) {}

  /**
   * How a volume's image can be copied as of one instant, decided before anything is made: a
   * detached one by any copy (nothing writes it while the caller holds its lock, which staging takes
   * too); an attached one (a loop device backs it) only by a reflink, which the filesystem makes
   * atomically. Where the pool's filesystem cannot reflink (ext4), a copy made while a workload
   * writes would mix old and new blocks: refused.
   */
  async mode(image: string, id: string, what: string): Promise<CopyMode> {
    if ((await loopsBackedBy(image)).length === 0) return 'plain';
    if (await this.canReflink()) return 'reflink';
    throw precondition(
      `volume ${id} is attached (a workload may be writing it) and the pool's filesystem at ${this.root} cannot reflink, so ${what} would not be a copy of one point in time; ` +
        'take a VolumeSnapshot of it while the workload is quiesced and restore from that, or detach it (stop the pod) first, or put the pool on a filesystem with reflink (XFS, btrfs)',
    );
  }

  /** A reflink where asked (or where the filesystem can: XFS and btrfs, instant), else a sparse copy. */
  async copy(from: string, to: string, source: { kind: string; id: string }, mode: CopyMode, timeoutMs = 30 * 60_000): Promise<void> {
    try {
      await access(from, constants.R_OK);
    } catch {
      throw notFound(`${source.kind} ${source.id} has no image`);
    }
    // A reflink shares the source's extents, holes included: cp takes no --sparse with it.
    const watching = watchCopy(from, to);
    try {
      await run('cp', [...(mode === 'reflink' ? ['--reflink=always'] : ['--reflink=auto', '--sparse=always']), '--', from, to], { timeoutMs });
      // cp wrote into the page cache: the caller's sync that follows is most of a large copy's time.
      watching?.syncing();
    } finally {
      watching?.stop();
    }
  }

  /** Whether the pool's filesystem reflinks: one small file cloned in .tmp (swept at start), asked once. */
  canReflink(): Promise<boolean> {
    this.reflinks ??= (async () => {
      const probe = path.join(this.tmpDir, `reflink-probe-${process.pid}`);
      try {
        const fh = await open(probe, 'w', 0o600);
        await fh.write(Buffer.alloc(64 * 1024, 1)).finally(() => fh.close());
        await run('cp', ['--reflink=always', '--', probe, `${probe}.clone`], { timeoutMs: 30_000 });
        return true;
      } catch (err) {
        log.info("the pool's filesystem cannot reflink: attached volumes are not copied", { root: this.root, err: String(err) });
        return false;
      } finally {
        await rm(probe, { force: true });
        await rm(`${probe}.clone`, { force: true });
      }
    })();
    return this.reflinks;
  }
}

/** A watcher's stat under way, in this process: one at most, whatever the copies, so a pool disk that stops answering holds one libuv thread for them all. */
let statting = false;

/**
 * How far a sparse copy has come, for a client waiting on it (operations.ts): the bytes the copy
 * holds against those its source holds, read twice a second while cp runs.
 */
function watchCopy(from: string, to: string): { stop(): void; syncing(): void } | null {
  const progress = progressReporter();
  if (!progress) return null;
  let total: number | undefined;
  const tick = async () => {
    if (statting) return;
    statting = true;
    try {
      total ??= (await stat(from)).blocks * 512;
      progress.bytes((await stat(to)).blocks * 512, total);
    } catch {
      // Not made yet, or gone: the next tick reads again.
    } finally {
      statting = false;
    }
  };
  const timer = setInterval(() => void tick(), 500);
  timer.unref();
  return { stop: () => clearInterval(timer), syncing: () => progress.syncing() };
}
