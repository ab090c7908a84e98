import type { KeyedLocks } from '../locks.js';
import type { PathPolicy } from '../host/paths.js';
import type { BlockDevices, NodeVolumeView, PoolBackend, ControllerAttacher } from '../pool/backend.js';
import type { TransferClient } from '../transfer/client.js';
import type { AccessPolicy } from './access.js';
import type { SizingPolicy } from './sizing.js';

/** Node-local pools: a volume is reachable on the node that holds the pool. */
export const TOPOLOGY_KEY = 'topology.vpool.dev/node';
/** Hypervisor mode: a volume is reachable from every node VM of the hypervisor that holds the pool. */
export const HYPERVISOR_TOPOLOGY_KEY = 'topology.vpool.dev/hypervisor';

/** Everything the driver's operations need, built once by `serve` and passed down (no globals). */
export interface DriverContext {
  driverName: string;
  version: string;
  nodeId: string;
  backendKind: string;
  /** Where volumes are accessible: the segments of this node's or this hypervisor's topology. */
  topology: Record<string, string>;
  access: AccessPolicy;
  /** The pool; absent on a node in hypervisor mode, which cannot reach it. */
  backend?: PoolBackend;
  /** Attaches volumes to nodes from the controller (hypervisor mode); absent for node-local pools. */
  controllerAttacher?: ControllerAttacher;
  volumeView: NodeVolumeView;
  blockDevices: BlockDevices;
  paths: PathPolicy;
  locks: KeyedLocks;
  sizing: SizingPolicy;
  maxVolumesPerNode: number;
  /**
   * Why the pool cannot serve yet (a served VolumePool missing, failed or being built): Probe says
   * not ready and every call that needs the pool answers UNAVAILABLE. Undefined once it serves.
   */
  pending?: string;
  /** Reads sources other nodes hold (a restore or clone across nodes); absent when no peers are configured. */
  transfer?: TransferClient;
}

/** What the Identity service needs; a full DriverContext is one, and so is the resizer mode's. */
export type IdentityContext = Pick<DriverContext, 'driverName' | 'version' | 'backendKind' | 'backend' | 'pending'>;

/** The controller service needs the pool. */
export type ControllerContext = DriverContext & { backend: PoolBackend };

export function hasBackend(ctx: DriverContext): ctx is ControllerContext {
  return ctx.backend !== undefined;
}
