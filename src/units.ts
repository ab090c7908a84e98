export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

const SUFFIX: Record<string, number> = {
  '': 1, k: 1e3, K: 1e3, M: 1e6, G: 1e9, T: 1e12,
  Ki: KiB, Mi: MiB, Gi: GiB, Ti: TiB,
};

/** Parses a byte quantity as Kubernetes writes it ("512Mi", "10G", "1073741824"). */
export function parseQuantity(text: string): number {
  const m = /^([0-9]+(?:\.[0-9]+)?)([KMGT]i?|k)?$/.exec(text.trim());
  if (!m) throw new Error(`not a byte quantity: ${JSON.stringify(text)} (use e.g. 512Mi, 10Gi, 1073741824)`);
  const bytes = Number(m[1]) * SUFFIX[m[2] ?? ''];
  if (!Number.isSafeInteger(Math.round(bytes))) throw new Error(`byte quantity too large: ${text}`);
  return Math.round(bytes);
}

export function roundUp(n: number, multiple: number): number {
  return Math.ceil(n / multiple) * multiple;
}

export function roundDown(n: number, multiple: number): number {
  return Math.floor(n / multiple) * multiple;
}

const DURATION_UNIT: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses a duration as Kubernetes tools write it ("90s", "10m", "1h30m", "0"), in milliseconds. */
export function parseDuration(text: string): number {
  const t = text.trim();
  if (t === '0') return 0;
  if (!/^([0-9]+(ms|s|m|h|d))+$/.test(t)) throw new Error(`not a duration: ${JSON.stringify(text)} (use e.g. 30s, 10m, 1h30m, 0)`);
  let ms = 0;
  for (const m of t.matchAll(/([0-9]+)(ms|s|m|h|d)/g)) ms += Number(m[1]) * DURATION_UNIT[m[2]];
  return ms;
}
