import { open, type FileHandle } from 'node:fs/promises';
import { cancelled, errno, notFound } from '../../errors.js';
import { fileRangesIn } from '../../host/file-ranges.js';
import { syscalls, type MappedExtent, type Syscalls } from '../../host/syscalls.js';
import { log } from '../../log.js';
import type { SnapshotBlocks, SnapshotRecord } from '../backend.js';
import { clipped, physicalDelta, toBlocks, union, type ByteRange } from '../block-ranges.js';

/** What the ranges are rounded out to: the filesystems' block, and what a backup reads and writes by. */
const BLOCK = 4096;
const COMPARE_CHUNK = 1024 * 1024;
const FIEMAP_BATCH = 512;
/** How much of a file's map is held at once: a window's ranges, never a whole fragmented image's. */
const WINDOW = 256 * 1024 * 1024;

/**
 * The file pool's snapshot metadata, from its snapshot images (each a copy of the volume at its
 * time: a reflink on XFS and btrfs, a sparse copy elsewhere).
 * - allocated: the image's data ranges (SEEK_DATA/SEEK_HOLE; the whole image where the filesystem
 *   cannot tell). No data is read.
 * - delta, where the pool's filesystem reflinks: the two images' extent maps (FIEMAP) compared; a
 *   block both share unchanged since is the same physical block in both. Costs metadata reads only.
 * - delta elsewhere (ext4: snapshots are full copies and share nothing): both images' data ranges
 *   read and compared block by block. Costs reading the data of both; exact to the block.
 */
export class FileSnapshotBlocks implements SnapshotBlocks {
  constructor(
    private readonly imageOf: (snapshotId: string) => string,
    private readonly reflinks: () => Promise<boolean>,
    /** How much of a file's map is held at once (smaller in tests, to cross windows). */
    private readonly window = WINDOW,
  ) {}

  async *allocated(snap: SnapshotRecord, from: number, signal: AbortSignal): AsyncIterable<ByteRange> {
    const fh = await openImage(this.imageOf(snap.id), snap.id);
    const window = this.window;
    try {
      const seek = (await syscalls())?.seek;
      yield* coalesced(
        (async function* () {
          for (const [w0, w1] of windows(from, snap.sizeBytes, window)) {
            if (signal.aborted) throw cancelled('the call was cancelled');
            const ranges = (await fileRangesIn(fh, w0, w1, seek)) ?? [[w0, w1] as const];
            yield* clipped(toBlocks(ranges, BLOCK, w1), from, w1);
          }
        })(),
      );
    } finally {
      await fh.close();
    }
  }

  async *delta(base: SnapshotRecord, target: SnapshotRecord, from: number, signal: AbortSignal): AsyncIterable<ByteRange> {
    const sys = await syscalls();
    const a = await openImage(this.imageOf(base.id), base.id);
    try {
      const b = await openImage(this.imageOf(target.id), target.id);
      try {
        const byMaps = sys !== null && (await this.reflinks());
        yield* coalesced(byMaps ? mapped(sys, a, base.sizeBytes, b, target.sizeBytes, from, this.window, signal) : compared(a, base.sizeBytes, b, target.sizeBytes, from, this.window, signal));
      } finally {
        await b.close();
      }
    } finally {
      await a.close();
    }
  }
}

/** A snapshot's image, open for the whole stream (deleted meanwhile, it is still read as it was). */
async function openImage(file: string, id: string): Promise<FileHandle> {
  return open(file, 'r').catch((err: unknown) => {
    if (errno(err) === 'ENOENT') throw notFound(`snapshot ${id} was deleted`);
    throw err;
  });
}

/** [from, end) cut at WINDOW boundaries: what is held of a file's map at once. */
function* windows(from: number, end: number, size: number): Generator<ByteRange> {
  for (let w = from; w < end; ) {
    const next = Math.min(end, (Math.floor(w / size) + 1) * size);
    yield [w, next];
    w = next;
  }
}

