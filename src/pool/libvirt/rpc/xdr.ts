/**
 * XDR (RFC 4506), the encoding of libvirt's RPC messages: big-endian 4-byte units, strings and
 * variable opaque data as a length and bytes padded to 4, optional data as a boolean and the value.
 * Only what libvirt's remote protocol uses.
 */
export class XdrWriter {
  private buf = Buffer.alloc(256);
  private len = 0;

  private room(n: number): void {
    if (this.len + n <= this.buf.length) return;
    const next = Buffer.alloc(Math.max(this.buf.length * 2, this.len + n));
    this.buf.copy(next, 0, 0, this.len);
    this.buf = next;
  }

  u32(v: number): this {
    this.room(4);
    this.buf.writeUInt32BE(v >>> 0, this.len);
    this.len += 4;
    return this;
  }

  i32(v: number): this {
    this.room(4);
    this.buf.writeInt32BE(v, this.len);
    this.len += 4;
    return this;
  }

  /** unsigned hyper; sizes in bytes stay below 2^53 */
  u64(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError(`not an unsigned 64-bit size: ${v}`);
    this.room(8);
    this.buf.writeBigUInt64BE(BigInt(v), this.len);
    this.len += 8;
    return this;
  }

  /** fixed-length opaque (a UUID) */
  fixed(bytes: Buffer): this {
    this.room(bytes.length + 3);
    bytes.copy(this.buf, this.len);
    this.len += bytes.length;
    this.pad(bytes.length);
    return this;
  }

  string(s: string): this {
    const bytes = Buffer.from(s, 'utf8');
    this.u32(bytes.length);
    return this.fixed(bytes);
  }

  optionalString(s: string | null): this {
    if (s === null) return this.u32(0);
    return this.u32(1).string(s);
  }

  private pad(n: number): void {
    const p = (4 - (n % 4)) % 4;
    this.buf.fill(0, this.len, this.len + p);
    this.len += p;
  }

  bytes(): Buffer {
    return this.buf.subarray(0, this.len);
  }
}

export class XdrReader {
  private pos = 0;
  constructor(private readonly buf: Buffer) {}

  private need(n: number): void {
    if (this.pos + n > this.buf.length) throw new RangeError(`XDR data ends at ${this.buf.length}, ${n} more bytes wanted at ${this.pos}`);
  }

  u32(): number {
    this.need(4);
    const v = this.buf.readUInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  i32(): number {
    this.need(4);
    const v = this.buf.readInt32BE(this.pos);
    this.pos += 4;
    return v;
  }

  /** unsigned hyper, as the writer takes it: a value past 2^53 - 1 would lose its low bits in a number, so it is an error, never a near value. */
  u64(): number {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`an unsigned 64-bit value of ${v} at byte ${this.pos} is past what the driver holds exactly (2^53 - 1)`);
    this.pos += 8;
    return Number(v);
  }

  /**
   * An unsigned hyper that may be past 2^53 by nature, not by error: a pool's sizes on a filesystem
   * that reports "unlimited" (NFS, EFS: exabytes). Held as 2^53 - 1, which no decision here can tell apart.
   */
  u64Saturating(): number {
    this.need(8);
    const v = this.buf.readBigUInt64BE(this.pos);
    this.pos += 8;
    return v > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(v);
  }

  bool(): boolean {
    return this.u32() !== 0;
  }

  fixed(n: number): Buffer {
    this.need(n);
    const v = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n + ((4 - (n % 4)) % 4);
    return v;
  }

  string(): string {
    const n = this.u32();
    return this.fixed(n).toString('utf8');
  }

  optionalString(): string | null {
    return this.bool() ? this.string() : null;
  }

  array<T>(item: (r: XdrReader) => T): T[] {
    const n = this.u32();
    const out: T[] = [];
    for (let i = 0; i < n; i++) out.push(item(this));
    return out;
  }

  optional<T>(item: (r: XdrReader) => T): T | null {
    return this.bool() ? item(this) : null;
  }
}
