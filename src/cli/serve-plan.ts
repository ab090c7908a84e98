import { parseDuration } from '../units.js';
import type { BackendRole } from './backends.js';
import type { ServeOptions } from './serve.js';

/** Which parts `serve` runs, decided once from its flags; every refusal names the flag. */
export type ServePlan =
  | { mode: 'resizer'; socketGroup?: number }
  | {
      mode: BackendRole;
      socketGroup?: number;
      /** Build and report the VolumePools that select this node. */
      volumePools: boolean;
      /** Report (and maybe delete) backend volumes no PV owns. */
      orphans?: { intervalMs: number; deleteAfterMs?: number };
      /** Take up imported snapshots this node holds; 0: never. */
      snapshotImportMs: number;
      /** Some part needs the Kubernetes API. */
      kube: boolean;
    };

const kubeReachable = (opts: ServeOptions) => !!(opts.kubeconfig || process.env.KUBECONFIG || process.env.KUBERNETES_SERVICE_HOST);

export function servePlan(opts: ServeOptions): ServePlan {
  if (!['all', 'controller', 'node', 'resizer'].includes(opts.mode)) throw new Error(`--mode must be all, controller, node or resizer (got ${opts.mode})`);
  const socketGroup = opts.socketGroup === undefined ? undefined : Number(opts.socketGroup);
  if (socketGroup !== undefined && !(Number.isInteger(socketGroup) && socketGroup >= 0)) throw new Error(`--socket-group must be a numeric group ID (got ${opts.socketGroup})`);
  if (opts.mode === 'resizer') {
    if (opts.backend === 'libvirt') throw new Error('--mode resizer is for pools that grow on the node (file, lvm); libvirt volumes grow on the controller (--mode controller)');
    return { mode: 'resizer', socketGroup };
  }
  const mode = opts.mode as BackendRole;
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(opts.driverName)) throw new Error(`--driver-name ${opts.driverName} is not a valid CSI driver name`);
  if (!['auto', 'off'].includes(opts.volumePools)) throw new Error(`--volume-pools must be auto or off (got ${opts.volumePools})`);
  const orphanIntervalMs = parseDuration(opts.orphanCheckInterval);
  const orphanDeleteAfterMs = opts.orphanDeleteAfter === undefined ? undefined : parseDuration(opts.orphanDeleteAfter);
  const onNode = mode === 'all' || mode === 'node';
  const nodeLocal = opts.backend === 'file' || opts.backend === 'lvm';
  if (opts.poolFromCluster && !onNode) throw new Error('--pool-from-cluster builds pools on this node: use it with --mode all or node');
  if ((opts.poolFromCluster || orphanIntervalMs > 0) && !kubeReachable(opts)) throw new Error('--pool-from-cluster and --orphan-check-interval need the Kubernetes API: pass --kubeconfig, set KUBECONFIG, or run in a pod');
  // VolumePools are built wherever a node-local node plugin can reach the API; without one (make run) there are none to build.
  const volumePools = nodeLocal && onNode && opts.volumePools === 'auto' && kubeReachable(opts);
  // Imported snapshots: node-local only (a libvirt pool's snapshotter is not per node and sees every content).
  const snapshotImportMs = nodeLocal && onNode && kubeReachable(opts) ? parseDuration(opts.snapshotImportInterval) : 0;
  const orphans = (nodeLocal || opts.poolFromCluster) && orphanIntervalMs > 0 ? { intervalMs: orphanIntervalMs, deleteAfterMs: orphanDeleteAfterMs } : undefined;
  return { mode, socketGroup, volumePools, orphans, snapshotImportMs, kube: volumePools || !!opts.poolFromCluster || orphanIntervalMs > 0 || snapshotImportMs > 0 };
}
