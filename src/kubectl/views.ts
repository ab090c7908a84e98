/** What `kubectl vpool` shows: each node's pool, the driver's claims and volumes, and the orphans the node plugins reported. */
import { formatBytes, parseQuantity } from '../units.js';
import { age } from '../cli/view/age.js';
import type { ListView } from '../cli/view/output.js';
import type { Item } from './api.js';

const NONE = '<none>';
const TOPOLOGY_KEYS = ['topology.vpool.dev/node', 'topology.vpool.dev/hypervisor'];
const APPROX: Record<string, number> = { '': 1, k: 1e3, M: 1e6, G: 1e9, T: 1e12, P: 1e15, E: 1e18, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, Pi: 2 ** 50, Ei: 2 ** 60 };
/** A quantity's bytes: exact where a number holds them, else (past 8Pi) near enough to print. */
const bytes = (q: string | number | undefined) => {
  if (q === undefined || q === '') return undefined;
  if (typeof q === 'number') return q;
  try {
    return parseQuantity(q);
  } catch {
    const m = /^([0-9]+(?:\.[0-9]+)?)(Ki|Mi|Gi|Ti|Pi|Ei|k|M|G|T|P|E)?$/.exec(q);
    return m ? Number(m[1]) * APPROX[m[2] ?? '']! : undefined;
  }
};
const size = (n: number | undefined) => (n === undefined ? '<unknown>' : formatBytes(n));

export interface VolumePool extends Item {
  spec: { backend?: string };
  status?: { nodes?: Array<{ node: string; phase?: string; sizeBytes?: number; freeBytes?: number; volumes?: number; snapshots?: number; lastError?: string; thinPool?: { dataPercent?: number; metadataPercent?: number } }> };
}
export interface StorageCapacity extends Item {
  storageClassName: string;
  capacity?: string;
  maximumVolumeSize?: string;
  nodeTopology?: { matchLabels?: Record<string, string> };
}
export interface StorageClass extends Item {
  provisioner: string;
}
export interface PersistentVolume extends Item {
  spec: {
    csi?: { driver: string; volumeHandle: string };
    capacity?: { storage?: string };
    storageClassName?: string;
    claimRef?: { namespace?: string; name?: string };
    nodeAffinity?: { required?: { nodeSelectorTerms?: Array<{ matchExpressions?: Array<{ key: string; operator: string; values?: string[] }> }> } };
  };
  status?: { phase?: string };
}
export interface VolumeAttachment extends Item {
  spec: { attacher: string; nodeName: string; source: { persistentVolumeName?: string } };
  status?: { attached?: boolean };
}
export interface SnapshotContent extends Item {
  spec: { driver: string; source?: { volumeHandle?: string } };
}
export interface Pod extends Item {
  spec: { nodeName?: string; volumes?: Array<{ persistentVolumeClaim?: { claimName: string } }> };
  status?: { phase?: string };
}
export interface KubeEvent extends Item {
  involvedObject: { kind: string; name: string };
  source?: { component?: string };
  reportingComponent?: string;
  reason: string;
  message: string;
  lastTimestamp?: string;
  eventTime?: string;
}

export interface PoolRow {
  node: string;
  pool: string;
  backend: string;
  sizeBytes?: number;
  freeBytes?: number;
  /** What the scheduler sees (CSIStorageCapacity), by StorageClass. */
  capacity: Record<string, number | undefined>;
  volumes?: number;
  snapshots?: number;
  phase: string;
  thin?: string;
  lastError?: string;
}

export function nodeOfTopology(labels: Record<string, string> | undefined): string | undefined {
  for (const k of TOPOLOGY_KEYS) if (labels?.[k]) return labels[k];
  return undefined;
}

