import { formatBytes } from '../units.js';

/**
 * Progress of a long run on stderr: on a terminal one line redrawn (done, rate, and the time left
 * where the total is known); otherwise a line every 10 s, which a log keeps.
 */
export class Progress {
  private done = 0;
  private readonly started = performance.now();
  private last = 0;
  private readonly tty: boolean;

  constructor(
    private readonly what: string,
    private total: number | null,
    private readonly out: NodeJS.WriteStream = process.stderr,
    private readonly everyMs = 10_000,
  ) {
    this.tty = !!out.isTTY;
  }

  setTotal(total: number): void {
    this.total = total;
  }

  add(n: number): void {
    this.done += n;
    const now = performance.now();
    if (now - this.last >= (this.tty ? 200 : this.everyMs)) {
      this.last = now;
      this.print(false);
    }
  }

  end(): void {
    this.print(true);
  }

  private print(final: boolean): void {
    const secs = (performance.now() - this.started) / 1000;
    const rate = secs > 0 ? this.done / secs : 0;
    const left = this.total !== null && rate > 0 && !final ? `, ${eta((this.total - this.done) / rate)} left` : '';
    const share = this.total !== null ? Math.min(1, this.done / Math.max(1, this.total)) : null;
    const of = this.total !== null ? ` of ${size(this.total)} (${((share ?? 0) * 100).toFixed(0)}%)` : '';
    // On a terminal, a bar where the total is known: [##########..........].
    const bar = this.tty && share !== null && !final ? `[${'#'.repeat(Math.round(share * 20)).padEnd(20, '.')}] ` : '';
    const line = `${this.what}: ${bar}${size(this.done)}${of}, ${size(rate)}/s${left}${final ? `, done in ${eta(secs)}` : ''}`;
    if (this.tty) this.out.write(`\r\x1b[K${line}${final ? '\n' : ''}`);
    else this.out.write(`${line}\n`);
  }
}

/** Bytes as Kubernetes writes them (768Mi, 2.5Ti), "0B"-style for small counts so a figure is never a bare number. */
export function size(n: number): string {
  const s = formatBytes(n);
  return /[0-9]$/.test(s) ? `${s}B` : s;
}

function eta(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, '0')}m`;
}
