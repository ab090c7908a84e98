import type { PoolStatus } from '../../pool/lvm/pool-admin.js';
import type { OrphanItem, OrphanReport } from '../../cluster/orphans.js';
import { formatBytes } from '../../units.js';
import { humanDuration } from './age.js';
import type { ListView } from './output.js';

const NONE = '<none>';

/** `vpool-csi pool status`: one row per volume group, as `vgs` would show it, with its thin pools and health. */
export function lvmPoolView(): ListView<PoolStatus> {
  const missing = (s: PoolStatus) => s.devices.filter((d) => d.missing).map((d) => d.name);
  return {
    kind: 'pool',
    plural: 'pools',
    id: (s) => s.vg,
    columns: [
      { header: 'VG', cell: (s) => s.vg },
      { header: 'DEVICES', cell: (s) => String(s.devices.length) },
      { header: 'SIZE', cell: (s) => formatBytes(s.sizeBytes) },
      { header: 'FREE', cell: (s) => formatBytes(s.freeBytes) },
      { header: 'THIN POOLS', cell: (s) => (s.thinPools.length ? s.thinPools.map((t) => `${t.name} ${formatBytes(t.sizeBytes)} data ${t.dataPercent}% meta ${t.metadataPercent}%`).join(', ') : NONE), drop: 1 },
      { header: 'VOLUMES', cell: (s) => String(s.volumes.length) },
      { header: 'SNAPSHOTS', cell: (s) => String(s.snapshots) },
      { header: 'HEALTH', cell: (s) => (missing(s).length ? `missing ${missing(s).join(',')}` : 'ok') },
      { header: 'DEVICE NAMES', cell: (s) => s.devices.map((d) => `${d.name} (${d.tier ? `${d.tier}, ` : ''}${formatBytes(d.sizeBytes)}, ${formatBytes(d.freeBytes)} free)`).join(', ') || NONE, wide: true },
    ],
  };
}

export interface OrphanRow {
  kind: 'volume' | 'snapshot' | 'unfinished volume' | 'PV without volume';
  id: string;
  name: string;
  ageSeconds?: number;
  action: string;
}

/** `vpool-csi reconcile -o table`: what was found and what was done about it, the oldest first within each kind. */
export function orphanRows(r: OrphanReport): OrphanRow[] {
  const items = (kind: OrphanRow['kind'], list: OrphanItem[]) => [...list].sort((a, b) => b.ageSeconds - a.ageSeconds || a.id.localeCompare(b.id)).map((i) => ({ kind, id: i.id, name: i.name, ageSeconds: i.ageSeconds, action: i.action }));
  return [
    ...items('volume', r.volumes),
    ...items('snapshot', r.snapshots),
    ...items('unfinished volume', r.unfinished),
    ...r.missingVolumes.map((m) => ({ kind: 'PV without volume' as const, id: m.volumeHandle, name: m.persistentVolume, action: 'reported' })),
  ];
}

export function orphanView(): ListView<OrphanRow> {
  return {
    kind: 'orphan',
    plural: 'orphans',
    id: (o) => o.id,
    columns: [
      { header: 'KIND', cell: (o) => o.kind },
      { header: 'ID', cell: (o) => o.id, shrink: true },
      { header: 'NAME', cell: (o) => o.name || NONE, shrink: true },
      { header: 'AGE', cell: (o) => (o.ageSeconds === undefined ? NONE : humanDuration(o.ageSeconds * 1000)) },
      { header: 'ACTION', cell: (o) => o.action },
    ],
  };
}
