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
