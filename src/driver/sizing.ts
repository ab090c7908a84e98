import { outOfRange } from '../errors.js';
import { formatBytes, MiB, roundDown, roundUp } from '../units.js';

export interface SizingPolicy {
  defaultBytes: number;
  /** Volumes are whole multiples of this (the loop device and filesystems want aligned sizes). */
  granularity: number;
  maxBytes: number;
}

export const DEFAULT_SIZING: SizingPolicy = { defaultBytes: 1024 * MiB, granularity: MiB, maxBytes: 2 ** 50 };

/** A capacity range in bytes; 0 means unset. */
export interface Range {
  required: number;
  limit: number;
}

/** The size to create: the smallest aligned size ≥ required and ≤ limit, the default when neither is set. */
export function chooseSize(range: Range, policy: SizingPolicy = DEFAULT_SIZING): number {
  const { required, limit } = range;
  const g = policy.granularity;
  let size = required ? roundUp(required, g) : policy.defaultBytes;
  if (limit && size > limit) size = roundDown(limit, g);
  if (!required && limit && size === 0) throw outOfRange(`capacity_range.limit_bytes ${formatBytes(limit)} is below the smallest volume (${formatBytes(g)}): ask for at least ${formatBytes(g)}`);
  if (required && size < required) throw outOfRange(`volumes are whole multiples of ${formatBytes(g)}, and none lies between required_bytes ${formatBytes(required)} and limit_bytes ${formatBytes(limit)} (${required} and ${limit} bytes): widen the range`);
  if (size > policy.maxBytes) throw outOfRange(`${formatBytes(size)} is more than the largest volume this pool supports (${formatBytes(policy.maxBytes)})`);
  return size;
}

/** Whether an existing volume of `bytes` satisfies a range (for idempotent retries). */
export function fitsRange(bytes: number, range: Range): boolean {
  return bytes >= range.required && (!range.limit || bytes <= range.limit);
}
