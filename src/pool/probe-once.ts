import { callSignal, detached } from '../call-context.js';
import { cancelled, unavailable } from '../errors.js';
import type { PoolBackend } from './backend.js';

/** The probe of each pool under way, which every caller meanwhile shares. */
const probing = new WeakMap<Pick<PoolBackend, 'probe'>, Promise<void>>();

/**
 * Asks the pool whether it can serve, one question at a time: the Probes, /healthz and a listing's
 * conditions asked meanwhile share the answer.
 *
 * The question runs outside the call that asked it first. A caller that gives up (the chart's
 * livenessprobe sidecar after 3 s, every 30 s; a CSI call's deadline) stops waiting, but the question
 * goes on for the others, bounded by the pool's own timeouts. Were it the caller's, its end would
 * fail every caller sharing it, and the next caller would ask again while libvirtd still held the
 * first question: each would take one of the connection's four call slots until libvirtd answered,
 * and CreateVolume would wait behind them. What is left: a libvirtd that answers no pool-info keeps one
 * slot per question that ran out of its own time (120 s), since libvirtd counts a call until it answers.
 *
 * `waitMs`: how long a caller without a call of its own (/healthz) waits.
 */
export function probePool(backend: Pick<PoolBackend, 'probe'>, opts: { waitMs?: number } = {}): Promise<void> {
  let shared = probing.get(backend);
  if (!shared) {
    shared = detached(() => backend.probe()).finally(() => probing.delete(backend));
    // Its callers may all have stopped waiting by the time it fails.
    shared.catch(() => undefined);
    probing.set(backend, shared);
  }
  return waitFor(shared, callSignal(), opts.waitMs);
}

/** `p`, or a failure once the caller's call ends or `waitMs` pass, whichever comes first. */
function waitFor(p: Promise<void>, signal: AbortSignal | undefined, waitMs: number | undefined): Promise<void> {
  if (!signal && waitMs === undefined) return p;
  return new Promise<void>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      done();
      reject(cancelled('the call ended before the pool answered its probe'));
    };
    const timer = waitMs === undefined ? undefined : setTimeout(() => {
      done();
      reject(unavailable(`the pool did not answer its probe within ${waitMs / 1000} s`));
    }, waitMs);
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
    p.then(
      () => {
        done();
        resolve();
      },
      (err: unknown) => {
        done();
        reject(err);
      },
    );
  });
}
