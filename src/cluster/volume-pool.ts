import { parseQuantity } from '../units.js';
import { validateLvName, validateVgName } from '../pool/lvm/pool-admin.js';

/**
 * The VolumePool resource (vpool.dev/v1alpha1, cluster-scoped) as the driver reads and writes it.
 * The CRD in charts/vpool-csi/crds holds the same rules as a schema; they are checked here again
 * because the driver must not act on whatever an older CRD, or a client skipping validation, let in.
 */
export const GROUP = 'vpool.dev';
export const VERSION = 'v1alpha1';
export const PLURAL = 'volumepools';
export const KIND = 'VolumePool';

export interface LabelSelectorRequirement {
  key: string;
  operator: 'In' | 'NotIn' | 'Exists' | 'DoesNotExist';
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export interface VolumePoolSpec {
  nodeSelector?: LabelSelector;
  backend: 'lvm' | 'file';
  /** lvm: the volume group on each node (default: the VolumePool's name). */
  volumeGroup?: string;
  /** file: the directory holding the volume files on each node. */
  directory?: string;
  /** lvm: device paths or globs (/dev/disk/by-id/nvme-*). */
  devices?: string[];
  /** lvm: devices by tier (their PVs are tagged with it: a class's `tier` places volumes there). */
  deviceGroups?: Array<{ tier: string; devices: string[] }>;
  thinPool?: { name?: string; size?: string };
  overprovisionRatio?: number;
  reserve?: string;
  /** lvm: erase signatures on devices before taking them. Never implied. */
  wipe?: boolean;
}

export interface PoolCondition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  reason: string;
  message: string;
  lastTransitionTime: string;
}

export type DeviceHealth = 'Healthy' | 'Missing' | 'Invalid' | 'Unmatched' | 'Retained';

export interface DeviceStatus {
  /** As the spec names it (a path or a glob). */
  path: string;
  /** The block device it resolved to. */
  device?: string;
  sizeBytes?: number;
  /** The tier its PV carries. */
  tier?: string;
  health: DeviceHealth;
  message?: string;
}

export type PoolPhase = 'Ready' | 'Degraded' | 'Failed';

export interface NodePoolStatus {
  node: string;
  phase: PoolPhase;
  observedGeneration: number;
  devices: DeviceStatus[];
  sizeBytes: number;
  freeBytes: number;
  thinPool?: { name: string; sizeBytes: number; dataPercent: number; metadataPercent: number };
  volumes: number;
  snapshots: number;
  conditions: PoolCondition[];
  lastError?: string;
  lastUpdateTime: string;
}

export interface VolumePoolStatus {
  /** "ready/selected" nodes, for kubectl get. */
  ready?: string;
  size?: string;
  free?: string;
  nodes?: NodePoolStatus[];
}

export interface VolumePool {
  apiVersion: string;
  kind: string;
  metadata: { name: string; uid?: string; generation?: number; resourceVersion?: string; labels?: Record<string, string> };
  spec: VolumePoolSpec;
  status?: VolumePoolStatus;
}

/** The settings a driver serving this pool runs with (what the serve flags say otherwise). */
export interface PoolSettings {
  backend: 'lvm' | 'file';
  volumeGroup: string;
  directory: string;
  /** Every device the spec names: spec.devices and each group's. */
  devices: string[];
  /** The tier of each device pattern a group names. */
  tiers: Map<string, string>;
  thinPool?: { name: string; size: ThinSize };
  overprovisionRatio: number;
  reserveBytes: number;
  wipe: boolean;
}

export type ThinSize = { percent: number } | { bytes: number };

export class PoolSpecError extends Error {
  override name = 'PoolSpecError';
}

/** A device path or glob: absolute, under /dev, no '..', no characters a glob or a path does not need. */
export const DEVICE_PATTERN = /^\/dev\/(\.?[A-Za-z0-9_+:=@,*?[\]/-])+\.?$/;
export const THIN_SIZE_PATTERN = /^((100|[1-9][0-9]?)%|[0-9]+(\.[0-9]+)?([KMGT]i?|k)?)$/;

