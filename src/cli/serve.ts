import { readFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { HYPERVISOR_ACCESS, NODE_LOCAL_ACCESS, type AccessPolicy } from '../csi/capabilities.js';
import { HYPERVISOR_TOPOLOGY_KEY, TOPOLOGY_KEY, type DriverContext } from '../csi/context.js';
import { PROJECT_ROOT } from '../csi/proto.js';
import { startServer, type Mode, type RunningServer } from '../csi/server.js';
import { DEFAULT_SIZING } from '../csi/sizing.js';
import { KeyedLocks } from '../locks.js';
import { log, setLogLevel } from '../log.js';
import { createMetrics, serveHttp, type HttpEndpoints } from '../metrics.js';
import { PathPolicy } from '../node/paths.js';
import { FileAttacher } from '../pool/file/file-attacher.js';
import { FilePool } from '../pool/file/file-pool.js';
import { parseDuration, parseQuantity } from '../units.js';
import { loadKube, type Kube } from '../cluster/kube.js';
import { OrphanChecks } from '../cluster/orphan-checks.js';
import { PoolAgent } from '../cluster/pool-agent.js';
import type { PoolSettings } from '../cluster/volume-pool.js';
import type { Attacher, NodeVolumes, PoolBackend, Publisher } from '../pool/backend.js';
import { Domains } from '../pool/libvirt/domains.js';
import { LibvirtPool } from '../pool/libvirt/libvirt-pool.js';
import { validatePoolName } from '../pool/libvirt/names.js';
import { LibvirtPublisher } from '../pool/libvirt/libvirt-publisher.js';
import { HypervisorNodeVolumes, VirtioAttacher } from '../pool/libvirt/virtio-attacher.js';
import { Virsh } from '../pool/libvirt/virsh.js';
import { LocalNodeVolumes } from '../pool/local-volumes.js';
import { deviceMapperAvailable, LvmCli } from '../pool/lvm/lvm-cli.js';
import { LvmAttacher } from '../pool/lvm/lvm-attacher.js';
import { LvmPool } from '../pool/lvm/lvm-pool.js';
import { validateVgName } from '../pool/lvm/pool-admin.js';

export interface ServeOptions {
  endpoint: string;
  driverName: string;
  nodeId?: string;
  backend: string;
  poolDir?: string;
  vg?: string;
  overprovisionRatio: string;
  libvirtUri: string;
  libvirtPool?: string;
  hypervisor?: string;
  diskCache: string;
  attachTimeout: string;
  mode: string;
  reserve: string;
  defaultSize: string;
  allowedRoot: string[];
  maxVolumesPerNode: string;
  logLevel: string;
  metricsAddress?: string;
  socketGroup?: string;
  healthAddress?: string;
  kubeconfig?: string;
  poolFromCluster?: string;
  poolResync: string;
  orphanCheckInterval: string;
  orphanDeleteAfter?: string;
}

export function packageVersion(): string {
  return (JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

interface Opened {
  backend?: PoolBackend;
  publisher?: Publisher;
  volumes: NodeVolumes;
  attacher: Attacher;
  topology: (nodeId: string) => Record<string, string>;
  access: AccessPolicy;
  defaultNodeId: () => Promise<string>;
}

const hostnameId = async () => os.hostname();
const nodeLocal = (backend: PoolBackend, attacher: Attacher): Opened => ({
  backend,
  attacher,
  volumes: new LocalNodeVolumes(backend),
  topology: (nodeId) => ({ [TOPOLOGY_KEY]: nodeId }),
  access: NODE_LOCAL_ACCESS,
  defaultNodeId: hostnameId,
});

/** A VM's node ID is its domain UUID, which the hypervisor gives the guest as the SMBIOS system UUID. */
async function productUuid(): Promise<string> {
  const uuid = (await readFile('/sys/class/dmi/id/product_uuid', 'utf8').catch(() => '')).trim().toLowerCase();
  if (!uuid) throw new Error('cannot read /sys/class/dmi/id/product_uuid (is this a VM?); pass --node-id');
  return uuid;
}

const TOPOLOGY_VALUE = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

async function openLibvirt(opts: Parameters<typeof openBackend>[0]): Promise<Opened> {
  const seconds = Number(opts.attachTimeout);
  if (!(seconds > 0) || !Number.isFinite(seconds)) throw new Error(`--attach-timeout must be a positive number of seconds (got ${opts.attachTimeout})`);
  if (!['default', 'none', 'writethrough', 'writeback', 'directsync', 'unsafe'].includes(opts.diskCache)) throw new Error(`--disk-cache ${JSON.stringify(opts.diskCache)} is not a libvirt cache mode (none, directsync, writethrough, writeback, unsafe, default)`);
  // A node VM must know its UUID; a controller (or an all-in-one test on the hypervisor itself) falls back to the hostname.
  const defaultNodeId = opts.mode === 'node' ? productUuid : () => productUuid().catch(hostnameId);
  const common = { attacher: new VirtioAttacher({ waitMs: seconds * 1000 }), access: HYPERVISOR_ACCESS, defaultNodeId };
  const topologyOf = (hypervisor: string) => {
    if (!TOPOLOGY_VALUE.test(hypervisor)) throw new Error(`--hypervisor ${JSON.stringify(hypervisor)} is not a valid topology value (letters, digits, '.', '_', '-', ≤63)`);
    return () => ({ [HYPERVISOR_TOPOLOGY_KEY]: hypervisor });
  };
  if (opts.mode === 'node') {
    // The node VM cannot reach the pool: it knows volumes by the disks it is given.
    if (!opts.hypervisor) throw new Error('--hypervisor is required with --backend libvirt --mode node (the topology value the controller reports)');
    return { ...common, volumes: new HypervisorNodeVolumes(seconds * 1000), topology: topologyOf(opts.hypervisor) };
  }
  if (!opts.libvirtPool) throw new Error('--libvirt-pool is required with --backend libvirt');
  const virsh = new Virsh(opts.libvirtUri);
  const backend = await LibvirtPool.open(virsh, new Domains(virsh), { pool: validatePoolName(opts.libvirtPool), reserveBytes: parseQuantity(opts.reserve) });
  const hypervisor = opts.hypervisor ?? (await virsh.run(['hostname'])).trim().split('.')[0];
  return {
    ...common,
    backend,
    publisher: new LibvirtPublisher(backend, { diskCache: opts.diskCache, detachWaitMs: seconds * 1000 }),
    volumes: new HypervisorNodeVolumes(seconds * 1000),
    topology: topologyOf(hypervisor),
  };
}

export async function openBackend(opts: Pick<ServeOptions, 'backend' | 'reserve' | 'poolDir' | 'vg' | 'overprovisionRatio' | 'mode' | 'attachTimeout' | 'diskCache' | 'hypervisor' | 'libvirtUri' | 'libvirtPool'>): Promise<Opened> {
  const reserve = parseQuantity(opts.reserve);
  if (opts.backend === 'file') {
    if (!opts.poolDir) throw new Error('--pool-dir is required with --backend file');
    const pool = await FilePool.open(path.resolve(opts.poolDir), reserve, { sweep: opts.mode !== 'node' });
    return nodeLocal(pool, new FileAttacher(pool));
  }
  if (opts.backend === 'lvm') {
    if (!opts.vg) throw new Error('--vg is required with --backend lvm');
    const ratio = Number(opts.overprovisionRatio);
    if (!(ratio >= 1) || !Number.isFinite(ratio)) throw new Error(`--overprovision-ratio must be a number ≥ 1 (got ${opts.overprovisionRatio})`);
    const activation = deviceMapperAvailable();
    if (!activation) log.warn('no device-mapper in this kernel: LVs are created with activation disabled; the node side cannot stage them');
    const lvm = new LvmCli({ activation });
    const pool = await LvmPool.open(lvm, { vg: validateVgName(opts.vg), reserveBytes: reserve, overprovisionRatio: ratio });
    return nodeLocal(pool, new LvmAttacher(lvm, opts.vg));
  }
  if (opts.backend === 'libvirt') return openLibvirt(opts);
  throw new Error(`--backend ${opts.backend} is not supported (file, lvm or libvirt)`);
}

/** The metrics and health endpoints: one HTTP server per distinct address. */
async function startHttp(opts: ServeOptions, ctx: Pick<DriverContext, 'backend'>, orphans?: OrphanChecks): Promise<Server[]> {
  const endpoints = new Map<string, HttpEndpoints>();
  const health = async () => {
    await ctx.backend?.probe();
  };
  if (opts.metricsAddress) endpoints.set(opts.metricsAddress, { metrics: createMetrics(ctx.backend, orphans && (() => orphans.counts())) });
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

export async function serve(opts: ServeOptions): Promise<void> {
  setLogLevel(opts.logLevel);
  if (!['all', 'controller', 'node', 'identity'].includes(opts.mode)) throw new Error(`--mode must be all, controller, node or identity (got ${opts.mode})`);
  const socketGroup = opts.socketGroup === undefined ? undefined : Number(opts.socketGroup);
  if (socketGroup !== undefined && !(Number.isInteger(socketGroup) && socketGroup >= 0)) throw new Error(`--socket-group must be a numeric group ID (got ${opts.socketGroup})`);
  if (opts.mode === 'identity') return serveIdentity(opts, socketGroup);
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(opts.driverName)) throw new Error(`--driver-name ${opts.driverName} is not a valid CSI driver name`);
  const orphanIntervalMs = parseDuration(opts.orphanCheckInterval);
  const orphanDeleteAfterMs = opts.orphanDeleteAfter === undefined ? undefined : parseDuration(opts.orphanDeleteAfter);
  const kube = opts.poolFromCluster || orphanIntervalMs > 0 ? loadKube(opts.kubeconfig) : undefined;
  const cluster = opts.poolFromCluster && kube ? await poolFromCluster(opts, kube, opts.poolFromCluster) : undefined;
  if (cluster) opts = { ...opts, ...cluster.flags };
  const opened = await openBackend(opts);
  cluster?.served(opened.backend);
  const nodeId = opts.nodeId || (opts.mode === 'controller' ? os.hostname() : await opened.defaultNodeId());
  const ctx: DriverContext = {
    driverName: opts.driverName,
    version: packageVersion(),
    nodeId,
    backendKind: opts.backend,
    topology: opened.topology(nodeId),
    access: opened.access,
    backend: opened.backend,
    publisher: opened.publisher,
    volumes: opened.volumes,
    attacher: opened.attacher,
    paths: await PathPolicy.create(opts.allowedRoot.map((r) => path.resolve(r))),
    locks: new KeyedLocks(),
    sizing: { ...DEFAULT_SIZING, defaultBytes: parseQuantity(opts.defaultSize) },
    maxVolumesPerNode: Number(opts.maxVolumesPerNode),
  };
  const orphans = kube && ctx.backend && orphanIntervalMs > 0 ? new OrphanChecks(ctx.backend, kube, ctx.locks, { driver: ctx.driverName, node: nodeId, topology: ctx.topology, intervalMs: orphanIntervalMs, deleteAfterMs: orphanDeleteAfterMs }) : undefined;
  const server = await startServer(ctx, opts.mode as Mode, opts.endpoint, socketGroup);
  const http = await startHttp(opts, ctx, orphans);
  orphans?.start();
  log.info('serving', { socket: server.socket, driver: ctx.driverName, version: ctx.version, node: nodeId, mode: opts.mode, backend: opts.backend, pool: opts.poolDir ?? opts.vg ?? opts.libvirtPool, topology: ctx.topology, allowedRoots: ctx.paths.allowedRoots });

  stopOnSignals(server, http);
}

/**
 * --pool-from-cluster: this node's agent builds every VolumePool that selects the node, and the
 * driver serves the named one with the settings it holds. Serving starts once that pool exists
 * here; a later edit of reserve or overprovisionRatio applies at once, a new volume group or
 * directory at the next start.
 */
async function poolFromCluster(opts: ServeOptions, kube: Kube, name: string) {
  if (opts.mode !== 'all' && opts.mode !== 'node') throw new Error('--pool-from-cluster builds pools on this node: use it with --mode all or node');
  const node = opts.nodeId || os.hostname();
  let backend: PoolBackend | undefined;
  let first: PoolSettings | undefined;
  let ready: (s: PoolSettings) => void = () => undefined;
  const settled = new Promise<PoolSettings>((resolve) => (ready = resolve));
  const agent = new PoolAgent(kube, {
    node,
    lvm: new LvmCli({ activation: deviceMapperAvailable() }),
    resyncMs: parseDuration(opts.poolResync),
    onReconciled: (pool, settings, observed) => {
      if (pool !== name || !settings || observed.phase === 'Failed') return;
      if (!first) return ready((first = settings));
      if (settings.backend !== first.backend || settings.volumeGroup !== first.volumeGroup || settings.directory !== first.directory) {
        log.warn('VolumePool now names another pool; restart the driver to serve it', { pool: name });
      }
      backend?.tune?.({ reserveBytes: settings.reserveBytes, overprovisionRatio: settings.overprovisionRatio });
    },
  });
  await agent.start();
  const waiting = setInterval(() => log.warn('waiting for VolumePool to be built on this node', { pool: name, node, known: !!agent.get(name) }), 30_000);
  const s = await settled.finally(() => clearInterval(waiting));
  log.info('serving the pool of VolumePool', { pool: name, backend: s.backend, vg: s.volumeGroup, directory: s.backend === 'file' ? s.directory : undefined });
  return {
    flags: { backend: s.backend, vg: s.volumeGroup, poolDir: s.directory, reserve: String(s.reserveBytes), overprovisionRatio: String(s.overprovisionRatio) },
    served: (b: PoolBackend | undefined) => void (backend = b),
  };
}

/** Identity alone, no pool: external-resizer needs a driver to ask, and node-local pools grow on the node. */
async function serveIdentity(opts: ServeOptions, socketGroup: number | undefined): Promise<void> {
  const ctx = { driverName: opts.driverName, version: packageVersion(), backendKind: opts.backend };
  const server = await startServer(ctx, 'identity', opts.endpoint, socketGroup);
  const http = await startHttp(opts, {});
  log.info('serving', { socket: server.socket, driver: ctx.driverName, version: ctx.version, mode: 'identity' });
  stopOnSignals(server, http);
}

function stopOnSignals(server: RunningServer, http: Server[]): void {
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('draining in-flight calls', { signal });
    for (const h of http) h.close();
    void server.shutdown().then(() => {
      log.info('stopped', { signal });
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
