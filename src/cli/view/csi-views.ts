/** What each `vpool-csi client` command shows in a table: the columns a platform engineer looks for, in human units. */
import type { Volume__Output } from '../../../gen/csi/v1/Volume.js';
import type { VolumeCondition__Output } from '../../../gen/csi/v1/VolumeCondition.js';
import type { Snapshot__Output } from '../../../gen/csi/v1/Snapshot.js';
import type { NodeGetInfoResponse__Output } from '../../../gen/csi/v1/NodeGetInfoResponse.js';
import type { VolumeUsage__Output } from '../../../gen/csi/v1/VolumeUsage.js';
import { formatBytes } from '../../units.js';
import type { VolumeDetail } from '../../driver/status/types.js';
import { age } from './age.js';
import type { ListView } from './output.js';

const NONE = '<none>';
const orNone = (s: string | undefined) => (s ? s : NONE);
const pairs = (m: Record<string, string> | undefined) =>
  orNone(
    Object.entries(m ?? {})
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}=${v}`)
      .join(','),
  );

export interface VolumeRow {
  volume: Volume__Output;
  status?: { published_node_ids: string[]; volume_condition: VolumeCondition__Output | null } | null;
}

export function sourceOf(v: Volume__Output): string {
  const s = v.content_source;
  if (s?.snapshot) return `snapshot/${s.snapshot.snapshot_id}`;
  if (s?.volume) return `volume/${s.volume.volume_id}`;
  return NONE;
}

const health = (c: VolumeCondition__Output | null | undefined) => (!c ? '<unknown>' : c.abnormal ? 'abnormal' : 'ok');

export function volumeView(): ListView<VolumeRow> {
  return {
    kind: 'volume',
    plural: 'volumes',
    id: (r) => r.volume.volume_id,
    columns: [
      { header: 'ID', cell: (r) => r.volume.volume_id, shrink: true },
      { header: 'SIZE', cell: (r) => formatBytes(Number(r.volume.capacity_bytes)) },
      { header: 'SOURCE', cell: (r) => sourceOf(r.volume), shrink: true },
      { header: 'FSTYPE', cell: (r) => orNone(r.volume.volume_context.fsType), drop: 1 },
      { header: 'ATTACHED TO', cell: (r) => orNone(r.status?.published_node_ids.join(',')) },
      { header: 'HEALTH', cell: (r) => health(r.status?.volume_condition) },
      { header: 'MESSAGE', cell: (r) => orNone(r.status?.volume_condition?.message), wide: true },
      { header: 'TOPOLOGY', cell: (r) => orNone(r.volume.accessible_topology.map((t) => pairs(t.segments)).join(' ')), wide: true },
    ],
  };
}

export function snapshotView(now: number): ListView<Snapshot__Output> {
  return {
    kind: 'snapshot',
    plural: 'snapshots',
    id: (s) => s.snapshot_id,
    columns: [
      { header: 'ID', cell: (s) => s.snapshot_id, shrink: true },
      { header: 'SOURCE VOLUME', cell: (s) => orNone(s.source_volume_id), shrink: true },
      { header: 'SIZE', cell: (s) => formatBytes(Number(s.size_bytes)) },
      { header: 'READY', cell: (s) => String(s.ready_to_use) },
      { header: 'GROUP', cell: (s) => orNone(s.group_snapshot_id), drop: 1 },
      { header: 'AGE', cell: (s) => age(s.creation_time ? new Date(Number(s.creation_time.seconds) * 1000 + Math.floor(s.creation_time.nanos / 1e6)) : undefined, now) },
    ],
  };
}

export interface CapacityRow {
  available: number;
  maximum?: number;
  minimum?: number;
  parameters: Record<string, string>;
}

export function capacityView(): ListView<CapacityRow> {
  const opt = (n: number | undefined) => (n === undefined ? NONE : formatBytes(n));
  return {
    kind: 'capacity',
    plural: 'capacities',
    id: () => 'pool',
    columns: [
      { header: 'AVAILABLE', cell: (r) => formatBytes(r.available) },
      { header: 'LARGEST VOLUME', cell: (r) => opt(r.maximum) },
      { header: 'SMALLEST VOLUME', cell: (r) => opt(r.minimum) },
      { header: 'PARAMETERS', cell: (r) => pairs(r.parameters) },
    ],
  };
}

export function nodeView(): ListView<NodeGetInfoResponse__Output> {
  return {
    kind: 'node',
    plural: 'nodes',
    id: (n) => n.node_id,
    columns: [
      { header: 'NODE ID', cell: (n) => n.node_id },
      { header: 'MAX VOLUMES', cell: (n) => (Number(n.max_volumes_per_node) > 0 ? String(n.max_volumes_per_node) : 'no limit') },
      { header: 'TOPOLOGY', cell: (n) => pairs(n.accessible_topology?.segments) },
    ],
  };
}

export interface PluginRow {
  name: string;
  vendor_version: string;
  manifest: Record<string, string>;
}

export function pluginView(): ListView<PluginRow> {
  return {
    kind: 'driver',
    plural: 'drivers',
    id: (p) => p.name,
    columns: [
      { header: 'NAME', cell: (p) => p.name },
      { header: 'VERSION', cell: (p) => p.vendor_version },
      { header: 'MANIFEST', cell: (p) => pairs(p.manifest), wide: true },
    ],
  };
}

export interface CapabilityRow {
  service: string;
  capability: string;
}

export function capabilityView(): ListView<CapabilityRow> {
  return {
    kind: 'capability',
    plural: 'capabilities',
    id: (c) => c.capability,
    columns: [
      { header: 'SERVICE', cell: (c) => c.service },
      { header: 'CAPABILITY', cell: (c) => c.capability },
    ],
  };
}

/** A capability message ({ rpc: { type } }, { service: { type } }, { volume_expansion: { type } }) as one row. */
export function capabilityRow(service: string, c: Record<string, unknown>): CapabilityRow {
  for (const [k, v] of Object.entries(c)) {
    if (v && typeof v === 'object' && 'type' in v) return { service: k === 'rpc' ? service : k.toUpperCase(), capability: String((v as { type: unknown }).type) };
  }
  return { service, capability: 'UNKNOWN' };
}

export function usageView(): ListView<VolumeUsage__Output> {
  const amount = (u: VolumeUsage__Output, n: string) => (u.unit === 'BYTES' ? formatBytes(Number(n)) : String(n));
  return {
    kind: 'usage',
    plural: 'usages',
    id: (u) => u.unit,
    columns: [
      { header: 'UNIT', cell: (u) => (u.unit === 'BYTES' ? 'bytes' : u.unit === 'INODES' ? 'inodes' : u.unit.toLowerCase()) },
      { header: 'TOTAL', cell: (u) => amount(u, u.total) },
      { header: 'USED', cell: (u) => amount(u, u.used) },
      { header: 'AVAILABLE', cell: (u) => amount(u, u.available) },
      { header: 'USE%', cell: (u) => (Number(u.total) > 0 ? `${Math.round((Number(u.used) / Number(u.total)) * 100)}%` : NONE) },
    ],
  };
}

/** Volumes as the driver's Inspect service gives them: CSI's facts and the age, allocation and mounts CSI does not carry. */
export function volumeDetailView(now: number): ListView<VolumeDetail> {
  const mounts = (v: VolumeDetail) => v.mounts ?? [];
  return {
    kind: 'volume',
    plural: 'volumes',
    id: (v) => v.id,
    columns: [
      { header: 'ID', cell: (v) => v.id, shrink: true },
      { header: 'NAME', cell: (v) => v.name, wide: true },
      { header: 'CLAIM', cell: (v) => orNone(v.claim), wide: true },
      { header: 'SIZE', cell: (v) => formatBytes(v.capacityBytes) },
      { header: 'ALLOCATED', cell: (v) => (v.allocatedBytes === undefined ? '<unknown>' : formatBytes(v.allocatedBytes)), drop: 3 },
      { header: 'SOURCE', cell: (v) => orNone(v.source), shrink: true, drop: 1 },
      { header: 'ACCESS', cell: (v) => access(v), drop: 2 },
      { header: 'ATTACHED TO', cell: (v) => orNone(v.attachedTo.join(',')) },
      { header: 'MOUNTS', cell: (v) => (v.mounts === undefined ? '<unknown>' : String(mounts(v).length)), drop: 4 },
      { header: 'MOUNT PATHS', cell: (v) => orNone(mounts(v).map((m) => `${m.path}${m.readOnly ? ' (ro)' : ''}`).join(',')), wide: true },
      { header: 'HEALTH', cell: (v) => (v.health.abnormal ? 'abnormal' : 'ok') },
      { header: 'MESSAGE', cell: (v) => orNone(v.health.message), wide: true },
      { header: 'I/O LIMITS', cell: (v) => orNone(ioLimits(v)), wide: true },
      { header: 'TIER', cell: (v) => orNone(v.tier), wide: true },
      { header: 'AGE', cell: (v) => age(new Date(v.createdAt), now) },
    ],
  };
}

const LIMIT_NAMES: Record<string, [string, boolean]> = {
  readIOPS: ['read', false], writeIOPS: ['write', false], readBytesPerSecond: ['read', true], writeBytesPerSecond: ['write', true],
  readIOPSBurst: ['read burst', false], writeIOPSBurst: ['write burst', false], readBytesPerSecondBurst: ['read burst', true], writeBytesPerSecondBurst: ['write burst', true],
};

/** "read 500/s,write 20Mi/s": each limit as a person reads it (IOPS as a count, rates in binary units). */
function ioLimits(v: VolumeDetail): string {
  return Object.entries(v.ioLimits ?? {})
    .filter(([k]) => Object.hasOwn(LIMIT_NAMES, k))
    .map(([k, n]) => `${LIMIT_NAMES[k]![0]} ${LIMIT_NAMES[k]![1] ? `${formatBytes(n)}/s` : `${n} IO/s`}`)
    .join(',');
}

/** How the volume is used here now (its mounts), else the filesystem it was made for; "<any>" when neither says. */
function access(v: VolumeDetail): string {
  const kinds = [...new Set((v.mounts ?? []).map((m) => m.as))];
  if (kinds.length) return kinds.join(',');
  return v.fsType ?? '<any>';
}