/** Checks a VolumePool's spec and fills in the defaults; throws PoolSpecError naming every problem. */
export function poolSettings(pool: Pick<VolumePool, 'metadata' | 'spec'>): PoolSettings {
  const s = pool.spec ?? ({} as VolumePoolSpec);
  const problems: string[] = [];
  const attempt = <T>(fn: () => T, fallback: T): T => {
    try {
      return fn();
    } catch (e) {
      problems.push((e as Error).message);
      return fallback;
    }
  };
  if (s.backend !== 'lvm' && s.backend !== 'file') problems.push(`spec.backend must be lvm or file (got ${JSON.stringify(s.backend)})`);
  const tiers = new Map<string, string>();
  for (const [i, g] of (s.deviceGroups ?? []).entries()) {
    if (typeof g?.tier !== 'string' || !/^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/.test(g.tier)) problems.push(`spec.deviceGroups[${i}].tier: ${JSON.stringify(g?.tier)} is not a tier name (lower-case letters, digits and -, e.g. fast)`);
    if (!Array.isArray(g?.devices) || !g.devices.length) problems.push(`spec.deviceGroups[${i}].devices: a list of device paths or globs, at least one`);
    for (const d of Array.isArray(g?.devices) ? g.devices : []) {
      if (tiers.has(d) && tiers.get(d) !== g.tier) problems.push(`spec.deviceGroups: ${JSON.stringify(d)} is in tier ${tiers.get(d)} and tier ${g.tier}`);
      tiers.set(d, g.tier);
    }
  }
  if (s.backend === 'file' && s.deviceGroups?.length) problems.push('spec.deviceGroups is for the lvm backend');
  for (const d of s.devices ?? []) if (tiers.has(d)) problems.push(`spec.devices: ${JSON.stringify(d)} is also in spec.deviceGroups (tier ${tiers.get(d)}): name it once`);
  const devices = [...(s.devices ?? []), ...tiers.keys()];
  for (const d of devices) if (typeof d !== 'string' || !DEVICE_PATTERN.test(d) || d.includes('..')) problems.push(`spec.devices: ${JSON.stringify(d)} is not a device path or glob under /dev without '..'`);
  if (s.backend === 'file' && devices.length) problems.push('spec.devices is for the lvm backend; a file pool lives in spec.directory');
  const volumeGroup = attempt(() => validateVgName(s.volumeGroup ?? pool.metadata.name), '');
  const directory = s.directory ?? `/var/lib/vpool-csi/pools/${pool.metadata.name}`;
  if (!directory.startsWith('/') || directory.split('/').includes('..') || /[\0\n]/.test(directory)) problems.push(`spec.directory must be an absolute path without '..' (got ${JSON.stringify(directory)})`);
  const ratio = s.overprovisionRatio ?? 1;
  if (typeof ratio !== 'number' || !(ratio >= 1) || !Number.isFinite(ratio)) problems.push(`spec.overprovisionRatio must be a number ≥ 1 (got ${JSON.stringify(ratio)})`);
  const reserveBytes = attempt(() => parseQuantity(s.reserve ?? '0'), 0);
  let thinPool: PoolSettings['thinPool'];
  if (s.thinPool) {
    if (s.backend !== 'lvm') problems.push('spec.thinPool is for the lvm backend');
    const name = attempt(() => validateLvName(s.thinPool?.name ?? 'thin'), 'thin');
    const text = s.thinPool.size ?? '90%';
    let size: ThinSize = { percent: 90 };
    if (!THIN_SIZE_PATTERN.test(text)) problems.push(`spec.thinPool.size must be a share of the volume group (90%) or a size (100Gi), got ${JSON.stringify(text)}`);
    else size = text.endsWith('%') ? { percent: Number(text.slice(0, -1)) } : { bytes: parseQuantity(text) };
    thinPool = { name, size };
  }
  if (s.wipe !== undefined && typeof s.wipe !== 'boolean') problems.push('spec.wipe must be true or false');
  attempt(() => checkSelector(s.nodeSelector), undefined);
  if (problems.length) throw new PoolSpecError(problems.join('; '));
  return { backend: s.backend, volumeGroup, directory, devices, tiers, thinPool, overprovisionRatio: ratio, reserveBytes, wipe: s.wipe === true };
}

function checkSelector(sel: LabelSelector | undefined): void {
  for (const r of sel?.matchExpressions ?? []) {
    if (!['In', 'NotIn', 'Exists', 'DoesNotExist'].includes(r.operator)) throw new PoolSpecError(`spec.nodeSelector: unknown operator ${JSON.stringify(r.operator)}`);
    if ((r.operator === 'In' || r.operator === 'NotIn') && !r.values?.length) throw new PoolSpecError(`spec.nodeSelector: ${r.operator} on ${r.key} needs values`);
  }
}

/** Label selector semantics of Kubernetes: every term must hold; an empty selector selects every node. */
export function selects(sel: LabelSelector | undefined, labels: Record<string, string> = {}): boolean {
  for (const [k, v] of Object.entries(sel?.matchLabels ?? {})) if (labels[k] !== v) return false;
  for (const r of sel?.matchExpressions ?? []) {
    const has = Object.prototype.hasOwnProperty.call(labels, r.key);
    const ok =
      r.operator === 'Exists' ? has
      : r.operator === 'DoesNotExist' ? !has
      : r.operator === 'In' ? has && (r.values ?? []).includes(labels[r.key])
      : r.operator === 'NotIn' ? !has || !(r.values ?? []).includes(labels[r.key])
      : false;
    if (!ok) return false;
  }
  return true;
}

/** Bytes as a Kubernetes quantity a human reads (binary suffixes, two decimals at most). */
export function humanQuantity(bytes: number): string {
  const units = ['', 'Ki', 'Mi', 'Gi', 'Ti', 'Pi'];
  let i = 0;
  let v = bytes;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${Number.isInteger(v) ? v : Number(v.toFixed(2))}${units[i]}`;
}

/** The cluster-wide summary fields every node recomputes when it writes its own entry. */
export function summarize(nodes: NodePoolStatus[]): Omit<VolumePoolStatus, 'nodes'> {
  const size = nodes.reduce((a, n) => a + n.sizeBytes, 0);
  const free = nodes.reduce((a, n) => a + n.freeBytes, 0);
  return { ready: `${nodes.filter((n) => n.phase === 'Ready').length}/${nodes.length}`, size: humanQuantity(size), free: humanQuantity(free) };
}
