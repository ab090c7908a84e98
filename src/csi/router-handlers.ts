import type { ControllerHandlers } from '../../gen/csi/v1/Controller.js';
import type { GroupControllerHandlers } from '../../gen/csi/v1/GroupController.js';
import type { IdentityHandlers } from '../../gen/csi/v1/Identity.js';
import type { NodeHandlers } from '../../gen/csi/v1/Node.js';
import { callSignal } from '../call-context.js';
import type { SnapshotRouter } from '../driver/snapshot-router.js';
import { unary } from './rpc.js';

/** What the router says of itself: the driver's name, and that it is the router (not a pool). */
export interface RouterIdentity {
  driverName: string;
  version: string;
}

const signal = () => callSignal() ?? new AbortController().signal;

/**
 * The snapshot router's CSI services (driver/snapshot-router.ts), what a central csi-snapshotter asks:
 * Identity with CONTROLLER_SERVICE and GROUP_CONTROLLER_SERVICE; a Controller with
 * CREATE_DELETE_SNAPSHOT, LIST_SNAPSHOTS and MODIFY_VOLUME (no other volume calls: grpc-js answers
 * UNIMPLEMENTED for every other method, which is the truth); the GroupController; and, for the
 * central csi-resizer's start-up questions, a Node service that says only EXPAND_VOLUME. Probe is ready while the process runs: a
 * router without its certificate yet answers each call UNAVAILABLE (retried by the sidecar), which a
 * restart by the livenessprobe could not mend.
 */
export function routerHandlers(id: RouterIdentity, router: SnapshotRouter): { identity: IdentityHandlers; controller: Partial<ControllerHandlers>; group: GroupControllerHandlers; node: Partial<NodeHandlers> } {
  return {
    identity: {
      GetPluginInfo: unary('GetPluginInfo', () => ({ name: id.driverName, vendor_version: id.version, manifest: { role: 'snapshot-router' } })),
      GetPluginCapabilities: unary('GetPluginCapabilities', () => ({ capabilities: [{ service: { type: 'CONTROLLER_SERVICE' as const } }, { service: { type: 'GROUP_CONTROLLER_SERVICE' as const } }] })),
      Probe: unary('Probe', () => ({ ready: { value: true } })),
    },
    controller: {
      ControllerGetCapabilities: unary('ControllerGetCapabilities', () => ({ capabilities: [{ rpc: { type: 'CREATE_DELETE_SNAPSHOT' as const } }, { rpc: { type: 'LIST_SNAPSHOTS' as const } }, { rpc: { type: 'MODIFY_VOLUME' as const } }] })),
      ControllerModifyVolume: unary('ControllerModifyVolume', (r) => router.modifyVolume(r, signal()) as never),
      CreateSnapshot: unary('CreateSnapshot', (r) => router.createSnapshot(r, signal()) as never),
      DeleteSnapshot: unary('DeleteSnapshot', (r) => router.deleteSnapshot(r, signal()) as never),
      ListSnapshots: unary('ListSnapshots', (r) => router.listSnapshots(r, signal()) as never),
    },
    // The csi-resizer asks here too: no controller EXPAND_VOLUME and a node's, so resizes stay the kubelet's (NodeExpandVolume).
    node: {
      NodeGetCapabilities: unary('NodeGetCapabilities', () => ({ capabilities: [{ rpc: { type: 'EXPAND_VOLUME' as const } }] })),
    },
    group: {
      GroupControllerGetCapabilities: unary('GroupControllerGetCapabilities', () => ({ capabilities: [{ rpc: { type: 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT' as const } }] })),
      CreateVolumeGroupSnapshot: unary('CreateVolumeGroupSnapshot', (r) => router.createGroup(r, signal()) as never),
      DeleteVolumeGroupSnapshot: unary('DeleteVolumeGroupSnapshot', (r) => router.deleteGroup(r, signal()) as never),
      GetVolumeGroupSnapshot: unary('GetVolumeGroupSnapshot', (r) => router.getGroup(r, signal()) as never),
    },
  };
}
