import type { KeyedLocks } from '../locks.js';
import type { PathPolicy } from '../host/paths.js';
import type { BlockDevices, NodeVolumeView, PoolBackend, ControllerAttacher } from '../pool/backend.js';
import type { SourceFetcher } from '../transfer/client.js';
import type { RemoteSnapshotMetadata } from './controller/snapshot-metadata.js';
import type { AccessPolicy } from './access.js';
import type { SizingPolicy } from './sizing.js';
import type { PodIoLimits } from './node/io-limits.js';
import type { VolumeRecord } from '../records.js';

/** Node-local pools: a volume is reachable on the node that holds the pool. */
export const TOPOLOGY_KEY = 'topology.vpool.dev/node';
/** Hypervisor mode: a volume is reachable from every node VM of the hypervisor that holds the pool. */
export const HYPERVISOR_TOPOLOGY_KEY = 'topology.vpool.dev/hypervisor';

/** What the driver knows at start, before any pool is open. */
export interface StartContext {
  driverName: string;
  version: string;
  nodeId: string;
  backendKind: string;
  /** Where volumes are accessible: the segments of this node's or this hypervisor's topology. */
  topology: Record<string, string>;
  access: AccessPolicy;
  paths: PathPolicy;
  locks: KeyedLocks;
  sizing: SizingPolicy;
  maxVolumesPerNode: number;
}

/** Everything the driver's operations need, built by `serve` once its pool is open and passed down (no globals). */
export interface DriverContext extends StartContext {
  /** The pool; absent on a node in hypervisor mode, which cannot reach it. */
  backend?: PoolBackend;
  /** Attaches volumes to nodes from the controller (hypervisor mode); absent for node-local pools. */
  controllerAttacher?: ControllerAttacher;
  volumeView: NodeVolumeView;
  blockDevices: BlockDevices;
  /** Reads sources other nodes hold (a restore or clone across nodes); absent when no peers are configured. */
  transfer?: SourceFetcher;
  /** Asks the node holding a snapshot for its block metadata (node-local pools); absent when no peers are configured. */
  remoteMetadata?: RemoteSnapshotMetadata;
  /** Applies a volume's recorded I/O limits where this process applies them; absent where nothing is applied. */
  volumeLimits?: VolumeLimits;
  /** Node-local pools on a node: the limits held in the cgroups of the pods using a volume. */
  podIoLimits?: PodIoLimits;
}

export interface VolumeLimits {
  /** The caller holds the volume's lock. */
  apply(volume: VolumeRecord): Promise<void>;
  /** Throws INVALID_ARGUMENT when a volume with these parameters could not be held to its limits here. */
  check(parameters: Record<string, string>): void;
}

/**
 * What the server answers a call from: the driver with its pool, or, while the pool cannot serve
 * (a served VolumePool missing, failed or being built), what is known at start and why: Probe says
 * not ready and every call that needs the pool answers UNAVAILABLE.
 */
export type DriverState = { ctx: DriverContext; notServing?: undefined } | { ctx: StartContext | DriverContext; notServing: string };

/** What the Identity service needs; a DriverState is one, and so is the resizer mode's. */
export interface IdentityState {
  ctx: Pick<DriverContext, 'driverName' | 'version' | 'backendKind' | 'backend'>;
  notServing?: string;
}

/** The controller service needs the pool. */
export type ControllerContext = DriverContext & { backend: PoolBackend };

export function hasBackend(ctx: DriverContext): ctx is ControllerContext {
  return ctx.backend !== undefined;
}
