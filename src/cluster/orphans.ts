import type { V1PersistentVolume } from '@kubernetes/client-node';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { PoolBackend } from '../pool/backend.js';
import type { EventRecorder } from './events.js';
import { statusOf, type Kube } from './kube.js';

/**
 * Orphan reconciliation: what the pool on this node holds against what the cluster says exists.
 * A backend volume no PersistentVolume of this driver names, a backend snapshot no
 * VolumeSnapshotContent names, and a PersistentVolume of this node whose volume is gone.
 *
 * The pool is listed before the cluster: a volume made between the two listings is not seen at
 * all, rather than seen without its PV. A volume whose PV is still on its way (the provisioner
 * writes it after CreateVolume returns) looks orphaned for a moment; the grace period is what keeps
 * deletion away from it, and deletion is off unless asked for.
 */
export type OrphanAction = 'reported' | 'deleted' | 'kept: younger than the grace period' | `kept: ${string}` | `delete failed: ${string}`;

export interface OrphanItem {
  id: string;
  name: string;
  sizeBytes: number;
  createdAt: string;
  ageSeconds: number;
  action: OrphanAction;
}

export interface MissingVolume {
  persistentVolume: string;
  volumeHandle: string;
  claim?: string;
  phase?: string;
}

export interface OrphanReport {
  node: string;
  driver: string;
  checkedAt: string;
  dryRun: boolean;
  gracePeriodSeconds: number;
  volumes: OrphanItem[];
  /** False when the cluster has no VolumeSnapshotContent API: then no snapshot can be judged. */
  snapshotsChecked: boolean;
  snapshots: OrphanItem[];
  /**
   * Volumes a crashed clone or restore left half-made (never listed, so no PV can name them) that no
   * sweep at start removed: all of them, deleted (when deletion is on) past the grace period unless held.
   */
  unfinished: OrphanItem[];
  missingVolumes: MissingVolume[];
}

export interface OrphanOptions {
  driver: string;
  node: string;
  /** The topology segment that pins a PV to this pool (topology.vpool.dev/node = the node ID). */
  topologyKey: string;
  topologyValue: string;
  /** Report only; never delete. */
  dryRun: boolean;
  /** Only orphans at least this old are deleted. */
  gracePeriodMs: number;
  /** Runs a deletion under the driver's lock of that volume or snapshot (when in the driver). */
  locked?: <T>(kind: 'volume' | 'snapshot', id: string, fn: () => Promise<T>) => Promise<T>;
  events?: EventRecorder;
}

const SNAPSHOT_API = { group: 'snapshot.storage.k8s.io', version: 'v1', plural: 'volumesnapshotcontents' };

interface SnapshotContent {
  metadata: { name: string };
  spec?: { driver?: string; source?: { snapshotHandle?: string } };
  status?: { snapshotHandle?: string };
}

export async function reconcileOrphans(backend: PoolBackend, kube: Kube, o: OrphanOptions): Promise<OrphanReport> {
  const [volumes, snapshots, unfinished] = await Promise.all([backend.listVolumes(), backend.listSnapshots(), backend.listUnfinished?.() ?? []]);
  const pvs = (await listAll((c) => kube.core.listPersistentVolume({ limit: 500, _continue: c }))).filter((pv) => pv.spec?.csi?.driver === o.driver);
  let contents: SnapshotContent[] | null;
  try {
    contents = (await listAll((c) => kube.custom.listClusterCustomObject({ ...SNAPSHOT_API, limit: 500, _continue: c }) as Promise<{ items: SnapshotContent[]; metadata?: { _continue?: string; continue?: string } }>)).filter((c) => c.spec?.driver === o.driver);
  } catch (e) {
    if (statusOf(e) !== 404) throw e;
    contents = null;
  }

  const claimed = new Set(pvs.map((pv) => pv.spec?.csi?.volumeHandle));
  const now = Date.now();
  const item = (r: { id: string; name: string; createdAt: number }, sizeBytes: number): OrphanItem => ({
    id: r.id,
    name: r.name,
    sizeBytes,
    createdAt: new Date(r.createdAt).toISOString(),
    ageSeconds: Math.max(0, Math.floor((now - r.createdAt) / 1000)),
    action: 'reported',
  });
  const report: OrphanReport = {
    node: o.node,
    driver: o.driver,
    checkedAt: new Date(now).toISOString(),
    dryRun: o.dryRun,
    gracePeriodSeconds: Math.floor(o.gracePeriodMs / 1000),
    volumes: volumes.filter((v) => !claimed.has(v.id)).map((v) => item(v, v.capacityBytes)),
    snapshotsChecked: contents !== null,
    snapshots: [],
    unfinished: unfinished.map((u) => item(u, u.sizeBytes)),
    missingVolumes: [],
  };
  if (contents) {
    const handles = new Set(contents.flatMap((c) => [c.status?.snapshotHandle, c.spec?.source?.snapshotHandle]).filter(Boolean));
    report.snapshots = snapshots.filter((s) => !handles.has(s.id)).map((s) => item(s, s.sizeBytes));
  }
  const held = new Set(volumes.map((v) => v.id));
  report.missingVolumes = pvs
    .filter((pv) => onNode(pv, o.topologyKey, o.topologyValue) && !held.has(pv.spec?.csi?.volumeHandle ?? ''))
    .map((pv) => ({
      persistentVolume: pv.metadata?.name ?? '',
      volumeHandle: pv.spec?.csi?.volumeHandle ?? '',
      ...(pv.spec?.claimRef ? { claim: `${pv.spec.claimRef.namespace}/${pv.spec.claimRef.name}` } : {}),
      ...(pv.status?.phase ? { phase: pv.status.phase } : {}),
    }));

  if (!o.dryRun) {
    for (const v of report.volumes) v.action = await removeOrphan(v, o, 'volume', async () => {
      const busy = await backend.volumeBusy(v.id);
      if (busy) return `kept: ${busy}`;
      await backend.deleteVolume(v.id);
      return 'deleted';
    });
    for (const s of report.snapshots) s.action = await removeOrphan(s, o, 'snapshot', async () => {
      await backend.deleteSnapshot(s.id);
      return 'deleted';
    });
    // Under the volume's lock: a restore still filling holds it (and its LV open), so it is never taken for a leftover.
    for (const u of report.unfinished) u.action = await removeOrphan(u, o, 'volume', async () => {
      const held = await backend.removeUnfinished!(u.id);
      return held ? `kept: ${held}` : 'deleted';
    });
  }
  await tell(report, o);
  return report;
}

