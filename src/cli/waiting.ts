import { humanDuration } from './view/age.js';

/**
 * What a person sees while the driver works on a long call (a restore, a copy, an expansion, a stage):
 * after a second, on a terminal, one line redrawn with the time so far; otherwise a line every 10 s
 * (what a log keeps). Ctrl-C cancels the call: the driver's handler sees it end, and a create or
 * stage is safe to run again (CSI calls are idempotent).
 */
export function whileWaiting<T>(what: string, work: Promise<T>, out: NodeJS.WriteStream = process.stderr, everyMs = 10_000): Promise<T> {
  const started = Date.now();
  const tty = !!out.isTTY;
  let shown = false;
  const line = () => `${what}: waiting for the driver, ${humanDuration(Date.now() - started)} so far (Ctrl-C stops waiting and cancels the call)`;
  const tick = () => {
    shown = true;
    out.write(tty ? `\r\x1b[K${line()}` : `${line()}\n`);
  };
  const first = setTimeout(
    () => {
      tick();
      timer = setInterval(tick, tty ? 1000 : everyMs);
    },
    tty ? 1000 : everyMs,
  );
  let timer: NodeJS.Timeout | undefined;
  const stop = () => {
    clearTimeout(first);
    clearInterval(timer);
    if (shown && tty) out.write('\r\x1b[K');
  };
  return work.finally(stop);
}
