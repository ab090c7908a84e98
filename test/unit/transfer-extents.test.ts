import assert from 'node:assert/strict';
import { open, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { syscalls, type SeekFn } from '../../src/host/syscalls.js';
import { dataChunks } from '../../src/transfer/extents.js';
import { MiB, pattern, tempDir } from '../helpers/driver.js';

/** Bytes this process has passed through read(2)/pread(2) so far (the thread pool's reads count: same process). */
async function bytesRead(): Promise<number> {
  const io = await readFile('/proc/self/io', 'utf8');
  return Number(/^rchar: (\d+)$/m.exec(io)![1]);
}

/** What the chunks say the file holds: the chunks' bytes at their offsets, zeros elsewhere. */
async function restore(file: string, size: number, seek?: SeekFn): Promise<{ bytes: Buffer; sent: number }> {
  const bytes = Buffer.alloc(size);
  let sent = 0;
  for await (const c of dataChunks(file, size, { file: true, seek })) {
    c.data.copy(bytes, c.offset);
    sent += c.data.length;
    c.written?.();
  }
  return { bytes, sent };
}

/**
 * A sparse file on the tests' disk (ext4 here, which answers SEEK_DATA): data at 0 and at 40 MiB,
 * holes between and a long hole at the end.
 */
async function withSparse(fn: (file: string, size: number, source: Buffer) => Promise<void>): Promise<void> {
  const dir = await tempDir('vpool-extents-');
  const file = path.join(dir, 'image');
  const size = 160 * MiB;
  const source = Buffer.alloc(size);
  pattern('head', 3 * MiB + 4096).copy(source, 0);
  pattern('middle', 2 * MiB).copy(source, 40 * MiB);
  try {
    const fh = await open(file, 'w');
    await fh.write(source, 0, 3 * MiB + 4096, 0);
    await fh.write(source, 40 * MiB, 2 * MiB, 40 * MiB);
    await fh.truncate(size);
    await fh.close();
    await fn(file, size, source);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe('the data-range walk of a file sent to a peer (real sparse files)', () => {
  for (const errno of ['EINVAL', 'EOPNOTSUPP']) {
    it(`reads the whole file when SEEK_DATA fails with ${errno}: the chunks hold the source's bytes exactly, never silent zeros`, async () => {
      await withSparse(async (file, size, source) => {
        const calls: string[] = [];
        const refusing: SeekFn = (_fd, _offset, whence) => {
          calls.push(whence);
          return { errno };
        };
        const before = await bytesRead();
        const { bytes, sent } = await restore(file, size, refusing);
        const read = (await bytesRead()) - before;
        assert.deepEqual(calls, ['data'], 'the walk asked once and stopped asking');
        assert.ok(bytes.equals(source), 'the restored bytes equal the source');
        assert.equal(sent, 3 * MiB + 64 * 1024 + 2 * MiB, 'the zero blocks are still left out (the head ends in a partly written 64 KiB block)');
        assert.ok(read >= size, `the whole file was read (${read} bytes read of ${size})`);
      });
    });
  }

  it('fails SEEK_HOLE the same way: the whole file is read', async () => {
    await withSparse(async (file, size, source) => {
      const sys = await syscalls();
      assert.ok(sys, 'koffi loads here');
      const holeRefused: SeekFn = (fd, offset, whence) => (whence === 'hole' ? { errno: 'EINVAL' } : sys.seek(fd, offset, whence));
      const { bytes } = await restore(file, size, holeRefused);
      assert.ok(bytes.equals(source));
    });
  });

  it('ends the walk at ENXIO: a file with a hole at its end is sent without reading the hole', async () => {
    await withSparse(async (file, size, source) => {
      const sys = await syscalls();
      assert.ok(sys, 'koffi loads here');
      const answers: Array<{ offset: number } | { errno: string }> = [];
      const watched: SeekFn = (fd, offset, whence) => {
        const r = sys.seek(fd, offset, whence);
        answers.push(r);
        return r;
      };
      const before = await bytesRead();
      const { bytes } = await restore(file, size, watched);
      const read = (await bytesRead()) - before;
      assert.ok(bytes.equals(source), 'the restored bytes equal the source');
      assert.deepEqual(answers.at(-1), { errno: 'ENXIO' }, 'the kernel said ENXIO after the last data, and that ended the walk');
      assert.ok(read < 16 * MiB, `only the data ranges were read (${read} bytes read; the hole at the end is ${size - 42 * MiB})`);
    });
  });
});