async function removeOrphan(orphan: OrphanItem, o: OrphanOptions, kind: 'volume' | 'snapshot', remove: () => Promise<OrphanAction>): Promise<OrphanAction> {
  if (orphan.ageSeconds * 1000 < o.gracePeriodMs) return 'kept: younger than the grace period';
  try {
    const action = await (o.locked ? o.locked(kind, orphan.id, remove) : remove());
    log.info(`orphan ${kind} ${action}`, { id: orphan.id, name: orphan.name });
    return action;
  } catch (e) {
    return `delete failed: ${errorMessage(e)}`;
  }
}

/** Events: orphans on this Node object (they have no object of their own), a missing volume on its PV. */
async function tell(r: OrphanReport, o: OrphanOptions): Promise<void> {
  if (!o.events) return;
  const node = { apiVersion: 'v1', kind: 'Node', name: o.node };
  const verdict = (i: OrphanItem) => (i.action === 'reported' ? (r.dryRun ? 'not deleted (dry run)' : 'reported') : i.action);
  for (const v of r.volumes) await o.events.record(node, v.action === 'deleted' ? 'Normal' : 'Warning', 'OrphanVolume', `volume ${v.id} (${v.name}, ${v.sizeBytes} bytes, created ${v.createdAt}) has no PersistentVolume: ${verdict(v)}`);
  for (const s of r.snapshots) await o.events.record(node, s.action === 'deleted' ? 'Normal' : 'Warning', 'OrphanSnapshot', `snapshot ${s.id} (${s.name}, created ${s.createdAt}) has no VolumeSnapshotContent: ${verdict(s)}`);
  for (const u of r.unfinished) await o.events.record(node, u.action === 'deleted' ? 'Normal' : 'Warning', 'UnfinishedVolume', `volume ${u.id} (${u.name}, ${u.sizeBytes} bytes, created ${u.createdAt}) is what a crashed clone or restore left unfinished: ${verdict(u)}`);
  for (const m of r.missingVolumes) await o.events.record({ apiVersion: 'v1', kind: 'PersistentVolume', name: m.persistentVolume }, 'Warning', 'VolumeMissing', `volume ${m.volumeHandle} is not in the pool on node ${r.node}`);
}

/** Whether a PV's node affinity pins it to this pool through our topology segment. */
function onNode(pv: V1PersistentVolume, key: string, value: string): boolean {
  return (pv.spec?.nodeAffinity?.required?.nodeSelectorTerms ?? []).some((t) => (t.matchExpressions ?? []).some((e) => e.key === key && e.operator === 'In' && (e.values ?? []).includes(value)));
}

async function listAll<T>(page: (cont: string | undefined) => Promise<{ items: T[]; metadata?: { _continue?: string; continue?: string } }>): Promise<T[]> {
  const all: T[] = [];
  let cont: string | undefined;
  do {
    const res = await page(cont);
    all.push(...res.items);
    cont = res.metadata?._continue || res.metadata?.continue || undefined;
  } while (cont);
  return all;
}

export function orphanCounts(r: OrphanReport): Record<'volume' | 'snapshot' | 'unfinished_volume' | 'missing_volume', number> {
  const left = (items: OrphanItem[]) => items.filter((i) => i.action !== 'deleted').length;
  return { volume: left(r.volumes), snapshot: left(r.snapshots), unfinished_volume: left(r.unfinished), missing_volume: r.missingVolumes.length };
}
