import type { ControllerHandlers } from '../../gen/csi/v1/Controller.js';
import type { NodeHandlers } from '../../gen/csi/v1/Node.js';
import type { PoolFeatures } from '../driver/pool-state.js';

export type ControllerCapability =
  | 'CREATE_DELETE_VOLUME' | 'PUBLISH_UNPUBLISH_VOLUME' | 'PUBLISH_READONLY' | 'LIST_VOLUMES_PUBLISHED_NODES' | 'EXPAND_VOLUME'
  | 'CREATE_DELETE_SNAPSHOT' | 'LIST_VOLUMES' | 'LIST_SNAPSHOTS' | 'GET_CAPACITY' | 'CLONE_VOLUME' | 'GET_VOLUME' | 'VOLUME_CONDITION'
  | 'SINGLE_NODE_MULTI_WRITER' | 'MODIFY_VOLUME';
export type NodeCapability = 'STAGE_UNSTAGE_VOLUME' | 'GET_VOLUME_STATS' | 'EXPAND_VOLUME' | 'VOLUME_CONDITION' | 'SINGLE_NODE_MULTI_WRITER';

export interface ServiceCapabilities {
  controller: readonly ControllerCapability[];
  node: readonly NodeCapability[];
}

/**
 * The one table of what this driver does, as host-path keeps it: ControllerGetCapabilities and
 * NodeGetCapabilities answer from it, and every RPC that needs a capability not in it answers
 * UNIMPLEMENTED before its handler runs (server.ts).
 */
export function serviceCapabilities(pool: PoolFeatures, mode: 'all' | 'controller' | 'node' | 'resizer'): ServiceCapabilities {
  // No pool here: external-resizer learns that expansion happens on the nodes, and nothing else is served.
  if (mode === 'resizer') return { controller: [], node: ['EXPAND_VOLUME'] };
  return {
    controller: [
      // Node-local pools have nothing to attach from the controller; hypervisor mode hot-plugs disks.
      ...(pool.attachesFromController ? (['PUBLISH_UNPUBLISH_VOLUME', 'PUBLISH_READONLY', 'LIST_VOLUMES_PUBLISHED_NODES'] as const) : []),
      ...(pool.growsOnController ? (['EXPAND_VOLUME'] as const) : []),
      'CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT', 'LIST_VOLUMES', 'LIST_SNAPSHOTS', 'GET_CAPACITY', 'CLONE_VOLUME', 'GET_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER',
      ...(pool.modifiesVolumes ? (['MODIFY_VOLUME'] as const) : []),
    ],
    node: ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME', 'VOLUME_CONDITION', 'SINGLE_NODE_MULTI_WRITER'],
  };
}

/**
 * The capability each RPC needs (null: every controller or node plugin serves it). GetSnapshot is
 * served under LIST_SNAPSHOTS: GET_SNAPSHOT is not advertised, since CSI clients built before v1.10
 * reject capabilities they do not know.
 */
export const CONTROLLER_RPC_NEEDS: Record<keyof ControllerHandlers, ControllerCapability | null> = {
  CreateVolume: 'CREATE_DELETE_VOLUME',
  DeleteVolume: 'CREATE_DELETE_VOLUME',
  ControllerPublishVolume: 'PUBLISH_UNPUBLISH_VOLUME',
  ControllerUnpublishVolume: 'PUBLISH_UNPUBLISH_VOLUME',
  ValidateVolumeCapabilities: null,
  ListVolumes: 'LIST_VOLUMES',
  GetCapacity: 'GET_CAPACITY',
  ControllerGetCapabilities: null,
  CreateSnapshot: 'CREATE_DELETE_SNAPSHOT',
  DeleteSnapshot: 'CREATE_DELETE_SNAPSHOT',
  ListSnapshots: 'LIST_SNAPSHOTS',
  GetSnapshot: 'LIST_SNAPSHOTS',
  ControllerExpandVolume: 'EXPAND_VOLUME',
  ControllerGetVolume: 'GET_VOLUME',
  ControllerModifyVolume: 'MODIFY_VOLUME',
};

export const NODE_RPC_NEEDS: Record<keyof NodeHandlers, NodeCapability | null> = {
  NodeStageVolume: 'STAGE_UNSTAGE_VOLUME',
  NodeUnstageVolume: 'STAGE_UNSTAGE_VOLUME',
  NodePublishVolume: null,
  NodeUnpublishVolume: null,
  NodeGetVolumeStats: 'GET_VOLUME_STATS',
  NodeExpandVolume: 'EXPAND_VOLUME',
  NodeGetCapabilities: null,
  NodeGetInfo: null,
};

export function capabilityResponse<T extends string>(types: readonly T[]): { capabilities: Array<{ rpc: { type: T } }> } {
  return { capabilities: types.map((type) => ({ rpc: { type } })) };
}
