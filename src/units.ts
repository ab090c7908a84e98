export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;
export const TiB = 1024 * GiB;

// Kubernetes' quantity suffixes (apimachinery resource/suffix.go): binary powers of 1024, decimal powers
// of 10 (n, u and m included, as its parser accepts them). "K" is not one of them.
const BINARY: Record<string, bigint> = { Ki: 1n, Mi: 2n, Gi: 3n, Ti: 4n, Pi: 5n, Ei: 6n };
const DECIMAL: Record<string, number> = { n: -9, u: -6, m: -3, '': 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
// <signedNumber><suffix>: a number is digits, digits "." digits, digits "." or "." digits; the suffix a
// binary or decimal SI one, or "e"/"E" and a signed whole exponent. No spaces anywhere.
const QUANTITY = /^([+-]?)([0-9]*)(?:\.([0-9]*))?(.*)$/;
const EXPONENT = /^[eE]([+-]?[0-9]+)$/;
const HINT = '(a Kubernetes quantity: e.g. 512Mi, 10Gi, 1G, 1e9, 1073741824)';

/**
 * Parses a byte quantity as Kubernetes' own parser reads it ("512Mi", "10G", "1.5Gi", "1e9",
 * "1073741824"), refusing anything else with the reason. One difference: Kubernetes reads a quantity
 * with no digits at all ("Gi", ".", "e3") as 0; for a size that is a mistake, refused here. A fraction of a byte rounds up, as Kubernetes'
 * Value() does. Arithmetic is exact (integers), so "0.1Gi" is not off by a float's rounding.
 */
export function parseQuantity(text: string): number {
  const m = QUANTITY.exec(text);
  const whole = m?.[2] ?? '';
  const frac = m?.[3] ?? '';
  if (!m || (whole === '' && frac === '')) throw new Error(`not a byte quantity: ${JSON.stringify(text)}: it must start with a number ${HINT}`);
  const suffix = m[4];
  let num = BigInt(whole + frac || '0');
  let den = 10n ** BigInt(frac.length);
  let power10 = 0;
  if (Object.hasOwn(BINARY, suffix)) num *= 1024n ** BINARY[suffix];
  else if (Object.hasOwn(DECIMAL, suffix)) power10 = DECIMAL[suffix];
  else {
    const e = EXPONENT.exec(suffix);
    if (!e) throw new Error(`not a byte quantity: ${JSON.stringify(text)}: ${JSON.stringify(suffix)} is not a suffix Kubernetes knows (Ki Mi Gi Ti Pi Ei, n u m k M G T P E, or e<exponent>) ${HINT}`);
    // Beyond these the result is either zero bytes rounded up to one or far past any disk: said as too large below.
    power10 = Math.max(-400, Math.min(400, Number(e[1])));
  }
  if (power10 >= 0) num *= 10n ** BigInt(power10);
  else den *= 10n ** BigInt(-power10);
  if (m[1] === '-' && num !== 0n) throw new Error(`not a byte quantity: ${JSON.stringify(text)} is negative`);
  const bytes = (num + den - 1n) / den;
  if (bytes > BigInt(Number.MAX_SAFE_INTEGER)) throw new Error(`byte quantity too large: ${text} (at most 8Pi, ${Number.MAX_SAFE_INTEGER} bytes)`);
  return Number(bytes);
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

const BINARY_UNITS = ['Ki', 'Mi', 'Gi', 'Ti', 'Pi', 'Ei'];

/**
 * A byte count as a person reads it, in the binary units Kubernetes writes: "0", "512", "768Mi",
 * "1Gi", "2.5Ti", "69.4Gi". The largest unit the count reaches; one decimal, rounded, only where the
 * count is not a whole number of that unit (so a size that is exact reads exact, as in a claim).
 */
export function formatBytes(bytes: number): string {
  if (!Number.isFinite(bytes) || bytes < 1024) return String(Math.max(0, Math.round(bytes)));
  let unit = -1;
  let v = bytes;
  while (v >= 1024 && unit < BINARY_UNITS.length - 1) {
    v /= 1024;
    unit++;
  }
  if (Number.isInteger(v)) return `${v}${BINARY_UNITS[unit]}`;
  let tenths = Math.round(v * 10);
  // 1023.96Mi rounds to 1024.0Mi: that is 1Gi.
  if (tenths >= 10240 && unit < BINARY_UNITS.length - 1) {
    tenths = Math.round(tenths / 1024);
    unit++;
  }
  return tenths % 10 === 0 ? `${tenths / 10}${BINARY_UNITS[unit]}` : `${(tenths / 10).toFixed(1)}${BINARY_UNITS[unit]}`;
}

/** Two byte counts side by side in an error ("69.4Gi free, 5Ti asked"): exact bytes as well when the short forms would read alike. */
export function formatBytesPair(a: number, b: number): [string, string] {
  const fa = formatBytes(a);
  const fb = formatBytes(b);
  return fa === fb && a !== b ? [`${fa} (${a} bytes)`, `${fb} (${b} bytes)`] : [fa, fb];
}
