import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { HYPERVISOR_ACCESS, NODE_LOCAL_ACCESS, type AccessPolicy } from '../driver/access.js';
import { HYPERVISOR_TOPOLOGY_KEY, TOPOLOGY_KEY } from '../driver/context.js';
import { log } from '../log.js';
import type { BlockDevices, NodeVolumeView, PoolBackend, ControllerAttacher } from '../pool/backend.js';
import type { LibvirtTransport } from '../pool/libvirt/libvirt-api.js';
import type { CephIdentity } from '../pool/libvirt/librbd.js';
import type { Keepalive } from '../pool/libvirt/rpc/connection.js';
import { parseDuration, parseQuantity } from '../units.js';

export const DISK_CACHE_MODES = ['default', 'none', 'writethrough', 'writeback', 'directsync', 'unsafe'] as const;
export type DiskCache = (typeof DISK_CACHE_MODES)[number];
// Here, not beside the libvirt code: a file or lvm pool must not load any of it.
const LIBVIRT_TRANSPORTS = ['auto', 'rpc', 'virsh'] as const satisfies readonly LibvirtTransport[];

/** Which pool to open, with typed values: what `serve`'s flags, `reconcile` and a VolumePool all come down to. */
export type BackendOptions =
  | { kind: 'file'; poolDir: string; reserveBytes: number }
  | { kind: 'lvm'; vg: string; reserveBytes: number; overprovisionRatio: number }
  | { kind: 'libvirt'; uri: string; transport: LibvirtTransport; keepalive?: Keepalive | null; pool?: string; hypervisor?: string; diskCache: DiskCache; attachTimeoutMs: number; reserveBytes: number; ceph?: CephIdentity };

/**
 * What this process does with the pool: `node` only attaches (a node-only process beside a
 * controller must not sweep a create in progress; a libvirt node VM cannot reach the pool at all).
 */
export type BackendRole = 'all' | 'controller' | 'node';

/** The pool flags of `serve`, as strings. */
export interface BackendFlags {
  backend: string;
  reserve: string;
  poolDir?: string;
  vg?: string;
  overprovisionRatio: string;
  libvirtUri: string;
  libvirtTransport?: string;
  libvirtKeepaliveInterval?: string;
  libvirtKeepaliveCount?: string;
  libvirtPool?: string;
  cephConf?: string;
  cephUser?: string;
  cephKeyring?: string;
  hypervisor?: string;
  diskCache: string;
  attachTimeout: string;
}

/** Checks the flags once and turns them into typed options; every message names the flag. */
export function backendOptions(f: BackendFlags): BackendOptions {
  const reserveBytes = parseQuantity(f.reserve);
  if (f.backend === 'file') {
    if (!f.poolDir) throw new Error('--pool-dir is required with --backend file');
    return { kind: 'file', poolDir: path.resolve(f.poolDir), reserveBytes };
  }
  if (f.backend === 'lvm') {
    if (!f.vg) throw new Error('--vg is required with --backend lvm');
    const ratio = Number(f.overprovisionRatio);
    if (!(ratio >= 1) || !Number.isFinite(ratio)) throw new Error(`--overprovision-ratio must be a number ≥ 1 (got ${f.overprovisionRatio})`);
    return { kind: 'lvm', vg: f.vg, reserveBytes, overprovisionRatio: ratio };
  }
  if (f.backend === 'libvirt') {
    const seconds = Number(f.attachTimeout);
    if (!(seconds > 0) || !Number.isFinite(seconds)) throw new Error(`--attach-timeout must be a positive number of seconds (got ${f.attachTimeout})`);
    if (!(DISK_CACHE_MODES as readonly string[]).includes(f.diskCache)) throw new Error(`--disk-cache ${JSON.stringify(f.diskCache)} is not a libvirt cache mode (${DISK_CACHE_MODES.join(', ')})`);
    const transport = f.libvirtTransport ?? 'auto';
    if (!(LIBVIRT_TRANSPORTS as readonly string[]).includes(transport)) throw new Error(`--libvirt-transport ${JSON.stringify(transport)} is not one of ${LIBVIRT_TRANSPORTS.join(', ')}`);
    return { kind: 'libvirt', uri: f.libvirtUri, transport: transport as LibvirtTransport, keepalive: keepaliveOf(f), pool: f.libvirtPool, hypervisor: f.hypervisor, diskCache: f.diskCache as DiskCache, attachTimeoutMs: seconds * 1000, reserveBytes, ceph: cephOf(f) };
  }
  throw new Error(`--backend ${f.backend} is not supported (file, lvm or libvirt)`);
}

