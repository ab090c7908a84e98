/** Milliseconds one call takes. */
export async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
}

/** One line of a "driver beside the bare command" table. */
export function ratioRow(what: string, ours: number[], bareWhat: string, bare: number[]): string {
  return `${what.padEnd(26)} ${median(ours).toFixed(1).padStart(7)}   ${bareWhat.padEnd(36)} ${median(bare).toFixed(1).padStart(7)}   ratio ${(median(ours) / median(bare)).toFixed(2)}`;
}
