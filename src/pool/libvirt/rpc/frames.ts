/** libvirt's message length word counts itself and the 24-byte header: no message is shorter. */
export const HEADER_BYTES = 4 + 24;
/** virnetprotocol.x's VIR_NET_MESSAGE_MAX, which bounds a message after its 4-byte length word (virNetMessageDecodeLength). */
export const MESSAGE_MAX = 33_554_432;

/**
 * Cuts a byte stream into libvirt RPC messages (each starts with its own length). Chunks are held as
 * they came and joined once per message, when all its bytes are there: a 30 MiB reply in 64 KiB chunks
 * costs one copy, not one per chunk.
 */
export class FrameAssembler {
  private chunks: Buffer[] = [];
  private held = 0;

  /** The messages this chunk completes, in order; throws on a length no libvirt message has. */
  push(chunk: Buffer): Buffer[] {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.held += chunk.length;
    }
    const out: Buffer[] = [];
    for (;;) {
      if (this.held < 4) return out;
      const len = this.peekLength();
      if (len < HEADER_BYTES || len - 4 > MESSAGE_MAX) throw new RangeError(`libvirtd sent a message of ${len} bytes (a message is ${HEADER_BYTES} to ${MESSAGE_MAX + 4})`);
      if (this.held < len) return out;
      out.push(this.take(len));
    }
  }

  /** Bytes of an unfinished message still held. */
  get pending(): number {
    return this.held;
  }

  private peekLength(): number {
    const first = this.chunks[0];
    if (first.length >= 4) return first.readUInt32BE(0);
    // The length word itself split over chunks (rare): join just enough to read it.
    const head = Buffer.concat(this.chunks, 4);
    return head.readUInt32BE(0);
  }

  private take(len: number): Buffer {
    const first = this.chunks[0];
    if (first.length >= len) {
      // The common case, one message inside one chunk: a view, no copy.
      const message = first.subarray(0, len);
      if (first.length === len) this.chunks.shift();
      else this.chunks[0] = first.subarray(len);
      this.held -= len;
      return message;
    }
    const message = Buffer.allocUnsafe(len);
    let at = 0;
    while (at < len) {
      const c = this.chunks[0];
      const n = Math.min(c.length, len - at);
      c.copy(message, at, 0, n);
      at += n;
      if (n === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(n);
    }
    this.held -= len;
    return message;
  }
}
