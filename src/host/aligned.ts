/** What O_DIRECT asks of memory, offsets and lengths on the filesystems and devices a pool sits on (4 KiB covers 512-byte sectors too). */
export const ALIGN = 4096;

/**
 * Buffers whose bytes start on a 4 KiB boundary, reused once written: the receiver copies each frame
 * into one (it must copy anyway, a frame spans many TLS records), so the write can go to the disk
 * directly instead of through the page cache, and the same few megabytes serve the whole transfer.
 * Without an address to align on (koffi not loaded) the buffers are plain, and `aligned` says no.
 */
export class AlignedBuffers {
  private readonly free: Buffer[] = [];
  /** The start of each buffer made here, by its memory. */
  private readonly starts = new WeakMap<ArrayBufferLike, number>();

  constructor(
    private readonly address: ((b: Buffer) => bigint) | null,
    /** The size of a pooled buffer; larger requests get a buffer of their own. */
    readonly capacity = 1024 * 1024,
    private readonly keep = 48,
  ) {}

  /** A buffer of `n` bytes (contents undefined). */
  get(n: number): Buffer {
    const base = n <= this.capacity ? (this.free.pop() ?? this.make(this.capacity)) : this.make(n);
    return base.subarray(0, n);
  }

  /** Gives back a buffer from `get` once nothing reads it any more. */
  put(b: Buffer): void {
    const start = this.starts.get(b.buffer);
    if (start === undefined || b.byteOffset !== start || b.buffer.byteLength !== this.capacity + ALIGN || this.free.length >= this.keep) return;
    this.free.push(Buffer.from(b.buffer, start, this.capacity));
  }

  /** Whether a buffer's bytes start on the boundary (true only for buffers made here with an address known). */
  aligned(b: Buffer): boolean {
    return this.address !== null && this.starts.get(b.buffer) === b.byteOffset;
  }

  private make(n: number): Buffer {
    if (!this.address) return Buffer.allocUnsafeSlow(n);
    const raw = Buffer.allocUnsafeSlow(n + ALIGN);
    const start = Number((BigInt(ALIGN) - (this.address(raw) % BigInt(ALIGN))) % BigInt(ALIGN));
    this.starts.set(raw.buffer, start);
    return Buffer.from(raw.buffer, start, n);
  }
}
