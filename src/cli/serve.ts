import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Kube } from '../cluster/kube.js';
import type { DriverContext } from '../driver/context.js';
import { startServer, type Mode, type RunningServer } from '../csi/server.js';
import { DEFAULT_SIZING } from '../driver/sizing.js';
import { errorMessage, unavailable } from '../errors.js';
import { KeyedLocks } from '../locks.js';
import { log, setLogLevel } from '../log.js';
import { PathPolicy } from '../host/paths.js';
import type { BlockDevices, NodeVolumeView } from '../pool/backend.js';
import { packageVersion } from '../project.js';
import { parseDuration, parseQuantity } from '../units.js';
import { backendOptions, openBackend, type BackendFlags, type BackendRole } from './backends.js';
import { NODE_LOCAL_ACCESS } from '../driver/access.js';
import { TOPOLOGY_KEY } from '../driver/context.js';
import type { ClusterRun } from './serve-cluster.js';
import { startTransfer } from './serve-transfer.js';

export interface ServeOptions extends BackendFlags {
  mode: string;
  endpoint: string;
  driverName: string;
  nodeId?: string;
  defaultSize: string;
  allowedRoot: string[];
  maxVolumesPerNode: string;
  logLevel: string;
  metricsAddress?: string;
  socketGroup?: string;
  healthAddress?: string;
  kubeconfig?: string;
  volumePools: string;
  poolFromCluster?: string;
  poolResync: string;
  orphanCheckInterval: string;
  snapshotImportInterval: string;
  orphanDeleteAfter?: string;
  transferListen?: string;
  transferTlsDir?: string;
  transferPeer?: string[];
  transferPeersFromCluster?: string;
  transferRate: string;
  transferStallTimeout: string;
  transferTimeout: string;
  transferMaxSends: string;
}

/** The metrics and health endpoints: one HTTP server per distinct address; their code is loaded only when asked for. */
async function startHttp(opts: ServeOptions, ctx: Pick<DriverContext, 'backend' | 'pending'>, orphanCounts?: () => Record<string, number> | undefined): Promise<Server[]> {
  if (!opts.metricsAddress && !opts.healthAddress) return [];
  const { createMetrics, serveHttp } = await import('../metrics.js');
  const endpoints = new Map<string, Parameters<typeof serveHttp>[1]>();
  const health = async () => {
    if (ctx.pending) throw new Error(ctx.pending);
    await ctx.backend?.probe();
  };
  if (opts.metricsAddress) endpoints.set(opts.metricsAddress, { metrics: createMetrics(() => ctx.backend, orphanCounts) });
  if (opts.healthAddress) endpoints.set(opts.healthAddress, { ...endpoints.get(opts.healthAddress), health });
  const servers: Server[] = [];
  for (const [address, e] of endpoints) {
    const s = await serveHttp(address, e);
    servers.push(s);
    // The bound port is logged: with port 0 the kernel picks one.
    log.info('serving http', { address, port: (s.address() as AddressInfo).port, metrics: !!e.metrics, health: !!e.health });
  }
  return servers;
}

/** Node-side stand-ins while the served VolumePool is not open; the server's gate answers before they are reached. */
function notOpen(ctx: Pick<DriverContext, 'pending'>): BlockDevices & NodeVolumeView {
  const refuse = async (): Promise<never> => {
    throw unavailable(`the pool is not open: ${ctx.pending ?? 'starting'}`);
  };
  return { devices: refuse, attach: refuse, attachReadOnly: refuse, detach: refuse, provablyBlank: refuse, refreshSize: refuse, deviceProblem: refuse, get: refuse, expand: refuse };
}

const kubeReachable = (opts: ServeOptions) => !!(opts.kubeconfig || process.env.KUBECONFIG || process.env.KUBERNETES_SERVICE_HOST);

