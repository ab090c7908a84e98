import { readFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { HYPERVISOR_ACCESS, NODE_LOCAL_ACCESS, type AccessPolicy } from '../csi/capabilities.js';
import { HYPERVISOR_TOPOLOGY_KEY, TOPOLOGY_KEY } from '../csi/context.js';
import { log } from '../log.js';
import type { Attacher, NodeVolumes, PoolBackend, Publisher } from '../pool/backend.js';
import { parseQuantity } from '../units.js';

/** The pool flags of `serve` (and what `reconcile` and a VolumePool give in their place). */
export interface BackendFlags {
  backend: string;
  mode: string;
  reserve: string;
  poolDir?: string;
  vg?: string;
  overprovisionRatio: string;
  libvirtUri: string;
  libvirtPool?: string;
  hypervisor?: string;
  diskCache: string;
  attachTimeout: string;
}

export interface Opened {
  backend?: PoolBackend;
  publisher?: Publisher;
  volumes: NodeVolumes;
  attacher: Attacher;
  topology: (nodeId: string) => Record<string, string>;
  access: AccessPolicy;
  defaultNodeId: () => Promise<string>;
}

const hostnameId = async () => os.hostname();

async function nodeLocal(backend: PoolBackend, attacher: Attacher): Promise<Opened> {
  const { LocalNodeVolumes } = await import('../pool/local-volumes.js');
  return { backend, attacher, volumes: new LocalNodeVolumes(backend), topology: (nodeId) => ({ [TOPOLOGY_KEY]: nodeId }), access: NODE_LOCAL_ACCESS, defaultNodeId: hostnameId };
}

/** A VM's node ID is its domain UUID, which the hypervisor gives the guest as the SMBIOS system UUID. */
async function productUuid(): Promise<string> {
  const uuid = (await readFile('/sys/class/dmi/id/product_uuid', 'utf8').catch(() => '')).trim().toLowerCase();
  if (!uuid) throw new Error('cannot read /sys/class/dmi/id/product_uuid (is this a VM?); pass --node-id');
  return uuid;
}

const TOPOLOGY_VALUE = /^[A-Za-z0-9]([A-Za-z0-9._-]{0,61}[A-Za-z0-9])?$/;

async function openLibvirt(opts: BackendFlags): Promise<Opened> {
  const seconds = Number(opts.attachTimeout);
  if (!(seconds > 0) || !Number.isFinite(seconds)) throw new Error(`--attach-timeout must be a positive number of seconds (got ${opts.attachTimeout})`);
  if (!['default', 'none', 'writethrough', 'writeback', 'directsync', 'unsafe'].includes(opts.diskCache)) throw new Error(`--disk-cache ${JSON.stringify(opts.diskCache)} is not a libvirt cache mode (none, directsync, writethrough, writeback, unsafe, default)`);
  const { HypervisorNodeVolumes, VirtioAttacher } = await import('../pool/libvirt/virtio-attacher.js');
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
  const [{ Virsh }, { Domains }, { LibvirtPool }, { validatePoolName }, { LibvirtPublisher }] = await Promise.all([
    import('../pool/libvirt/virsh.js'),
    import('../pool/libvirt/domains.js'),
    import('../pool/libvirt/libvirt-pool.js'),
    import('../pool/libvirt/names.js'),
    import('../pool/libvirt/libvirt-publisher.js'),
  ]);
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

/** Opens the pool the flags name; each backend's code is loaded only when it is the one used. */
export async function openBackend(opts: BackendFlags): Promise<Opened> {
  const reserve = parseQuantity(opts.reserve);
  if (opts.backend === 'file') {
    if (!opts.poolDir) throw new Error('--pool-dir is required with --backend file');
    const [{ FilePool }, { FileAttacher }] = await Promise.all([import('../pool/file/file-pool.js'), import('../pool/file/file-attacher.js')]);
    const pool = await FilePool.open(path.resolve(opts.poolDir), reserve, { sweep: opts.mode !== 'node' });
    return nodeLocal(pool, new FileAttacher(pool));
  }
  if (opts.backend === 'lvm') {
    if (!opts.vg) throw new Error('--vg is required with --backend lvm');
    const ratio = Number(opts.overprovisionRatio);
    if (!(ratio >= 1) || !Number.isFinite(ratio)) throw new Error(`--overprovision-ratio must be a number ≥ 1 (got ${opts.overprovisionRatio})`);
    const [{ deviceMapperAvailable, LvmCli }, { LvmAttacher }, { LvmPool }, { validateVgName }] = await Promise.all([
      import('../pool/lvm/lvm-cli.js'),
      import('../pool/lvm/lvm-attacher.js'),
      import('../pool/lvm/lvm-pool.js'),
      import('../pool/lvm/pool-admin.js'),
    ]);
    const activation = deviceMapperAvailable();
    if (!activation) log.warn('no device-mapper in this kernel: LVs are created with activation disabled; the node side cannot stage them');
    const lvm = new LvmCli({ activation });
    const pool = await LvmPool.open(lvm, { vg: validateVgName(opts.vg), reserveBytes: reserve, overprovisionRatio: ratio });
    return nodeLocal(pool, new LvmAttacher(lvm, opts.vg));
  }
  if (opts.backend === 'libvirt') return openLibvirt(opts);
  throw new Error(`--backend ${opts.backend} is not supported (file, lvm or libvirt)`);
}