/** One row per node of each VolumePool, and one per node the scheduler sees capacity on without a VolumePool (a pool from the node plugin's flags). */
export function poolRows(pools: VolumePool[], capacities: StorageCapacity[], classes: StorageClass[], driver: string): PoolRow[] {
  const ours = new Set(classes.filter((c) => c.provisioner === driver).map((c) => c.metadata.name));
  const byNode = new Map<string, Record<string, number | undefined>>();
  for (const c of capacities) {
    if (!ours.has(c.storageClassName)) continue;
    const node = nodeOfTopology(c.nodeTopology?.matchLabels);
    if (!node) continue;
    const m = byNode.get(node) ?? {};
    m[c.storageClassName] = bytes(c.capacity);
    byNode.set(node, m);
  }
  const rows: PoolRow[] = [];
  for (const p of pools) {
    for (const n of p.status?.nodes ?? []) {
      rows.push({
        node: n.node,
        pool: p.metadata.name,
        backend: p.spec.backend ?? '<unknown>',
        sizeBytes: n.sizeBytes,
        freeBytes: n.freeBytes,
        capacity: byNode.get(n.node) ?? {},
        volumes: n.volumes,
        snapshots: n.snapshots,
        phase: n.phase ?? '<unknown>',
        ...(n.thinPool ? { thin: `data ${n.thinPool.dataPercent ?? 0}%, metadata ${n.thinPool.metadataPercent ?? 0}%` } : {}),
        ...(n.lastError ? { lastError: n.lastError } : {}),
      });
    }
  }
  const seen = new Set(rows.map((r) => r.node));
  for (const [node, capacity] of byNode) if (!seen.has(node)) rows.push({ node, pool: '<flags>', backend: '<unknown>', capacity, phase: '<unknown>' });
  return rows.sort((a, b) => (a.node === b.node ? a.pool.localeCompare(b.pool) : a.node.localeCompare(b.node)));
}

export function poolView(): ListView<PoolRow> {
  const free = (r: PoolRow) => size(r.freeBytes ?? Math.max(...Object.values(r.capacity).map((v) => v ?? 0), 0));
  return {
    kind: 'pool',
    plural: 'pools',
    id: (r) => `${r.node}/${r.pool}`,
    columns: [
      { header: 'NODE', cell: (r) => r.node },
      { header: 'POOL', cell: (r) => r.pool },
      { header: 'BACKEND', cell: (r) => r.backend },
      { header: 'SIZE', cell: (r) => size(r.sizeBytes) },
      { header: 'FREE', cell: free },
      { header: 'VOLUMES', cell: (r) => (r.volumes === undefined ? '<unknown>' : String(r.volumes)) },
      { header: 'SNAPSHOTS', cell: (r) => (r.snapshots === undefined ? '<unknown>' : String(r.snapshots)), wide: true },
      { header: 'SCHEDULABLE', cell: (r) => Object.entries(r.capacity).map(([sc, v]) => `${sc}=${size(v)}`).join(',') || NONE, wide: true },
      { header: 'THIN POOL', cell: (r) => r.thin ?? NONE, wide: true },
      { header: 'HEALTH', cell: (r) => r.phase },
      { header: 'LAST ERROR', cell: (r) => r.lastError ?? NONE, wide: true },
    ],
  };
}

export interface VolumeRow {
  namespace?: string;
  claim?: string;
  pv: string;
  volumeHandle: string;
  node: string;
  sizeBytes?: number;
  storageClass: string;
  attachedTo: string[];
  usedBy: string[];
  snapshots: number;
  phase: string;
  createdAt?: string;
}

function pvNode(pv: PersistentVolume): string {
  for (const t of pv.spec.nodeAffinity?.required?.nodeSelectorTerms ?? [])
    for (const e of t.matchExpressions ?? []) if (TOPOLOGY_KEYS.includes(e.key) && e.operator === 'In' && e.values?.length) return e.values.join(',');
  return NONE;
}

