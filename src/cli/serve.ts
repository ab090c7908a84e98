import type { Server } from 'node:http';
import { runShutdownHooks } from '../shutdown-hooks.js';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import type { Kube } from '../cluster/kube.js';
import { TOPOLOGY_KEY, type DriverContext, type DriverState, type StartContext } from '../driver/context.js';
import { startServer, type RunningServer } from '../csi/server.js';
import { NODE_LOCAL_ACCESS } from '../driver/access.js';
import { DEFAULT_SIZING } from '../driver/sizing.js';
import { errorMessage } from '../errors.js';
import { KeyedLocks } from '../locks.js';
import { log, setLogLevel } from '../log.js';
import { PathPolicy } from '../host/paths.js';
import { packageVersion } from '../project.js';
import type { SourceFetcher } from '../transfer/client.js';
import type { RemoteSnapshotMetadata } from '../driver/controller/snapshot-metadata.js';
import { parseDuration, parseQuantity } from '../units.js';
import { backendOptions, openBackend, type BackendFlags } from './backends.js';
import type { ClusterRun } from './serve-cluster.js';
import { servePlan } from './serve-plan.js';
import { startTransfer } from './serve-transfer.js';
import { onSends } from '../transfer/events.js';
import type { StatusSources } from '../driver/status/collect.js';
import { ServedPool } from './served-pool.js';
import { PodCgroups } from '../host/cgroup-io.js';
import { PodIoLimits } from '../driver/node/io-limits.js';
import { volumeLock } from '../locks.js';
import { probePool } from '../pool/probe-once.js';

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
  transferPeersFromCluster?: string;
  transferRouterFromCluster?: string;
  transferRouterTakes: string;
  transferTrustConfigmap: string;
  transferSignerName: string;
  transferCertLifetime: string;
  transferRefresh: string;
  transferRate: string;
  transferStallTimeout: string;
  transferTimeout: string;
  transferMaxSends: string;
  cgroupRoot: string;
  kubepodsCgroup?: string[];
}

