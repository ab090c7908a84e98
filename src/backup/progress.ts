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
    const of = this.total !== null ? ` of ${size(this.total)} (${((100 * this.done) / Math.max(1, this.total)).toFixed(0)}%)` : '';
    const line = `${this.what}: ${size(this.done)}${of}, ${size(rate)}/s${left}${final ? `, done in ${eta(secs)}` : ''}`;
    if (this.tty) this.out.write(`\r\x1b[K${line}${final ? '\n' : ''}`);
    else this.out.write(`${line}\n`);
  }
}

export function size(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  let v = n;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i ? v.toFixed(1) : v.toFixed(0)} ${units[i]}`;
}

function eta(s: number): string {
  if (!Number.isFinite(s)) return '?';
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)}s`;
  if (s < 3600) return `${Math.floor(s / 60)}m${String(Math.round(s % 60)).padStart(2, '0')}s`;
  return `${Math.floor(s / 3600)}h${String(Math.round((s % 3600) / 60)).padStart(2, '0')}m`;
}
