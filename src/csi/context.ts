import type { KeyedLocks } from '../locks.js';
import type { PathPolicy } from '../node/paths.js';
import type { Attacher, PoolBackend } from '../pool/backend.js';
import type { SizingPolicy } from './sizing.js';

export const TOPOLOGY_KEY = 'topology.vpool.dev/node';

/** Everything a handler needs, built once by `serve` and passed down (no globals). */
export interface DriverContext {
  driverName: string;
  version: string;
  nodeId: string;
  backend: PoolBackend;
  attacher: Attacher;
  paths: PathPolicy;
  locks: KeyedLocks;
  sizing: SizingPolicy;
  maxVolumesPerNode: number;
}

export function topologySegments(ctx: DriverContext): Record<string, string> {
  return { [TOPOLOGY_KEY]: ctx.nodeId };
}

export const volumeLock = (id: string) => `volume/${id}`;
export const snapshotLock = (id: string) => `snapshot/${id}`;