/** The metrics and health endpoints: one HTTP server per distinct address; their code is loaded only when asked for. */
async function startHttp(opts: ServeOptions, pool: ServedPool | undefined, orphanCounts?: () => Record<string, number> | undefined): Promise<Server[]> {
  if (!opts.metricsAddress && !opts.healthAddress) return [];
  const { createMetrics, serveHttp } = await import('../metrics.js');
  const endpoints = new Map<string, Parameters<typeof serveHttp>[1]>();
  const backend = () => pool?.current?.pool.backend;
  const health = async () => {
    const reason = pool?.notServing;
    if (reason) throw new Error(reason);
    const b = backend();
    // No call of its own to end its wait: it answers (503, the reason) before the chart's liveness
    // probe gives up (timeoutSeconds 10), so the kubelet's event says why.
    if (b) await probePool(b, { waitMs: 8_000 });
  };
  if (opts.metricsAddress) endpoints.set(opts.metricsAddress, { metrics: createMetrics(backend, orphanCounts) });
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

/** What the CSI server answers from: the driver context is made once, when the pool opens, from what start knew and the pool. */
function driverState(start: StartContext, pool: ServedPool, transfer: SourceFetcher | undefined, remoteMetadata: RemoteSnapshotMetadata | undefined, limits: LimitSettings): () => DriverState {
  let opened: DriverContext | undefined;
  pool.whenOpen(({ kind, pool: o }) => {
    opened = { ...start, backendKind: kind, backend: o.backend, controllerAttacher: o.controllerAttacher, volumeView: o.volumeView, blockDevices: o.blockDevices, transfer, remoteMetadata };
    const podIoLimits = podLimitsFor(opened, limits);
    if (podIoLimits) Object.assign(opened, { podIoLimits, volumeLimits: podIoLimits });
  });
  return () => {
    const reason = pool.notServing;
    return reason === undefined && opened ? { ctx: opened } : { ctx: opened ?? start, notServing: reason ?? 'starting' };
  };
}

export async function serve(opts: ServeOptions): Promise<void> {
  setLogLevel(opts.logLevel);
  const plan = servePlan(opts);
  PodCgroups.checkParents(opts.kubepodsCgroup ?? []);
  if (plan.mode === 'resizer') return serveResizer(opts, plan.socketGroup);
  const kube: Kube | undefined = plan.kube ? (await import('../cluster/kube.js')).loadKube(opts.kubeconfig) : undefined;

  // A served VolumePool opens once it is built here; until then the driver answers, but not ready.
  const pool = opts.poolFromCluster
    ? ServedPool.waiting(`waiting for VolumePool ${opts.poolFromCluster} to be built on this node`)
    : ServedPool.open(opts.backend, await openBackend(backendOptions(opts), plan.mode));
  const atStart = pool.current?.pool;
  const nodeId = opts.nodeId || (plan.mode === 'controller' || !atStart ? os.hostname() : await atStart.defaultNodeId());
  const start: StartContext = {
    driverName: opts.driverName,
    version: packageVersion(),
    nodeId,
    backendKind: opts.backend,
    topology: atStart ? atStart.topology(nodeId) : { [TOPOLOGY_KEY]: nodeId },
    access: atStart ? atStart.access : NODE_LOCAL_ACCESS,
    paths: await PathPolicy.create(opts.allowedRoot.map((r) => path.resolve(r))),
    locks: new KeyedLocks(),
    sizing: { ...DEFAULT_SIZING, defaultBytes: parseQuantity(opts.defaultSize) },
    maxVolumesPerNode: Number(opts.maxVolumesPerNode),
  };
  const transfer = await startTransfer(opts, { nodeId, driverName: start.driverName, locks: start.locks, pool });

  // The socket first: a slow or unreachable API server delays VolumePools and orphan checks, never the CSI services.
  let cluster: ClusterRun | undefined;
  let sending = 0;
  if (transfer) onSends({ changed: (n) => (sending = n), turnedAway: () => undefined });
  const inspect: StatusSources = {
    mode: plan.mode,
    startedAt: new Date(),
    ...(transfer ? { sending: () => sending } : {}),
    ...(plan.orphans ? { orphans: () => cluster?.orphanCounts() } : {}),
  };
  const server = await startServer({ mode: plan.mode, state: driverState(start, pool, transfer?.client, transfer?.metadata, { mode: plan.mode, cgroupRoot: opts.cgroupRoot, kubepods: opts.kubepodsCgroup }), inspect }, opts.endpoint, plan.socketGroup);
  const http = await startHttp(opts, pool, kube && (() => cluster?.orphanCounts()));
  log.info('serving', { socket: server.socket, driver: start.driverName, version: start.version, node: nodeId, mode: opts.mode, backend: start.backendKind, pool: opts.poolFromCluster ? `VolumePool ${opts.poolFromCluster}` : (opts.poolDir ?? opts.vg ?? opts.libvirtPool), volumePools: plan.volumePools, topology: start.topology, allowedRoots: start.paths.allowedRoots });
  stopOnSignals(server, http, transfer);
  if (kube) {
    const { startCluster } = await import('./serve-cluster.js');
    try {
      cluster = await startCluster({
        kube,
        node: nodeId,
        volumePools: plan.volumePools,
        resyncMs: parseDuration(opts.poolResync),
        serve: opts.poolFromCluster,
        openServed: async (settings) => {
          const o = await openBackend(settings, plan.mode);
          pool.setOpen(settings.kind, o);
          return o.backend;
        },
        setPending: (reason, nothingHere) => pool.setReason(reason, nothingHere),
        snapshotImport: plan.snapshotImportMs > 0 ? { driver: start.driverName, intervalMs: plan.snapshotImportMs } : undefined,
        orphans: plan.orphans ? { driver: start.driverName, topology: start.topology, intervalMs: plan.orphans.intervalMs, deleteAfterMs: plan.orphans.deleteAfterMs, locks: start.locks } : undefined,
      });
      const run = cluster;
      pool.whenOpen(({ pool: o }) => run.poolOpened(o.backend));
    } catch (e) {
      log.error('the Kubernetes side did not start: no VolumePools or orphan checks until the driver restarts', { error: errorMessage(e) });
      if (opts.poolFromCluster) pool.setReason(`the Kubernetes side did not start: ${errorMessage(e)}`);
    }
  }
}

/** A start's I/O limits that failed are tried again after 10 s, then twice as long each time up to 5 min: never given up (a volume left unlimited is a noisy neighbour). */
const RETRY_FIRST_MS = 10_000;
const RETRY_MAX_MS = 300_000;

interface LimitSettings {
  mode: string;
  cgroupRoot: string;
  kubepods?: string[];
}

/**
 * A node of a node-local pool holds its volumes' I/O limits in the cgroups of the pods using them,
 * and sets them again at start for every limited volume it finds in use (a restart, an upgrade).
 */
function podLimitsFor(ctx: DriverContext, s: LimitSettings): PodIoLimits | undefined {
  if (s.mode === 'controller' || !ctx.backend || ctx.controllerAttacher) return undefined;
  const cgroups = PodCgroups.detect(s.cgroupRoot, s.kubepods?.length ? s.kubepods : undefined);
  if (typeof cgroups === 'string') log.warn('volumes with I/O limits will not be published here', { reason: cgroups });
  else log.info(`pod I/O limits in cgroup v${cgroups.version}`, { hierarchy: cgroups.hierarchy });
  const limits = new PodIoLimits(cgroups, ctx.blockDevices);
  const backend = ctx.backend;
  // Every volume in use gets what its record says, lifts included (a modify recorded and not yet applied).
  // Tried again while anything fails: a start beside a busy disk can find a PV slow to answer.
  void (async () => {
    let ids: string[] | undefined; // the first pass: every volume; then only those that failed
    for (let attempt = 1, wait = RETRY_FIRST_MS; ; attempt++, wait = Math.min(wait * 2, RETRY_MAX_MS)) {
      let failed: string[] | undefined; // undefined: not even the listing or the node's table could be read
      try {
        failed = await limits.applyAll(
          ids ?? (await backend.listVolumes()).map((v) => v.id),
          (id, fn) =>
            ctx.locks.with([volumeLock(id)], async () => {
              const now = await backend.getVolume(id);
              if (now) await fn(now);
            }),
        );
      } catch (err) {
        log.warn('setting the volumes\' I/O limits again at start failed', { error: errorMessage(err), attempt });
      }
      if (failed && !failed.length) {
        if (attempt > 1) log.info('the volumes\' I/O limits are set again', { attempts: attempt });
        return;
      }
      if (failed) ids = failed;
      log.warn(`setting volumes' I/O limits again at start: trying again in ${wait / 1000} s`, { volumes: ids ?? 'all', attempt });
      await new Promise((r) => setTimeout(r, wait).unref());
    }
  })();
  return limits;
}

/**
 * No pool: what external-resizer needs beside pools that grow on the node (its start-up questions,
 * answered so that it hands every resize to the kubelet's NodeExpandVolume).
 */
async function serveResizer(opts: ServeOptions, socketGroup: number | undefined): Promise<void> {
  const identity = { driverName: opts.driverName, version: packageVersion(), backendKind: opts.backend };
  const server = await startServer({ mode: 'resizer', identity }, opts.endpoint, socketGroup);
  const http = await startHttp(opts, undefined);
  log.info('serving', { socket: server.socket, driver: identity.driverName, version: identity.version, mode: 'resizer' });
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
    void server.shutdown().then(() => runShutdownHooks()).then(() => {
      log.info('stopped', { signal });
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
