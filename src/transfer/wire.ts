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
  /** The header of the frame whose data is awaited. */
  private frame: { head: Buffer; offset: bigint; length: number } | null = null;
  private done = false;
  /** Where the last frame ended: frames come in order and never overlap (the receiver writes several at once). */
  private end = 0n;
  bytes = 0;

  constructor(
    private readonly size: number,
    private readonly onChunk: (offset: number, data: Buffer) => Promise<void>,
    /** Where a frame's data is copied to (the receiver's aligned, reused buffers); by default a frame inside one piece is passed on uncopied. */
    private readonly alloc?: (n: number) => Buffer,
  ) {}

  /**
   * The next n bytes: a view of the pending piece when they lie in one and no buffer is asked for,
   * else copied once into `into(n)` (the receiver's aligned buffers) or a new buffer.
   */
  private take(n: number, into?: (n: number) => Buffer): Buffer {
    const first = this.pending[0];
    let out: Buffer;
    if (!into && first.length >= n) {
      out = first.subarray(0, n);
      if (first.length === n) this.pending.shift();
      else this.pending[0] = first.subarray(n);
    } else {
      out = (into ?? Buffer.allocUnsafe)(n);
      let got = 0;
      while (got < n) {
        const p = this.pending[0];
        const want = n - got;
        if (p.length <= want) {
          p.copy(out, got);
          this.pending.shift();
          got += p.length;
        } else {
          p.copy(out, got, 0, want);
          this.pending[0] = p.subarray(want);
          got += want;
        }
      }
    }
    this.pendingBytes -= n;
    return out;
  }

  /** Feeds bytes; throws on a malformed stream or a digest that does not match. */
  async push(buf: Buffer): Promise<void> {
    if (this.done) throw new Error('data after the end of the transfer');
    this.pending.push(buf);
    this.pendingBytes += buf.length;
    for (;;) {
      if (!this.frame) {
        if (this.pendingBytes < HEADER) return;
        const head = this.take(HEADER);
        const offset = head.readBigUInt64BE(0);
        const length = head.readUInt32BE(8);
        if (offset !== END && (length === 0 || length > MAX_FRAME || offset + BigInt(length) > BigInt(this.size))) throw new Error(`a frame of ${length} bytes at ${offset} does not fit a ${this.size}-byte volume`);
        if (offset === END && length !== 32) throw new Error('a malformed end of the transfer');
        if (offset !== END && offset < this.end) throw new Error(`a frame at ${offset} overlaps or comes before data already received (up to ${this.end})`);
        this.frame = { head, offset, length };
      }
      const { head, offset, length } = this.frame;
      if (this.pendingBytes < length) return;
      const data = this.take(length, offset !== END ? this.alloc : undefined);
      this.frame = null;
      if (offset === END) {
        if (!data.equals(this.hash.digest())) throw new Error("the transfer's checksum does not match what arrived");
        this.done = true;
        if (this.pendingBytes) throw new Error('data after the end of the transfer');
        return;
      }
      this.hash.update(head);
      this.hash.update(data);
      this.bytes += length;
      this.end = offset + BigInt(length);
      await this.onChunk(Number(offset), data);
    }
  }

  /** Whether the end frame arrived and matched. */
  get complete(): boolean {
    return this.done;
  }
}
