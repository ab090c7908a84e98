import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { syscalls, type SeekFn } from '../host/syscalls.js';
import { fileRanges } from '../host/file-ranges.js';
import { ALIGN, AlignedBuffers } from '../host/aligned.js';

/** A run of a volume's bytes that holds data; everything between runs reads as zeros. */
export interface Chunk {
  offset: number;
  data: Buffer;
}

const CHUNK = 1024 * 1024;
const BLOCK = 64 * 1024;
const READ_AHEAD = 4;

/**
 * A volume's data, chunk by chunk, leaving out what is known to read as zeros: the holes of a sparse
 * file (SEEK_DATA/SEEK_HOLE, no read at all), and blocks of zeros anywhere else (a block device, or a
 * filesystem that cannot tell): those are read and skipped. `size` is the volume's size.
 *
 * Aligned reads go around the page cache (O_DIRECT into aligned, reused buffers), so sending a
 * volume neither copies it through the node's memory nor pushes its workloads' data out of it. A
 * chunk's `written`, when set, is to be called once that chunk (the last of its read) has gone to the
 * socket: its buffer is then read into again.
 *
 * `seek` replaces lseek(2) for the range walk (a test makes it fail the way a filesystem that
 * refuses SEEK_DATA does); by default the syscall layer's.
 */
export async function* dataChunks(
  path: string,
  size: number,
  opts: { file: boolean; seek?: SeekFn },
): AsyncGenerator<Chunk & { written?: () => void }> {
  const fh = await open(path, 'r');
  const direct = await open(path, constants.O_RDONLY | constants.O_DIRECT).catch(() => null);
  const buffers = new AlignedBuffers((await syscalls())?.address ?? null, CHUNK, READ_AHEAD * 3);
  let useDirect = direct !== null;
  try {
    const ranges = opts.file ? await fileRanges(fh, size, opts.seek ?? (await syscalls())?.seek) : null;
    // Reads ahead (READ_AHEAD chunks in flight on the thread pool) so the disk is busy while a chunk is sent.
    const reads = (function* () {
      for (const [start, end] of ranges ?? [[0, size] as const]) {
        for (let at = start; at < end; at += CHUNK) yield { at, want: Math.min(CHUNK, end - at) };
      }
    })();
    const read = async (r: { at: number; want: number }) => {
      const buf = buffers.get(r.want);
      let bytesRead: number | undefined;
      if (useDirect && r.at % ALIGN === 0 && r.want % ALIGN === 0 && buffers.aligned(buf)) {
        bytesRead = await direct!.read(buf, 0, r.want, r.at).then(
          (x) => x.bytesRead,
          (err: NodeJS.ErrnoException) => {
            if (err.code !== 'EINVAL') throw err;
            useDirect = false; // this filesystem or device wants another alignment: read through the cache from here on
            return undefined;
          },
        );
      }
      bytesRead ??= (await fh.read(buf, 0, r.want, r.at)).bytesRead;
      return { ...r, buf: buf.subarray(0, bytesRead), whole: buf };
    };
    const inFlight: Array<ReturnType<typeof read>> = [];
    const refill = () => {
      while (inFlight.length < READ_AHEAD) {
        const next = reads.next();
        if (next.done) return;
        const p = read(next.value);
        p.catch(() => undefined); // handled where it is awaited; a read failing while a chunk is sent must not count as unhandled
        inFlight.push(p);
      }
    };
    try {
      refill();
      while (inFlight.length) {
        const got = await inFlight.shift()!;
        const short = got.buf.length < got.want;
        // Shorter than the size said (a file cut while read): what was read goes, the rest does not exist.
        if (!short) refill();
        const chunks = [...nonZero(got.at, got.buf)];
        if (chunks.length === 0) buffers.put(got.whole);
        for (const [i, c] of chunks.entries()) yield i === chunks.length - 1 ? { ...c, written: () => buffers.put(got.whole) } : c;
        if (short) break;
      }
    } finally {
      // Reads still on the thread pool finish before the file is closed under them.
      await Promise.allSettled(inFlight);
    }
  } finally {
    await direct?.close();
    await fh.close();
  }
}

/** The runs of a buffer that are not whole zero blocks. */
function* nonZero(offset: number, buf: Buffer): Generator<Chunk> {
  let runStart = -1;
  for (let b = 0; b < buf.length; b += BLOCK) {
    const block = buf.subarray(b, Math.min(b + BLOCK, buf.length));
    const zero = isZero(block);
    if (!zero && runStart < 0) runStart = b;
    if (zero && runStart >= 0) {
      yield { offset: offset + runStart, data: buf.subarray(runStart, b) };
      runStart = -1;
    }
  }
  if (runStart >= 0) yield { offset: offset + runStart, data: buf.subarray(runStart) };
}

const ZEROS = Buffer.alloc(BLOCK);
function isZero(block: Buffer): boolean {
  return block.length === BLOCK ? block.equals(ZEROS) : block.equals(ZEROS.subarray(0, block.length));
}
