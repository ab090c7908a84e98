import { invalid } from '../errors.js';
import { parseQuantity } from '../units.js';

/**
 * A mutable parameter (a VolumeAttributesClass key): its value as stored in the volume's record, or
 * null to drop the key (back to the pool's default); a string says why the value is wrong.
 */
export type MutableCheck = (value: string) => { value: string | null } | string;

/** The word a class uses to lift a limit: CSI forbids acting on a key's absence, so lifting needs a value. */
export const UNLIMITED = 'unlimited';

/** I/O limits every pool applies: cgroup io.max (v2) and blkio.throttle (v1) have these four. */
export const IO_LIMIT_KEYS = ['readIOPS', 'writeIOPS', 'readBytesPerSecond', 'writeBytesPerSecond'] as const;
export type IoLimitKey = (typeof IO_LIMIT_KEYS)[number];
/** Bursts: QEMU's throttling has them (libvirt's *_max); the kernel's cgroup limits do not. */
export const IO_BURST_KEYS = ['readIOPSBurst', 'writeIOPSBurst', 'readBytesPerSecondBurst', 'writeBytesPerSecondBurst'] as const;
export type IoBurstKey = (typeof IO_BURST_KEYS)[number];

/** Far past any device; keeps values exact in a double and within what the kernel and QEMU take (QEMU's throttling: at most 10^15). */
const MAX_IOPS = 1_000_000_000;
const MAX_BPS = 1e15;

const iops: MutableCheck = (v) => {
  if (v === UNLIMITED) return { value: null };
  // The kernel's io.max takes no limit of 1 (it reads 0 and 1 as "none" on kernels with io.low).
  if (!/^[1-9][0-9]{0,9}$/.test(v) || Number(v) < 2 || Number(v) > MAX_IOPS) return `an I/O count per second is a whole number from 2 to ${MAX_IOPS}, or "${UNLIMITED}"`;
  return { value: v };
};

const bytesPerSecond: MutableCheck = (v) => {
  if (v === UNLIMITED) return { value: null };
  let n: number;
  try {
    n = parseQuantity(v);
  } catch (err) {
    return `${(err as Error).message}, or "${UNLIMITED}"`;
  }
  // Below a page a second nothing useful moves, and the kernel rounds such a limit oddly.
  if (n < 4096 || n > MAX_BPS) return `a byte rate is from 4Ki to 1P (10^15) a second (a quantity such as 20Mi), or "${UNLIMITED}"`;
  return { value: String(n) };
};

export const IO_LIMIT_PARAMETERS: Readonly<Record<IoLimitKey, MutableCheck>> = {
  readIOPS: iops,
  writeIOPS: iops,
  readBytesPerSecond: bytesPerSecond,
  writeBytesPerSecond: bytesPerSecond,
};

export const IO_BURST_PARAMETERS: Readonly<Record<IoBurstKey, MutableCheck>> = {
  readIOPSBurst: iops,
  writeIOPSBurst: iops,
  readBytesPerSecondBurst: bytesPerSecond,
  writeBytesPerSecondBurst: bytesPerSecond,
};

/** Keys some pool takes and another does not, with why: an error that says more than "unknown". */
const ELSEWHERE: Record<string, string> = Object.fromEntries([
  ...IO_BURST_KEYS.map((k) => [k, 'bursts are applied by QEMU (the libvirt pool); the kernel\'s cgroup I/O limits the file and lvm pools use have none']),
  ['tier', 'tiers are the lvm pool\'s (PVs tagged by `vpool-csi pool init|extend --tier`)'],
]);

/** The changes a set of mutable parameters asks for (key: new value, or null to drop it); INVALID_ARGUMENT names the first wrong key. */
export function parseMutableParameters(params: Record<string, string> | undefined, spec: Readonly<Record<string, MutableCheck>>, field = 'mutable_parameters'): Record<string, string | null> {
  const out: Record<string, string | null> = {};
  for (const [key, value] of Object.entries(params ?? {})) {
    // The sidecars' own keys (csi-resizer --extra-modify-metadata adds the claim's and PV's names) change nothing.
    if (key.startsWith('csi.storage.k8s.io/')) continue;
    if (!Object.hasOwn(spec, key)) {
      const why = Object.hasOwn(ELSEWHERE, key) ? `: ${ELSEWHERE[key]}` : '';
      throw invalid(`${field}: ${JSON.stringify(key)} is not a parameter this pool can change${why} (it can change: ${Object.keys(spec).join(', ') || 'none'})`);
    }
    const checked = spec[key](value);
    if (typeof checked === 'string') throw invalid(`${field}: ${key}=${JSON.stringify(value)}: ${checked}`);
    out[key] = checked.value;
  }
  return out;
}

/** A volume's parameters with the changes made; the same object when nothing changes. */
export function withChanges(parameters: Record<string, string>, changes: Record<string, string | null>): Record<string, string> {
  const next = { ...parameters };
  let changed = false;
  for (const [key, value] of Object.entries(changes)) {
    if (value === null) {
      if (Object.hasOwn(next, key)) {
        delete next[key];
        changed = true;
      }
    } else if (next[key] !== value) {
      next[key] = value;
      changed = true;
    }
  }
  return changed ? next : parameters;
}

/** The parameters without the mutable ones: what a CreateVolume retry is compared by. */
export function withoutMutable(parameters: Record<string, string>, spec: Readonly<Record<string, MutableCheck>>): Record<string, string> {
  return Object.fromEntries(Object.entries(parameters).filter(([k]) => !Object.hasOwn(spec, k)));
}

/** The I/O limits a volume's parameters hold (absent: unlimited). */
export type IoLimits = Partial<Record<IoLimitKey | IoBurstKey, number>>;

export function ioLimitsOf(parameters: Record<string, string>): IoLimits {
  const out: IoLimits = {};
  for (const k of [...IO_LIMIT_KEYS, ...IO_BURST_KEYS]) if (Object.hasOwn(parameters, k)) out[k] = Number(parameters[k]);
  return out;
}

export function hasIoLimits(limits: IoLimits): boolean {
  return Object.keys(limits).length > 0;
}
