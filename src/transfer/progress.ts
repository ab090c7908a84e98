/**
 * The bounds of one stream, the same on both sides. A timer that resets on every byte lets a peer
 * that trickles a byte a minute hold the locks of a transfer forever; so a stall is a stall window
 * (--transfer-stall-timeout) in which less than MIN_PROGRESS moved, and every transfer also has an
 * overall deadline (--transfer-timeout), whatever its progress.
 */
export const MIN_PROGRESS = 1024 * 1024;

export interface StreamBounds {
  /** The stall window, ms; 0: no stall check. */
  stallMs: number;
  /** The overall deadline, ms from the guard's start. */
  deadlineMs: number;
}

export const seconds = (ms: number) => `${Number((ms / 1000).toFixed(3))} s`;

/**
 * Calls `fail` once: at the deadline, or at the end of a stall window in which less than MIN_PROGRESS
 * moved. Progress is read once per window (a counter the caller keeps), so the stream's per-chunk path
 * pays nothing for it. `waiting` says whether the stream waited on the peer in that window: a sender
 * with nothing queued (reading a long run of zeros it need not send) is not stalled by its receiver.
 */
export function guardStream(b: StreamBounds, fail: (err: Error) => void): { watch(moved: () => number, waiting?: () => boolean): void; stop(): void } {
  let failed = false;
  const once = (err: Error) => {
    if (failed) return;
    failed = true;
    stop();
    fail(err);
  };
  const deadline = setTimeout(() => once(new Error(`the transfer ran past its deadline of ${seconds(b.deadlineMs)} (--transfer-timeout)`)), b.deadlineMs);
  deadline.unref();
  let window: NodeJS.Timeout | undefined;
  const stop = () => {
    clearTimeout(deadline);
    clearInterval(window);
  };
  return {
    watch(moved, waiting = () => true) {
      if (!b.stallMs || window) return;
      let last = moved();
      window = setInterval(() => {
        const now = moved();
        if (now - last < MIN_PROGRESS && waiting()) once(new Error(`less than ${MIN_PROGRESS / 1048576} MiB moved in ${seconds(b.stallMs)} (--transfer-stall-timeout): ${now - last} bytes`));
        last = now;
      }, b.stallMs);
      window.unref();
    },
    stop,
  };
}
