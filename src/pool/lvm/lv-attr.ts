/**
 * lv_attr's ten characters, as lvs(8) documents them, in named fields: the rest of the lvm code
 * reads `attr.open`, never `lv_attr[5]`.
 */
export interface LvAttr {
  /** 1: (m)irrored, (o)rigin, (s)napshot, (t)hin pool, (V)irtual thin volume, (-) plain, ... */
  volumeType: string;
  /** 2: writable, read-only, or read-only activation of a writable volume. */
  permissions: 'writable' | 'read-only' | 'read-only-activation' | 'unknown';
  /** 5: active, inactive, suspended, or another state (invalid snapshot, mapped device present without tables, ...). */
  state: 'active' | 'inactive' | 'suspended' | 'other';
  /** 6: the device is open (mounted, or held by a process or another device). */
  open: boolean;
  /** 9: a health flag, or null when healthy (or unknown, 'X', which lvs prints for inactive LVs). */
  health: string | null;
}

const PERMISSIONS: Record<string, LvAttr['permissions']> = { w: 'writable', r: 'read-only', R: 'read-only-activation' };
const STATES: Record<string, LvAttr['state']> = { a: 'active', '-': 'inactive', s: 'suspended' };

export function parseLvAttr(attr: string | undefined): LvAttr {
  const a = (attr ?? '').padEnd(10, '-');
  return {
    volumeType: a[0],
    permissions: PERMISSIONS[a[1]] ?? 'unknown',
    state: STATES[a[4]] ?? 'other',
    open: a[5] === 'o',
    health: a[8] === '-' || a[8] === 'X' ? null : a[8],
  };
}

/** What a health flag (position 9) means, for a volume condition. */
export const HEALTH: Record<string, string> = {
  p: 'partial: a PV of the LV is missing',
  r: 'needs refresh',
  m: 'RAID mismatches',
  w: 'writemostly',
  F: 'failed',
  D: 'thin pool data space is full',
  M: 'thin pool metadata is read-only',
  E: 'thin pool error',
};
