import { open, type FileHandle } from 'node:fs/promises';
import { cancelled } from '../../errors.js';
import { fileRanges } from '../../host/file-ranges.js';
import { syscalls, type MappedExtent } from '../../host/syscalls.js';
import { log } from '../../log.js';
import type { SnapshotBlocks, SnapshotRecord } from '../backend.js';
import { clipped, physicalDelta, toBlocks, union, type ByteRange } from '../block-ranges.js';

/** What the ranges are rounded out to: the filesystems' block, and what a backup reads and writes by. */
const BLOCK = 4096;
const COMPARE_CHUNK = 1024 * 1024;
const FIEMAP_BATCH = 512;

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
  ) {}

  async *allocated(snap: SnapshotRecord, from: number, signal: AbortSignal): AsyncIterable<ByteRange> {
    const ranges = await withFile(this.imageOf(snap.id), async (fh) => (await dataRanges(fh, snap.sizeBytes)) ?? [[0, snap.sizeBytes] as const]);
    if (signal.aborted) throw cancelled('the call was cancelled');
    yield* clipped(toBlocks(ranges, BLOCK, snap.sizeBytes), from, snap.sizeBytes);
  }

  async *delta(base: SnapshotRecord, target: SnapshotRecord, from: number, signal: AbortSignal): AsyncIterable<ByteRange> {
    const end = target.sizeBytes;
    if (await this.reflinks()) {
      const maps = await Promise.all([extentMap(this.imageOf(base.id)), extentMap(this.imageOf(target.id))]);
      if (maps[0] && maps[1]) {
        if (signal.aborted) throw cancelled('the call was cancelled');
        yield* clipped(toBlocks(physicalDelta(maps[0], maps[1], base.sizeBytes, end), BLOCK, end), from, end);
        return;
      }
    }
    yield* compared(this.imageOf(base.id), base.sizeBytes, this.imageOf(target.id), end, from, signal);
  }
}

async function withFile<T>(file: string, fn: (fh: FileHandle) => Promise<T>): Promise<T> {
  const fh = await open(file, 'r');
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

async function dataRanges(fh: FileHandle, size: number): Promise<ByteRange[] | null> {
  return fileRanges(fh, size, (await syscalls())?.seek);
}

/** A file's whole extent map; null where the filesystem does not give one (then the data is compared). */
async function extentMap(file: string): Promise<MappedExtent[] | null> {
  const sys = await syscalls();
  if (!sys) return null;
  return withFile(file, async (fh) => {
    const extents: MappedExtent[] = [];
    let at = 0;
    for (;;) {
      const got = sys.fiemap(fh.fd, at, FIEMAP_BATCH);
      if ('errno' in got) {
        log.info('the filesystem does not map the snapshot image; comparing its data instead', { file, errno: got.errno });
        return null;
      }
      extents.push(...got.extents);
      const lastOne = got.extents.at(-1);
      if (got.last || !lastOne) return extents;
      at = lastOne.logical + lastOne.length;
    }
  });
}

/** Where two images differ, read and compared block by block over the union of their data ranges (past the base's end it reads zeros). */
async function* compared(basePath: string, baseSize: number, targetPath: string, end: number, from: number, signal: AbortSignal): AsyncGenerator<ByteRange> {
  const base = await open(basePath, 'r');
  try {
    const target = await open(targetPath, 'r');
    try {
      const a = (await dataRanges(base, baseSize)) ?? [[0, baseSize] as const];
      const b = (await dataRanges(target, end)) ?? [[0, end] as const];
      const bufA = Buffer.alloc(COMPARE_CHUNK);
      const bufB = Buffer.alloc(COMPARE_CHUNK);
      // The run of changed blocks being gathered: handed on once a block that did not change ends it.
      let run: [number, number] | null = null;
      for (const [s, e] of clipped(toBlocks(union(a, b), BLOCK, end), from, end)) {
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
      if (run) yield [run[0], run[1]];
    } finally {
      await target.close();
    }
  } finally {
    await base.close();
  }
}
