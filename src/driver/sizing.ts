import { outOfRange } from '../errors.js';
import { MiB, roundDown, roundUp } from '../units.js';

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
  if (!required && limit && size === 0) throw outOfRange(`capacity_range.limit_bytes ${limit} is below the smallest volume (${g} bytes)`);
  if (required && size < required) throw outOfRange(`no multiple of ${g} bytes lies between required_bytes ${required} and limit_bytes ${limit}`);
  if (size > policy.maxBytes) throw outOfRange(`${size} bytes is more than the largest volume this pool supports (${policy.maxBytes})`);
  return size;
}

/** Whether an existing volume of `bytes` satisfies a range (for idempotent retries). */
export function fitsRange(bytes: number, range: Range): boolean {
  return bytes >= range.required && (!range.limit || bytes <= range.limit);
}
