import type { CapacityRange__Output } from '../../gen/csi/v1/CapacityRange.js';
import { invalid, outOfRange } from '../errors.js';
import type { Range } from '../driver/sizing.js';
import { formatBytes } from '../units.js';

function toBytes(field: string, text: string | undefined): number {
  if (text === undefined || text === '' || text === '0') return 0;
  const v = BigInt(text);
  if (v < 0n) throw invalid(`capacity_range.${field} must not be negative (got ${text})`);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw outOfRange(`capacity_range.${field} ${text} is beyond the largest volume this pool can hold`);
  return Number(v);
}

/** A CSI CapacityRange (int64 strings) as bytes. */
export function parseRange(range: CapacityRange__Output | null | undefined): Range {
  const required = toBytes('required_bytes', range?.required_bytes);
  const limit = toBytes('limit_bytes', range?.limit_bytes);
  if (limit && required > limit) throw invalid(`capacity_range.required_bytes ${formatBytes(required)} exceeds limit_bytes ${formatBytes(limit)} (${required} > ${limit} bytes)`);
  return { required, limit };
}