/** Ranges that touch across windows made one. */
async function* coalesced(ranges: AsyncIterable<ByteRange>): AsyncGenerator<ByteRange> {
  let cur: [number, number] | null = null;
  for await (const [s, e] of ranges) {
    if (cur && s <= cur[1]) cur[1] = Math.max(cur[1], e);
    else {
      if (cur) yield [cur[0], cur[1]];
      cur = [s, e];
    }
  }
  if (cur) yield [cur[0], cur[1]];
}

/** A window of a file's extent map; null where the filesystem does not give one. */
async function extentsIn(sys: Syscalls, fh: FileHandle, start: number, end: number): Promise<MappedExtent[] | null> {
  const extents: MappedExtent[] = [];
  let at = start;
  while (at < end) {
    const got = await sys.fiemap(fh.fd, at, end - at, FIEMAP_BATCH);
    if ('failed' in got) {
      log.info('the filesystem does not map the snapshot image (FIEMAP refused); comparing its data instead');
      return null;
    }
    extents.push(...got.extents);
    const lastOne = got.extents.at(-1);
    if (!got.more || !lastOne) break;
    at = lastOne.logical + lastOne.length;
  }
  return extents;
}

/** Where two reflinked images differ, from their extent maps, window by window; by their data where the filesystem gives no map. */
async function* mapped(sys: Syscalls, a: FileHandle, baseSize: number, b: FileHandle, end: number, from: number, window: number, signal: AbortSignal): AsyncGenerator<ByteRange> {
  for (const [w0, w1] of windows(from, end, window)) {
    if (signal.aborted) throw cancelled('the call was cancelled');
    const ea = w0 < baseSize ? await extentsIn(sys, a, w0, Math.min(w1, baseSize)) : [];
    const eb = await extentsIn(sys, b, w0, w1);
    if (!ea || !eb) {
      yield* compared(a, baseSize, b, end, w0, window, signal);
      return;
    }
    yield* clipped(toBlocks(physicalDelta(ea, eb, baseSize, w0, w1), BLOCK, w1), from, w1);
  }
}

/** Where two images differ, read and compared block by block over the union of their data ranges (past the base's end it reads zeros). */
async function* compared(base: FileHandle, baseSize: number, target: FileHandle, end: number, from: number, window: number, signal: AbortSignal): AsyncGenerator<ByteRange> {
  const seek = (await syscalls())?.seek;
  const bufA = Buffer.alloc(COMPARE_CHUNK);
  const bufB = Buffer.alloc(COMPARE_CHUNK);
  // The run of changed blocks being gathered: handed on once a block that did not change ends it.
  let run: [number, number] | null = null;
  for (const [w0, w1] of windows(from, end, window)) {
    const a = w0 < baseSize ? ((await fileRangesIn(base, w0, Math.min(w1, baseSize), seek)) ?? [[w0, Math.min(w1, baseSize)] as const]) : [];
    const b = (await fileRangesIn(target, w0, w1, seek)) ?? [[w0, w1] as const];
    for (const [s, e] of clipped(toBlocks(union(a, b), BLOCK, w1), from, w1)) {
      for (let at = s; at < e; at += COMPARE_CHUNK) {
        if (signal.aborted) throw cancelled('the call was cancelled');
        const want = Math.min(COMPARE_CHUNK, e - at);
        const [ra, rb] = await Promise.all([
          at < baseSize ? base.read(bufA, 0, Math.min(want, baseSize - at), at) : Promise.resolve({ bytesRead: 0 }),
          target.read(bufB, 0, want, at),
        ]);
        // What a read did not return (past a file's end) reads as zeros.
        bufA.fill(0, ra.bytesRead, want);
        bufB.fill(0, rb.bytesRead, want);
        for (let off = 0; off < want; off += BLOCK) {
          const len = Math.min(BLOCK, want - off);
          if (bufA.subarray(off, off + len).equals(bufB.subarray(off, off + len))) continue;
          if (run && run[1] === at + off) run[1] = at + off + len;
          else {
            if (run) yield [run[0], run[1]];
            run = [at + off, at + off + len];
          }
        }
      }
    }
  }
  if (run) yield [run[0], run[1]];
}
