import { Mutex } from 'async-mutex';
import { callSignal } from './call-context.js';
import { busy } from './errors.js';

/** The keys volumes, snapshots and nodes are locked by, the same for the CSI handlers and the orphan reaper. */
export const volumeLock = (id: string) => `volume/${id}`;
export const snapshotLock = (id: string) => `snapshot/${id}`;
export const groupLock = (id: string) => `group/${id}`;
export const nodeLock = (id: string) => `node/${id}`;

interface Slot {
  mutex: Mutex;
  holdersAndWaiters: number;
}

/**
 * Named locks for volumes and snapshots. Calls on one key queue, up to a bound; past the bound
 * (or after waiting too long) they get ABORTED, which every CSI sidecar retries. Several keys are
 * always taken in sorted order, so two calls can never hold one each and wait for the other.
 */
export class KeyedLocks {
  private readonly slots = new Map<string, Slot>();

  constructor(
    private readonly maxQueue = 32,
    private readonly maxWaitMs = 120_000,
  ) {}

  async with<T>(keys: readonly string[], fn: () => Promise<T>): Promise<T> {
    const sorted = [...new Set(keys)].sort();
    const taken: Array<() => void> = [];
    try {
      for (const key of sorted) taken.push(await this.acquire(key));
      return await fn();
    } finally {
      for (const release of taken.reverse()) release();
    }
  }

  /** Keys with a call holding or waiting for them (for tests and diagnostics). */
  busyKeys(): string[] {
    return [...this.slots.keys()];
  }

  private async acquire(key: string): Promise<() => void> {
    let slot = this.slots.get(key);
    if (!slot) {
      slot = { mutex: new Mutex(), holdersAndWaiters: 0 };
      this.slots.set(key, slot);
    }
    if (slot.holdersAndWaiters > this.maxQueue) {
      throw busy(`too many operations pending on ${key}; retry later`);
    }
    slot.holdersAndWaiters++;
    const s = slot;
    const done = () => {
      s.holdersAndWaiters--;
      if (s.holdersAndWaiters === 0 && this.slots.get(key) === s) this.slots.delete(key);
    };
    let timer: NodeJS.Timeout | undefined;
    // A call that is cancelled or out of time stops waiting: nobody is left to get its answer.
    const signal = callSignal();
    let onAbort: (() => void) | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(busy(`an operation on ${key} is still in progress; retry later`)), this.maxWaitMs);
      onAbort = () => reject(busy(`the call was cancelled while an operation on ${key} was in progress`));
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
    });
    const acquiring = s.mutex.acquire();
    const stopWaiting = () => {
      clearTimeout(timer);
      if (onAbort) signal?.removeEventListener('abort', onAbort);
    };
    try {
      const release = await Promise.race([acquiring, timeout]);
      stopWaiting();
      return () => {
        release();
        done();
      };
    } catch (err) {
      stopWaiting();
      // The acquire is still queued: release as soon as it is granted, so the queue moves on.
      void acquiring.then((release) => {
        release();
        done();
      });
      throw err;
    }
  }
}
