/**
 * A stream that says it is alive while its source computes: long answers (a delta that reads two
 * images) send what they found every few seconds and an empty message at least every `everyMs`, so a
 * reader's idle bound measures a silent peer, not a slow one.
 */
export const HEARTBEAT = Symbol('heartbeat');

/** The items of `source`, with HEARTBEAT whenever `everyMs` passes without one. */
export async function* withHeartbeat<T>(source: AsyncIterable<T>, everyMs: number): AsyncGenerator<T | typeof HEARTBEAT> {
  const it = source[Symbol.asyncIterator]();
  let pending: Promise<IteratorResult<T>> | null = null;
  try {
    for (;;) {
      pending ??= it.next();
      let timer: NodeJS.Timeout | undefined;
      const tick = new Promise<typeof HEARTBEAT>((resolve) => (timer = setTimeout(() => resolve(HEARTBEAT), everyMs)));
      const got = await Promise.race([pending, tick]).finally(() => clearTimeout(timer));
      if (got === HEARTBEAT) {
        yield HEARTBEAT;
        continue;
      }
      pending = null;
      if (got.done) return;
      yield got.value;
    }
  } finally {
    // The source's own cleanup (its slot, its files) once its pending step settles.
    if (pending) void pending.then(() => it.return?.(), () => undefined);
    else await it.return?.();
  }
}
