import { humanDuration } from './view/age.js';
import { formatBytes } from '../units.js';

/** How far the driver has come with the work of the call, as it reports it (the Inspect service's copies). */
export interface WorkSample {
  /** What is being done: "receiving snapshot snap-... from node-b". */
  doing: string;
  doneBytes: number;
  totalBytes: number;
  /** Every byte is written; the driver waits for the disk to hold them. */
  syncing: boolean;
  /** When the driver began this copy: another start (a retry's own copy) is another copy, counted afresh. */
  startedAt: string;
}

/**
 * What a person sees while the driver works on a long call (a restore, a copy, an expansion, a stage):
 * after a second, on a terminal, one line redrawn; otherwise a line every 10 s (what a log keeps). Where
 * the driver reports how far the work has come (`probe`, one ask at a time: every second on a terminal,
 * every 5 s for a log), the line is a bar with the bytes, the rate and the time left, then says when
 * the copy waits for the disk; otherwise the time so far. Ctrl-C cancels
 * the call: the driver's handler sees it end, and a create or stage is safe to run again (CSI calls
 * are idempotent).
 */
export function whileWaiting<T>(what: string, work: Promise<T>, out: NodeJS.WriteStream = process.stderr, everyMs = 10_000, probe?: () => Promise<WorkSample | null>): Promise<T> {
  const started = Date.now();
  const tty = !!out.isTTY;
  let shown = false;
  let first: { at: number; done: number; startedAt: string } | undefined;
  let latest: { at: number; sample: WorkSample } | undefined;
  const line = () => {
    const so = `${humanDuration(Date.now() - started)} so far`;
    if (!latest) return `${what}: waiting for the driver, ${so} (Ctrl-C stops waiting and cancels the call)`;
    const { doing, doneBytes, totalBytes, syncing } = latest.sample;
    if (syncing) return `${what}: ${doing}: all ${formatBytes(totalBytes)} written, waiting for the disk to hold it, ${so}`;
    const share = totalBytes > 0 ? Math.min(1, doneBytes / totalBytes) : 0;
    const secs = first && latest.at > first.at ? (latest.at - first.at) / 1000 : 0;
    const rate = secs > 0 ? (doneBytes - first!.done) / secs : 0;
    const left = rate > 0 ? `, ${humanDuration(((totalBytes - doneBytes) / rate) * 1000)} left` : '';
    const bar = tty ? `[${'#'.repeat(Math.round(share * 20)).padEnd(20, '.')}] ` : '';
    return `${what}: ${doing}: ${bar}${formatBytes(doneBytes)} of ${formatBytes(totalBytes)} (${Math.floor(share * 100)}%), ${formatBytes(rate)}/s${left}, ${so}`;
  };
  const tick = () => {
    shown = true;
    out.write(tty ? `\r\x1b[K${line()}` : `${line()}\n`);
  };
  const firstTick = setTimeout(
    () => {
      tick();
      timer = setInterval(tick, tty ? 1000 : everyMs);
    },
    tty ? 1000 : everyMs,
  );
  let timer: NodeJS.Timeout | undefined;
  let asking = false;
  let stopped = false;
  const ask = async () => {
    if (asking || stopped || !probe) return;
    asking = true;
    try {
      const sample = await probe();
      if (sample && !stopped) {
        const at = Date.now();
        if (!first || first.startedAt !== sample.startedAt || sample.doneBytes < first.done) first = { at, done: sample.doneBytes, startedAt: sample.startedAt };
        latest = { at, sample };
      }
    } catch {
      // A driver too old to report, or busy: the line says how long it has waited instead.
    } finally {
      asking = false;
    }
  };
  const asker = probe ? setInterval(() => void ask(), tty ? 1000 : Math.min(5000, everyMs / 2)) : undefined;
  void ask();
  const stop = () => {
    stopped = true;
    clearTimeout(firstTick);
    clearInterval(timer);
    clearInterval(asker);
    if (shown && tty) out.write('\r\x1b[K');
  };
  return work.finally(stop);
}
