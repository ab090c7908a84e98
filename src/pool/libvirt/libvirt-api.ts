import { precondition, unavailable } from '../../errors.js';
import type { Virsh } from './virsh.js';

/** How calls reach libvirt: auto is the held RPC connection for the local system daemon, virsh otherwise. */
export type LibvirtTransport = 'auto' | 'rpc' | 'virsh';

/** A storage pool's state and sizes, as virStoragePoolGetInfo reports them. */
export interface PoolInfo {
  running: boolean;
  /** libvirt's word for the state: inactive, building, running, degraded, inaccessible. */
  state: string;
  capacity: number;
  allocation: number;
  available: number;
}

/** Where a device change applies: the running domain, its persistent definition, or both. */
export interface Affect {
  live: boolean;
  config: boolean;
}

/** A stream of one domain's events: next() gives each (a device alias, a line) and null once it ended. */
export interface EventWatch {
  next(): Promise<string | null>;
  stop(): Promise<void>;
  /** Over RPC: true once libvirtd has registered the callback (events from then on are seen), false if it could not. */
  ready?: Promise<boolean>;
}

/**
 * What the libvirt backend asks of libvirt, in libvirt's own terms (the virStorage* and virDomain*
 * calls), whichever way it is reached: one held RPC connection to a local libvirtd (rpc-libvirt.ts),
 * or a virsh per call for any URI libvirt accepts (virsh-libvirt.ts). A missing object is a
 * LibvirtMissingError either way.
 */
export interface Libvirt {
  readonly uri: string;
  /** rpc or virsh: how calls reach libvirtd. */
  readonly transport: 'rpc' | 'virsh';
  /** For the few rare acts done with virsh on either transport (a push backup job). */
  readonly virsh: Virsh;

  hostname(): Promise<string>;
  poolXml(pool: string): Promise<string | null>;
  poolInfo(pool: string): Promise<PoolInfo>;
  volumeNames(pool: string): Promise<string[]>;
  volumeXml(pool: string, name: string): Promise<string | null>;
  createVolume(pool: string, xml: string): Promise<void>;
  createVolumeFrom(pool: string, xml: string, source: string, timeoutMs: number): Promise<void>;
  resizeVolume(pool: string, name: string, capacity: number): Promise<void>;
  wipeVolume(pool: string, name: string, algorithm: string, timeoutMs: number): Promise<void>;
  /** `withSnapshots`: also the snapshots libvirt took of it to clone it (rbd pools; other pools refuse the flag). */
  deleteVolume(pool: string, name: string, opts?: { withSnapshots?: boolean }): Promise<void>;

  /** A domain's XML by UUID or name (the live one when it runs, unless inactive); null when there is none. */
  domainXml(domain: string, inactive?: boolean): Promise<string | null>;
  /** The UUIDs of every domain, running or not. */
  domainUuids(): Promise<string[]>;
  attachDevice(domain: string, xml: string, affect: Affect): Promise<void>;
  detachDevice(domain: string, xml: string, affect: Affect): Promise<void>;
  blockResize(domain: string, target: string, bytes: number): Promise<void>;
  /** virDomainSetBlockIoTune: QEMU's throttling of one disk (libvirt's <iotune> field names, whole numbers; 0 lifts). */
  setBlockIoTune(domain: string, target: string, fields: Record<string, number>, affect: Affect): Promise<void>;
  /** libvirt's device-removed events of one domain for at most timeoutMs. */
  deviceRemoved(domain: string, timeoutMs: number): EventWatch;

  close(): void;
}

/** The storage pool states of virStoragePoolState, by number. */
export const POOL_STATES = ['inactive', 'building', 'running', 'degraded', 'inaccessible'] as const;

/** virStorageVolWipeAlgorithm's numbers for the algorithms the driver offers. */
export const WIPE_ALGORITHM_NUMBERS: Record<string, number> = { zero: 0, random: 8, trim: 9 };

/**
 * libvirt's words when the storage behind a pool fails it (an rbd pool; libvirt 9.0's RADOS
 * messages, matched by their prefix: the errno text libvirt appends is not reliable). Monitors down
 * or hung (libvirt gives up after its 30 s RADOS timeouts), or a key they refuse: UNAVAILABLE, with
 * what to check. The Ceph pool missing, or the user not allowed in it: FAILED_PRECONDITION.
 */
const UNREACHABLE = /failed to connect to the RADOS monitor|failed to stat the RADOS cluster/i;
const NO_POOL = /failed to create the RBD IoCTX/i;

export function storageFailure(message: string): Error | null {
  const m = message.trim();
  if (UNREACHABLE.test(m)) return unavailable(`the pool's storage does not answer libvirtd, or refuses its Ceph user (${m}); check the monitors and the key in libvirt's secret; retry once it answers`);
  if (NO_POOL.test(m)) return precondition(`libvirtd reaches Ceph but cannot open the pool's Ceph pool: it does not exist, or libvirt's Ceph user may not use it (${m})`);
  return null;
}