/** The driver's PersistentVolumes with their claims, attachments, pods and snapshots; `namespace` (undefined: all) keeps the claims of one. */
export function volumeRows(pvs: PersistentVolume[], attachments: VolumeAttachment[], contents: SnapshotContent[], pods: Pod[], driver: string, namespace: string | undefined): VolumeRow[] {
  const rows: VolumeRow[] = [];
  for (const pv of pvs) {
    if (pv.spec.csi?.driver !== driver) continue;
    const ref = pv.spec.claimRef;
    if (namespace !== undefined && ref?.namespace !== namespace) continue;
    const handle = pv.spec.csi.volumeHandle;
    rows.push({
      ...(ref?.name ? { namespace: ref.namespace, claim: ref.name } : {}),
      pv: pv.metadata.name,
      volumeHandle: handle,
      node: pvNode(pv),
      sizeBytes: bytes(pv.spec.capacity?.storage),
      storageClass: pv.spec.storageClassName || NONE,
      attachedTo: attachments.filter((a) => a.spec.attacher === driver && a.spec.source.persistentVolumeName === pv.metadata.name && a.status?.attached).map((a) => a.spec.nodeName).sort(),
      usedBy: pods
        .filter((p) => p.metadata.namespace === ref?.namespace && p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed' && (p.spec.volumes ?? []).some((v) => v.persistentVolumeClaim?.claimName === ref?.name))
        .map((p) => p.metadata.name)
        .sort(),
      snapshots: contents.filter((c) => c.spec.driver === driver && c.spec.source?.volumeHandle === handle).length,
      phase: pv.status?.phase ?? '<unknown>',
      createdAt: pv.metadata.creationTimestamp,
    });
  }
  return rows.sort((a, b) => `${a.namespace ?? ''}/${a.claim ?? ''}/${a.pv}`.localeCompare(`${b.namespace ?? ''}/${b.claim ?? ''}/${b.pv}`));
}

export function volumeView(now: number, allNamespaces: boolean): ListView<VolumeRow> {
  return {
    kind: 'persistentvolume',
    plural: 'volumes',
    id: (r) => r.pv,
    columns: [
      ...(allNamespaces ? [{ header: 'NAMESPACE', cell: (r: VolumeRow) => r.namespace ?? NONE }] : []),
      { header: 'CLAIM', cell: (r) => r.claim ?? NONE },
      { header: 'PV', cell: (r) => r.pv, shrink: true },
      { header: 'NODE', cell: (r) => r.node },
      { header: 'SIZE', cell: (r) => size(r.sizeBytes) },
      { header: 'STORAGECLASS', cell: (r) => r.storageClass, drop: 2 },
      { header: 'ATTACHED TO', cell: (r) => r.attachedTo.join(',') || NONE, drop: 1 },
      { header: 'USED BY', cell: (r) => r.usedBy.join(',') || NONE, wide: true },
      { header: 'VOLUME ID', cell: (r) => r.volumeHandle, wide: true },
      { header: 'SNAPSHOTS', cell: (r) => String(r.snapshots) },
      { header: 'STATUS', cell: (r) => r.phase, wide: true },
      { header: 'AGE', cell: (r) => age(r.createdAt ? new Date(r.createdAt) : undefined, now) },
    ],
  };
}

const DRIVER_COMPONENTS = new Set(['vpool-csi-node', 'vpool-csi-reconcile']);
const ORPHAN_REASONS: Record<string, string> = { OrphanVolume: 'volume', OrphanSnapshot: 'snapshot', UnfinishedVolume: 'unfinished volume', VolumeMissing: 'missing volume' };

export interface OrphanRow {
  node: string;
  kind: string;
  id: string;
  state: string;
  message: string;
  at?: string;
}

/** The newest report of each orphan the node plugins told of (Events on their Node, or on the PV whose volume is missing). */
export function orphanRows(events: KubeEvent[]): OrphanRow[] {
  const newest = new Map<string, OrphanRow>();
  for (const e of events) {
    const kind = ORPHAN_REASONS[e.reason];
    // Only what the driver's node plugins (or `vpool-csi reconcile`) wrote: anyone may create an Event with these reasons.
    if (!kind || !DRIVER_COMPONENTS.has(e.reportingComponent || e.source?.component || '')) continue;
    const id = /^(?:volume|snapshot) (\S+)/.exec(e.message)?.[1] ?? '<unknown>';
    const at = e.lastTimestamp ?? e.eventTime ?? e.metadata.creationTimestamp;
    const state = e.reason === 'VolumeMissing' ? 'missing' : (/: ([^:]+)$/.exec(e.message)?.[1] ?? '<unknown>');
    const node = e.involvedObject.kind === 'Node' ? e.involvedObject.name : /on node (\S+)$/.exec(e.message)?.[1] ?? `pv/${e.involvedObject.name}`;
    const row = { node, kind, id, state, message: e.message, ...(at ? { at } : {}) };
    const key = `${kind}/${node}/${id}`;
    const had = newest.get(key);
    if (!had || (had.at ?? '') < (row.at ?? '')) newest.set(key, row);
  }
  return [...newest.values()].sort((a, b) => `${a.node}/${a.kind}/${a.id}`.localeCompare(`${b.node}/${b.kind}/${b.id}`));
}

export function orphanView(now: number): ListView<OrphanRow> {
  return {
    kind: 'orphan',
    plural: 'orphans',
    id: (r) => `${r.kind.replace(/ /g, '-')}/${r.id}`,
    columns: [
      { header: 'NODE', cell: (r) => r.node },
      { header: 'KIND', cell: (r) => r.kind },
      { header: 'ID', cell: (r) => r.id, shrink: true },
      { header: 'STATE', cell: (r) => r.state },
      { header: 'MESSAGE', cell: (r) => r.message, wide: true },
      { header: 'AGE', cell: (r) => age(r.at ? new Date(r.at) : undefined, now) },
    ],
  };
}