export async function serve(opts: ServeOptions): Promise<void> {
  setLogLevel(opts.logLevel);
  if (!['all', 'controller', 'node', 'resizer'].includes(opts.mode)) throw new Error(`--mode must be all, controller, node or resizer (got ${opts.mode})`);
  const socketGroup = opts.socketGroup === undefined ? undefined : Number(opts.socketGroup);
  if (socketGroup !== undefined && !(Number.isInteger(socketGroup) && socketGroup >= 0)) throw new Error(`--socket-group must be a numeric group ID (got ${opts.socketGroup})`);
  if (opts.mode === 'resizer') return serveResizer(opts, socketGroup);
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(opts.driverName)) throw new Error(`--driver-name ${opts.driverName} is not a valid CSI driver name`);
  if (!['auto', 'off'].includes(opts.volumePools)) throw new Error(`--volume-pools must be auto or off (got ${opts.volumePools})`);
  const orphanIntervalMs = parseDuration(opts.orphanCheckInterval);
  const orphanDeleteAfterMs = opts.orphanDeleteAfter === undefined ? undefined : parseDuration(opts.orphanDeleteAfter);
  const onNode = opts.mode === 'all' || opts.mode === 'node';
  const nodeLocal = opts.backend === 'file' || opts.backend === 'lvm';
  if (opts.poolFromCluster && !onNode) throw new Error('--pool-from-cluster builds pools on this node: use it with --mode all or node');
  if ((opts.poolFromCluster || orphanIntervalMs > 0) && !kubeReachable(opts)) throw new Error('--pool-from-cluster and --orphan-check-interval need the Kubernetes API: pass --kubeconfig, set KUBECONFIG, or run in a pod');
  // VolumePools are built wherever a node-local node plugin can reach the API; without one (make run) there are none to build.
  const volumePools = nodeLocal && onNode && opts.volumePools === 'auto' && kubeReachable(opts);
  // Imported snapshots: node-local only (a libvirt pool's snapshotter is not per node and sees every content).
  const snapshotImportMs = nodeLocal && onNode && kubeReachable(opts) ? parseDuration(opts.snapshotImportInterval) : 0;
  const kube: Kube | undefined = volumePools || opts.poolFromCluster || orphanIntervalMs > 0 || snapshotImportMs > 0 ? (await import('../cluster/kube.js')).loadKube(opts.kubeconfig) : undefined;

  // A served VolumePool opens once it is built here; until then the driver answers, but not ready.
  const role = opts.mode as BackendRole;
  const opened = opts.poolFromCluster ? undefined : await openBackend(backendOptions(opts), role);
  const nodeId = opts.nodeId || (opts.mode === 'controller' || !opened ? os.hostname() : await opened.defaultNodeId());
  const ctx: DriverContext = {
    driverName: opts.driverName,
    version: packageVersion(),
    nodeId,
    backendKind: opts.backend,
    topology: opened ? opened.topology(nodeId) : { [TOPOLOGY_KEY]: nodeId },
    access: opened ? opened.access : NODE_LOCAL_ACCESS,
    backend: opened?.backend,
    controllerAttacher: opened?.controllerAttacher,
    volumeView: opened?.volumeView as NodeVolumeView,
    blockDevices: opened?.blockDevices as BlockDevices,
    paths: await PathPolicy.create(opts.allowedRoot.map((r) => path.resolve(r))),
    locks: new KeyedLocks(),
    sizing: { ...DEFAULT_SIZING, defaultBytes: parseQuantity(opts.defaultSize) },
    maxVolumesPerNode: Number(opts.maxVolumesPerNode),
    pending: opts.poolFromCluster ? `waiting for VolumePool ${opts.poolFromCluster} to be built on this node` : undefined,
  };
  if (!opened) Object.assign(ctx, { volumeView: notOpen(ctx), blockDevices: notOpen(ctx) });
  const transfer = await startTransfer(opts, ctx);

  // The socket first: a slow or unreachable API server delays VolumePools and orphan checks, never the CSI services.
  let cluster: ClusterRun | undefined;
  const server = await startServer(ctx, opts.mode as Mode, opts.endpoint, socketGroup);
  const http = await startHttp(opts, ctx, kube && (() => cluster?.orphanCounts()));
  log.info('serving', { socket: server.socket, driver: ctx.driverName, version: ctx.version, node: nodeId, mode: opts.mode, backend: ctx.backendKind, pool: opts.poolFromCluster ? `VolumePool ${opts.poolFromCluster}` : (opts.poolDir ?? opts.vg ?? opts.libvirtPool), volumePools, topology: ctx.topology, allowedRoots: ctx.paths.allowedRoots });
  stopOnSignals(server, http, transfer);
  if (kube) {
    const { startCluster } = await import('./serve-cluster.js');
    try {
      cluster = await startCluster({
        kube,
        node: nodeId,
        volumePools,
        resyncMs: parseDuration(opts.poolResync),
        serve: opts.poolFromCluster,
        openServed: async (pool) => {
          const o = await openBackend(pool, role);
          Object.assign(ctx, { backend: o.backend, volumeView: o.volumeView, blockDevices: o.blockDevices, backendKind: pool.kind });
          return o.backend;
        },
        setPending: (reason) => void (ctx.pending = reason),
        snapshotImport: snapshotImportMs > 0 ? { driver: ctx.driverName, intervalMs: snapshotImportMs } : undefined,
        orphans: (nodeLocal || opts.poolFromCluster) && orphanIntervalMs > 0 ? { driver: ctx.driverName, topology: ctx.topology, intervalMs: orphanIntervalMs, deleteAfterMs: orphanDeleteAfterMs, locks: ctx.locks } : undefined,
      });
      cluster.poolOpened(ctx.backend);
    } catch (e) {
      log.error('the Kubernetes side did not start: no VolumePools or orphan checks until the driver restarts', { error: errorMessage(e) });
      if (opts.poolFromCluster) ctx.pending = `the Kubernetes side did not start: ${errorMessage(e)}`;
    }
  }
}

/**
 * No pool: what external-resizer needs beside pools that grow on the node (its start-up questions,
 * answered so that it hands every resize to the kubelet's NodeExpandVolume).
 */
async function serveResizer(opts: ServeOptions, socketGroup: number | undefined): Promise<void> {
  if (opts.backend === 'libvirt') throw new Error('--mode resizer is for pools that grow on the node (file, lvm); libvirt volumes grow on the controller (--mode controller)');
  const ctx = { driverName: opts.driverName, version: packageVersion(), backendKind: opts.backend };
  const server = await startServer(ctx, 'resizer', opts.endpoint, socketGroup);
  const http = await startHttp(opts, {});
  log.info('serving', { socket: server.socket, driver: ctx.driverName, version: ctx.version, mode: 'resizer' });
  stopOnSignals(server, http);
}

function stopOnSignals(server: RunningServer, http: Server[], transfer?: { close(): Promise<void> }): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('draining in-flight calls', { signal });
    for (const h of http) h.close();
    void transfer?.close();
    void server.shutdown().then(() => {
      log.info('stopped', { signal });
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