/** All three or none: half an identity would fail at the first Ceph call instead of at start. */
function cephOf(f: BackendFlags): CephIdentity | undefined {
  const given = [f.cephConf, f.cephUser, f.cephKeyring].filter((x) => x !== undefined).length;
  if (given === 0) return undefined;
  if (given < 3) throw new Error('--ceph-conf, --ceph-user and --ceph-keyring go together (the controller\'s Ceph identity for an rbd pool)');
  if (!/^[A-Za-z0-9_.-]+$/.test(f.cephUser!) || f.cephUser!.startsWith('client.')) throw new Error(`--ceph-user is a cephx user name without "client." (letters, digits, _ . -), not ${JSON.stringify(f.cephUser)}`);
  return { conf: path.resolve(f.cephConf!), user: f.cephUser!, keyring: path.resolve(f.cephKeyring!) };
}

function keepaliveOf(f: BackendFlags): Keepalive | null {
  const interval = f.libvirtKeepaliveInterval ?? '5s';
  let intervalMs: number;
  try {
    intervalMs = parseDuration(interval);
  } catch (err) {
    throw new Error(`--libvirt-keepalive-interval: ${(err as Error).message}`);
  }
  if (intervalMs === 0) return null;
  if (intervalMs < 1000 || intervalMs > 3_600_000) throw new Error(`--libvirt-keepalive-interval is 0 (off) or between 1s and 1h, not ${JSON.stringify(interval)}`);
  const countText = f.libvirtKeepaliveCount ?? '3';
  const count = Number(countText);
  if (!/^[0-9]+$/.test(countText) || count < 1 || count > 100) throw new Error(`--libvirt-keepalive-count is a whole number from 1 to 100, not ${JSON.stringify(countText)}`);
  return { intervalMs, count };
}

/** An open pool and what the CSI layer needs to know of it. */
export interface OpenPool {
  /** The pool; absent on a libvirt node VM, which cannot reach it. */
  backend?: PoolBackend;
  /** Hot-plugs volumes into node VMs (libvirt controller). */
  controllerAttacher?: ControllerAttacher;
  volumeView: NodeVolumeView;
  blockDevices: BlockDevices;
  topology: (nodeId: string) => Record<string, string>;
  access: AccessPolicy;
  defaultNodeId: () => Promise<string>;
}

const hostnameId = async () => os.hostname();

async function nodeLocal(backend: PoolBackend, blockDevices: BlockDevices): Promise<OpenPool> {
  const { LocalVolumeView } = await import('../pool/local-volume-view.js');
  return { backend, blockDevices, volumeView: new LocalVolumeView(backend), topology: (nodeId) => ({ [TOPOLOGY_KEY]: nodeId }), access: NODE_LOCAL_ACCESS, defaultNodeId: hostnameId };
}

/** A VM's node ID is its domain UUID, which the hypervisor gives the guest as the SMBIOS system UUID. */
async function productUuid(): Promise<string> {
  const uuid = (await readFile('/sys/class/dmi/id/product_uuid', 'utf8').catch(() => '')).trim().toLowerCase();
  if (!uuid) throw new Error('cannot read /sys/class/dmi/id/product_uuid (is this a VM?); pass --node-id');
  return uuid;
}

const TOPOLOGY_VALUE = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

