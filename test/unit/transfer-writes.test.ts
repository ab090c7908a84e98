import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { open, readFile, rm, truncate } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { syscalls } from '../../src/host/syscalls.js';
import { ALIGN, AlignedBuffers } from '../../src/host/aligned.js';
import { FrameReader, frame, endFrame } from '../../src/transfer/wire.js';
import { WriteQueue } from '../../src/transfer/write-queue.js';
import { createHash } from 'node:crypto';
import { pattern, tempDir } from '../helpers/driver.js';

const execFileP = promisify(execFile);
const KiB = 1024;

/** Bytes of a file held in the page cache (util-linux fincore). */
async function cachedBytes(file: string): Promise<number> {
  const { stdout } = await execFileP('fincore', ['--bytes', '--noheadings', '--output', 'RES', file]);
  return Number(stdout.trim());
}

async function withFile(size: number, fn: (file: string) => Promise<void>): Promise<void> {
  // On the disk the pools use (the tests' temporary directory), not a tmpfs: O_DIRECT is refused on tmpfs.
  const dir = await tempDir('vpool-writes-');
  const file = path.join(dir, 'image');
  try {
    await (await open(file, 'w')).close();
    await truncate(file, size);
    await fn(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

describe("the transfer receiver's writes (real files, O_DIRECT where the filesystem takes it)", () => {
  it('writes aligned frames around the page cache and unaligned ones through it, every byte where it belongs', async () => {
    const sys = await syscalls();
    assert.ok(sys, 'koffi loads here');
    await withFile(8 * 1024 * KiB, async (file) => {
      const buffers = new AlignedBuffers(sys.address);
      const fh = await open(file, 'r+');
      const direct = await open(file, constants.O_RDWR | constants.O_DIRECT);
      const q = new WriteQueue({ buffered: fh, direct }, buffers, 3, 2 * 1024 * KiB);
      const frames: Array<[number, Buffer]> = [
        [0, pattern('a', 1024 * KiB)], // aligned: direct
        [1024 * KiB, pattern('b', 1024 * KiB)],
        [3 * 1024 * KiB, pattern('c', 4 * KiB + 100)], // a length off the block: through the cache
        [5 * 1024 * KiB + 512, pattern('d', 8 * KiB)], // an offset off the block: through the cache
        [6 * 1024 * KiB, pattern('e', 2 * 1024 * KiB)], // larger than a pooled buffer: a buffer of its own, still aligned
      ];
      for (const [offset, data] of frames) {
        const b = buffers.get(data.length);
        data.copy(b);
        assert.equal(buffers.aligned(b), true);
        assert.equal(sys.address(b) % BigInt(ALIGN), 0n, 'the buffer starts on a 4 KiB boundary');
        await q.add(offset, b);
      }
      await q.drain();
      await direct.close();
      await fh.close();
      const got = await readFile(file);
      const want = Buffer.alloc(8 * 1024 * KiB);
      for (const [offset, data] of frames) data.copy(want, offset);
      assert.ok(got.equals(want), 'the file holds every frame at its offset, zeros elsewhere');
    });
  });

  it('a restore leaves the page cache as it found it: what went directly is not cached', async () => {
    const sys = (await syscalls())!;
    await withFile(16 * 1024 * KiB, async (file) => {
      const buffers = new AlignedBuffers(sys.address);
      const fh = await open(file, 'r+');
      const direct = await open(file, constants.O_RDWR | constants.O_DIRECT);
      const q = new WriteQueue({ buffered: fh, direct }, buffers);
      for (let at = 0; at < 16 * 1024 * KiB; at += 1024 * KiB) {
        const b = buffers.get(1024 * KiB);
        pattern(`x${at}`, 1024 * KiB).copy(b);
        await q.add(at, b);
      }
      await q.drain();
      await direct.close();
      await fh.close();
      assert.ok((await cachedBytes(file)) < 1024 * KiB, 'less than 1 MiB of 16 MiB written is cached');
      // The control: the same writes through the cache are cached (so fincore sees what it should).
      const plain = await open(file, 'r+');
      await plain.write(pattern('y', 4 * 1024 * KiB), 0, 4 * 1024 * KiB, 0);
      await plain.close();
      assert.ok((await cachedBytes(file)) >= 4 * 1024 * KiB);
    });
  });

  it('where the kernel refuses a direct write (memory not aligned as it wants), the write and all after it go through the cache', async () => {
    await withFile(4 * 1024 * KiB, async (file) => {
      // An address that lies: the pool believes every buffer aligned, the kernel finds them not and answers EINVAL.
      const buffers = new AlignedBuffers(() => 1n);
      const fh = await open(file, 'r+');
      const direct = await open(file, constants.O_RDWR | constants.O_DIRECT);
      const target = { buffered: fh, direct: direct as typeof direct | null };
      const q = new WriteQueue(target, buffers, 1);
      const data = [pattern('p', 1024 * KiB), pattern('q', 1024 * KiB)];
      for (const [i, d] of data.entries()) {
        const b = buffers.get(d.length);
        d.copy(b);
        await q.add(i * 1024 * KiB, b);
      }
      await q.drain();
      assert.equal(target.direct, null, 'direct writes were given up');
      await direct.close();
      await fh.close();
      const got = await readFile(file);
      assert.ok(got.subarray(0, 1024 * KiB).equals(data[0]) && got.subarray(1024 * KiB, 2048 * KiB).equals(data[1]));
    });
  });

  it('the frame reader copies each frame into the buffers it is given, and refuses frames out of order or overlapping', async () => {
    const sys = (await syscalls())!;
    const buffers = new AlignedBuffers(sys.address);
    const stream = (chunks: Array<{ offset: number; data: Buffer }>) => {
      const hash = createHash('sha256');
      const parts: Buffer[] = [];
      for (const c of chunks) {
        const h = frame(c);
        hash.update(h);
        hash.update(c.data);
        parts.push(h, c.data);
      }
      parts.push(endFrame(hash.digest()));
      return Buffer.concat(parts);
    };
    const got: Array<[number, Buffer]> = [];
    const reader = new FrameReader(4 * 1024 * KiB, async (o, d) => void got.push([o, d]), (n) => buffers.get(n));
    const body = stream([{ offset: 0, data: pattern('one', 64 * KiB) }, { offset: 1024 * KiB, data: pattern('two', 256 * KiB) }]);
    // Fed in TLS-record-sized pieces, as a socket gives them.
    for (let at = 0; at < body.length; at += 16 * KiB) await reader.push(body.subarray(at, at + 16 * KiB));
    assert.equal(reader.complete, true);
    assert.deepEqual(got.map(([o, d]) => [o, d.length, buffers.aligned(d)]), [[0, 64 * KiB, true], [1024 * KiB, 256 * KiB, true]]);
    assert.ok(got[1][1].equals(pattern('two', 256 * KiB)));

    const backwards = new FrameReader(4 * 1024 * KiB, async () => undefined);
    await assert.rejects(backwards.push(stream([{ offset: 1024 * KiB, data: pattern('a', 8 * KiB) }, { offset: 0, data: pattern('b', 8 * KiB) }])), /overlaps or comes before/);
    const overlapping = new FrameReader(4 * 1024 * KiB, async () => undefined);
    await assert.rejects(overlapping.push(stream([{ offset: 0, data: pattern('a', 8 * KiB) }, { offset: 4 * KiB, data: pattern('b', 8 * KiB) }])), /overlaps or comes before/);
  });
});
