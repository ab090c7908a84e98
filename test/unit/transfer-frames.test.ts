import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, it } from 'node:test';
import { endFrame, frame, FrameReader, MAX_FRAME } from '../../src/transfer/wire.js';

const KiB = 1024;

/** A well-formed transfer body of these chunks, as the sender writes it (server.ts): frames, then the end with the digest of all before it. */
function body(chunks: Array<{ offset: number; data: Buffer }>): { bytes: Buffer; parts: Buffer[] } {
  const hash = createHash('sha256');
  const parts: Buffer[] = [];
  for (const c of chunks) {
    const h = frame({ offset: c.offset, data: c.data });
    hash.update(h);
    hash.update(c.data);
    parts.push(h, c.data);
  }
  parts.push(endFrame(hash.digest()));
  return { bytes: Buffer.concat(parts), parts };
}

async function read(size: number, stream: Buffer, pieces = 7): Promise<{ reader: FrameReader; got: Map<number, Buffer> }> {
  const got = new Map<number, Buffer>();
  const reader = new FrameReader(size, async (offset, data) => void got.set(offset, Buffer.from(data)));
  for (let i = 0; i < stream.length; i += pieces) await reader.push(stream.subarray(i, i + pieces));
  return { reader, got };
}

describe('the transfer frame reader refuses every malformed stream', () => {
  const chunks = [
    { offset: 0, data: Buffer.alloc(3 * KiB, 1) },
    { offset: 64 * KiB, data: Buffer.alloc(5 * KiB, 2) },
  ];

  it('the control: a well-formed stream in small pieces arrives whole and complete', async () => {
    const { reader, got } = await read(128 * KiB, body(chunks).bytes);
    assert.equal(reader.complete, true);
    assert.equal(reader.bytes, 8 * KiB);
    assert.deepEqual([...got.keys()], [0, 64 * KiB]);
    assert.ok(got.get(64 * KiB)!.equals(chunks[1].data));
  });

  it('a flipped byte in the data, or a digest for other data: the checksum does not match', async () => {
    const good = body(chunks).bytes;
    const flipped = Buffer.from(good);
    flipped[12 + 100] ^= 0xff;
    await assert.rejects(read(128 * KiB, flipped), /checksum does not match/);
    const other = body([{ offset: 0, data: Buffer.alloc(3 * KiB, 9) }, chunks[1]]);
    const swapped = Buffer.concat([good.subarray(0, good.length - 32), other.bytes.subarray(other.bytes.length - 32)]);
    await assert.rejects(read(128 * KiB, swapped), /checksum does not match/);
    // An offset changed in a header: same bytes elsewhere, caught by the digest over the headers too.
    const moved = Buffer.from(good);
    moved.writeBigUInt64BE(BigInt(4 * KiB), 0);
    await assert.rejects(read(128 * KiB, moved), /checksum does not match/);
  });

  it('a frame longer than the largest the sender writes, an empty one, or one past the volume\'s end: refused at its header', async () => {
    const head = (offset: bigint, length: number) => {
      const h = Buffer.alloc(12);
      h.writeBigUInt64BE(offset, 0);
      h.writeUInt32BE(length, 8);
      return h;
    };
    const size = 64 * 1024 * 1024;
    await assert.rejects(read(size, head(0n, MAX_FRAME + 1)), new RegExp(`a frame of ${MAX_FRAME + 1} bytes at 0 does not fit`));
    await assert.rejects(read(size, head(0n, 0)), /a frame of 0 bytes at 0 does not fit/);
    await assert.rejects(read(128 * KiB, head(BigInt(127 * KiB), 2 * KiB)), /does not fit a 131072-byte volume/);
    await assert.rejects(read(size, head(2n ** 63n, 1)), /does not fit/);
    // An end frame that is not 32 bytes of digest.
    await assert.rejects(read(size, head(2n ** 64n - 1n, 16)), /a malformed end of the transfer/);
  });

  it('bytes after the end frame: refused, in the same piece or a later one', async () => {
    const good = body(chunks).bytes;
    await assert.rejects(read(128 * KiB, Buffer.concat([good, Buffer.from('x')]), good.length + 1), /data after the end of the transfer/);
    const { reader } = await read(128 * KiB, good);
    await assert.rejects(reader.push(Buffer.from('more')), /data after the end of the transfer/);
  });

  it('a stream cut anywhere before its end is never complete, whatever it wrote', async () => {
    const good = body(chunks).bytes;
    for (const cut of [0, 5, 12, 12 + 3 * KiB, good.length - 33, good.length - 1]) {
      const { reader } = await read(128 * KiB, good.subarray(0, cut));
      assert.equal(reader.complete, false, `cut at ${cut} of ${good.length}`);
    }
  });
});
