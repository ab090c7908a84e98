import { createHash, type Hash } from 'node:crypto';
import type { Chunk } from './extents.js';

/**
 * The body of a transfer: frames of [offset u64][length u32][data], then an end frame whose offset is
 * all ones and whose 32 bytes are the SHA-256 of every byte before it. The receiver hashes as it
 * reads and accepts the volume only if the digests agree: what arrived is what was sent, offsets included.
 */
const END = 0xffffffffffffffffn;
const HEADER = 12;
export const MAX_FRAME = 4 * 1024 * 1024;

export function frame(chunk: Chunk): Buffer {
  const head = Buffer.allocUnsafe(HEADER);
  head.writeBigUInt64BE(BigInt(chunk.offset), 0);
  head.writeUInt32BE(chunk.data.length, 8);
  return head;
}

export function endFrame(digest: Buffer): Buffer {
  const head = Buffer.allocUnsafe(HEADER);
  head.writeBigUInt64BE(END, 0);
  head.writeUInt32BE(digest.length, 8);
  return Buffer.concat([head, digest]);
}

/** Reads frames from a byte stream; `onChunk` writes each, in order, before the next is read. */
export class FrameReader {
  private readonly hash: Hash = createHash('sha256');
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private done = false;
  bytes = 0;

  constructor(
    private readonly size: number,
    private readonly onChunk: (offset: number, data: Buffer) => Promise<void>,
  ) {}

  private take(n: number): Buffer | null {
    if (this.pendingBytes < n) return null;
    const all = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.pending = rest.length ? [rest] : [];
    this.pendingBytes = rest.length;
    return out;
  }

  private peek(n: number): Buffer | null {
    if (this.pendingBytes < n) return null;
    const all = this.pending.length === 1 ? this.pending[0] : Buffer.concat(this.pending);
    this.pending = [all];
    return all.subarray(0, n);
  }

  /** Feeds bytes; throws on a malformed stream or a digest that does not match. */
  async push(buf: Buffer): Promise<void> {
    if (this.done) throw new Error('data after the end of the transfer');
    this.pending.push(buf);
    this.pendingBytes += buf.length;
    for (;;) {
      const head = this.peek(HEADER);
      if (!head) return;
      const offset = head.readBigUInt64BE(0);
      const length = head.readUInt32BE(8);
      if (offset === END) {
        const whole = this.take(HEADER + length);
        if (!whole) return;
        const expected = this.hash.digest();
        if (length !== 32 || !whole.subarray(HEADER).equals(expected)) throw new Error('the transfer\'s checksum does not match what arrived');
        this.done = true;
        if (this.pendingBytes) throw new Error('data after the end of the transfer');
        return;
      }
      if (length === 0 || length > MAX_FRAME || offset + BigInt(length) > BigInt(this.size)) throw new Error(`a frame of ${length} bytes at ${offset} does not fit a ${this.size}-byte volume`);
      const whole = this.take(HEADER + length);
      if (!whole) return;
      this.hash.update(whole);
      this.bytes += length;
      await this.onChunk(Number(offset), whole.subarray(HEADER));
    }
  }

  /** Whether the end frame arrived and matched. */
  get complete(): boolean {
    return this.done;
  }
}