async function openLibvirt(o: Extract<BackendOptions, { kind: 'libvirt' }>, role: BackendRole): Promise<OpenPool> {
  const { HypervisorVolumeView, VirtioBlockDevices } = await import('../pool/libvirt/virtio-block-devices.js');
  // A node VM must know its UUID; a controller (or an all-in-one test on the hypervisor itself) falls back to the hostname.
  const defaultNodeId = role === 'node' ? productUuid : () => productUuid().catch(hostnameId);
  const common = { blockDevices: new VirtioBlockDevices({ waitMs: o.attachTimeoutMs }), access: HYPERVISOR_ACCESS, defaultNodeId };
  const topologyOf = (hypervisor: string) => {
    if (!TOPOLOGY_VALUE.test(hypervisor)) throw new Error(`--hypervisor ${JSON.stringify(hypervisor)} is not a valid topology value (letters, digits, '.', '_', '-', ≤63)`);
    return () => ({ [HYPERVISOR_TOPOLOGY_KEY]: hypervisor });
  };
  if (role === 'node') {
    // The node VM cannot reach the pool: it knows volumes by the disks it is given.
    if (!o.hypervisor) throw new Error('--hypervisor is required with --backend libvirt --mode node (the topology value the controller reports)');
    return { ...common, volumeView: new HypervisorVolumeView(o.attachTimeoutMs), topology: topologyOf(o.hypervisor) };
  }
  if (!o.pool) throw new Error('--libvirt-pool is required with --backend libvirt');
  const [{ connectLibvirt }, { Domains }, { LibvirtPool }, { validatePoolName }, { LibvirtAttacher }] = await Promise.all([
    import('../pool/libvirt/connect.js'),
    import('../pool/libvirt/domains.js'),
    import('../pool/libvirt/libvirt-pool.js'),
    import('../pool/libvirt/names.js'),
    import('../pool/libvirt/libvirt-attacher.js'),
  ]);
  const libvirt = connectLibvirt(o.uri, o.transport, { keepalive: o.keepalive });
  const backend = await LibvirtPool.open(libvirt, new Domains(libvirt), { pool: validatePoolName(o.pool), reserveBytes: o.reserveBytes, ceph: o.ceph }, { sweep: true });
  const hypervisor = o.hypervisor ?? (await libvirt.hostname()).trim().split('.')[0];
  return {
    ...common,
    backend,
    controllerAttacher: new LibvirtAttacher(backend, { diskCache: o.diskCache, detachWaitMs: o.attachTimeoutMs }),
    volumeView: new HypervisorVolumeView(o.attachTimeoutMs),
    topology: topologyOf(hypervisor),
  };
}

/** The one way a pool is opened; each backend's code is loaded only when it is the one used. */
export async function openBackend(o: BackendOptions, role: BackendRole): Promise<OpenPool> {
  if (o.kind === 'file') {
    const [{ FilePool }, { LoopBlockDevices }] = await Promise.all([import('../pool/file/file-pool.js'), import('../pool/file/loop-block-devices.js')]);
    const pool = await FilePool.open(o.poolDir, o.reserveBytes, { sweep: role !== 'node' });
    return nodeLocal(pool, new LoopBlockDevices(pool));
  }
  if (o.kind === 'lvm') {
    const [{ deviceMapperAvailable, LvmCli }, { LvmBlockDevices }, { LvmPool }, { validateVgName }] = await Promise.all([
      import('../pool/lvm/lvm-cli.js'),
      import('../pool/lvm/lvm-block-devices.js'),
      import('../pool/lvm/lvm-pool.js'),
      import('../pool/lvm/pool-admin.js'),
    ]);
    const activation = deviceMapperAvailable();
    if (!activation) log.warn('no device-mapper in this kernel: LVs are created with activation disabled; the node side cannot stage them');
    const lvm = new LvmCli({ activation, vg: o.vg });
    const pool = await LvmPool.open(lvm, { vg: validateVgName(o.vg), reserveBytes: o.reserveBytes, overprovisionRatio: o.overprovisionRatio }, { sweep: role !== 'node' });
    return nodeLocal(pool, new LvmBlockDevices(lvm, o.vg));
  }
  return openLibvirt(o, role);
}
