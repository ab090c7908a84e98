import { readdir, rm, stat } from 'node:fs/promises';
import path from 'node:path';
import { busy, errno, precondition } from '../../errors.js';
import { isId, type IdKind } from '../../ids.js';
import { loopsBackedBy } from '../../host/loop.js';
import { log } from '../../log.js';
import { createSparse } from './atomic.js';

/**
 * Images without a record: what a crash or a failed create left half-made. One is removed only when
 * no loop device reads it and the directory, asked right then, holds no record for it (another
 * process on the pool, a rolling update's old pod, may have committed one since it was listed).
 */

/** Whether a file is at the path (a dangling symlink is none: nothing could be read through it). */
async function exists(p: string): Promise<boolean> {
  return stat(p).then(
    () => true,
    (err: unknown) => {
      if (errno(err) === 'ENOENT') return false;
      throw err;
    },
  );
}

/**
 * Makes an empty sparse image at its final name (O_EXCL). One already there has no record in the
 * caller's index (checked under the volume's lock): removed first unless a loop device still reads it
 * (FAILED_PRECONDITION, nothing touched) or the directory holds its record after all (`indexStale` is
 * told, and the call is ABORTED for the CO to retry against the directory).
 */
export async function newImage(file: string, bytes: number, indexStale: () => void): Promise<void> {
  try {
    await createSparse(file, bytes);
  } catch (err) {
    if (errno(err) !== 'EEXIST') throw err;
    const loops = await loopsBackedBy(file);
    if (loops.length) throw precondition(`${file} has no volume record but is attached as ${loops.map((l) => l.device).join(', ')}: detach it (losetup -d) before creating this volume again`);
    if (await exists(file.replace(/\.img$/, '.json'))) {
      indexStale();
      throw busy(`volume ${path.basename(file, '.img')} was just committed by another process on this pool; retry`);
    }
    log.warn('removing an image left without a record before creating the volume again', { image: file });
    await rm(file, { force: true });
    await createSparse(file, bytes);
  }
}

/** At start: removes the images of `dir` whose record was never committed. */
export async function sweepImagesWithoutRecords(dir: string, kind: IdKind): Promise<void> {
  const names = new Set(await readdir(dir));
  for (const f of names) {
    const id = f.slice(0, -4);
    if (!f.endsWith('.img') || !isId(kind, id) || names.has(`${id}.json`)) continue;
    const image = path.join(dir, f);
    if ((await loopsBackedBy(image)).length) continue;
    if (await exists(path.join(dir, `${id}.json`))) continue;
    log.warn('removing an image a crash left without metadata', { image });
    await rm(image, { force: true });
  }
}
