import type { Driver } from './driver.js';

/** Every sample of a metric family in Prometheus text, by its label set as written. */
export function samples(text: string, name: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    const m = new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`).exec(line);
    if (m) out.set(m[1] ?? '', Number(m[2]));
  }
  return out;
}

/** The base URL of a driver started with --metrics-address 127.0.0.1:0 (the port it logged). */
export function httpBase(d: Driver): string {
  const line = d.logs.find((l) => l.includes('"serving http"'));
  if (!line) throw new Error('the driver serves no http endpoint');
  return `http://127.0.0.1:${(JSON.parse(line) as { port: number }).port}`;
}
