import type { FileHandle } from 'node:fs/promises';
import { log } from '../log.js';
import { ALIGN, type AlignedBuffers } from '../host/aligned.js';

/** The file written, opened twice: through the page cache, and with O_DIRECT where the filesystem takes it. */
export interface WriteTarget {
  buffered: FileHandle;
  direct: FileHandle | null;
}

/**
 * Positional writes to one file, several on the thread pool at once, so the receiver keeps reading
 * the network while the disk works. A write whose memory, offset and length are block-aligned goes
 * around the page cache (O_DIRECT): the volume is synced at the end anyway, a copy into the cache
 * costs as much CPU as the rest of the receiving, and a restore should not push the node's workloads'
 * data out of memory. The rest (and everything, where the filesystem refuses it) goes through the cache. `add` waits only once `maxQueuedBytes` are waiting (memory is
 * bounded); the first failure is thrown by the next `add` and by `drain`. The writes must not
 * overlap (the frames' offsets only grow: wire.ts refuses any other order), so their order is free.
 */
export class WriteQueue {
  private readonly pending: Array<{ offset: number; data: Buffer }> = [];
  private active = 0;
  private queuedBytes = 0;
  private error: unknown = null;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly target: WriteTarget,
    private readonly buffers: AlignedBuffers,
    private readonly writers = 3,
    private readonly maxQueuedBytes = 32 * 1024 * 1024,
  ) {}

  async add(offset: number, data: Buffer): Promise<void> {
    if (this.error) throw this.error;
    this.pending.push({ offset, data });
    this.queuedBytes += data.length;
    this.pump();
    while (this.queuedBytes > this.maxQueuedBytes && !this.error) await new Promise<void>((r) => this.waiters.push(r));
    if (this.error) throw this.error;
  }

  /** Resolves once every write added has finished; rejects with the first failure. */
  async drain(): Promise<void> {
    while ((this.active > 0 || this.pending.length > 0) && !this.error) await new Promise<void>((r) => this.waiters.push(r));
    // Writes already on the thread pool end before the caller closes the file under them.
    while (this.active > 0) await new Promise<void>((r) => this.waiters.push(r));
    if (this.error) throw this.error;
  }

  private pump(): void {
    while (this.active < this.writers && this.pending.length > 0 && !this.error) {
      const w = this.pending.shift()!;
      this.active++;
      this.writeAll(w.offset, w.data)
        .catch((err: unknown) => {
          this.error ??= err;
        })
        .finally(() => {
          this.active--;
          this.queuedBytes -= w.data.length;
          this.buffers.put(w.data);
          this.pump();
          const waiting = this.waiters;
          this.waiters = [];
          for (const wake of waiting) wake();
        });
    }
  }

  private async writeAll(offset: number, data: Buffer): Promise<void> {
    let done = 0;
    while (done < data.length) {
      const rest = data.length - done;
      const direct = this.target.direct && this.buffers.aligned(data) && (offset + done) % ALIGN === 0 && done % ALIGN === 0 && rest % ALIGN === 0 ? this.target.direct : null;
      try {
        done += (await (direct ?? this.target.buffered).write(data, done, rest, offset + done)).bytesWritten;
      } catch (err) {
        if (!direct || (err as NodeJS.ErrnoException).code !== 'EINVAL') throw err;
        // This filesystem or device wants another alignment: the page cache takes every write from here on.
        log.info('direct writes refused; writing through the page cache', { reason: String(err) });
        this.target.direct = null;
      }
    }
  }
}
