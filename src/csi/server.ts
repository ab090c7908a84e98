import * as grpc from '@grpc/grpc-js';
import { chmod, chown, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import type { ControllerHandlers } from '../../gen/csi/v1/Controller.js';
import type { IdentityHandlers } from '../../gen/csi/v1/Identity.js';
import type { NodeHandlers } from '../../gen/csi/v1/Node.js';
import type { SnapshotMetadataHandlers } from '../../gen/csi/v1/SnapshotMetadata.js';
import type { GroupControllerHandlers } from '../../gen/csi/v1/GroupController.js';
import { createVolumeGroupSnapshot, deleteVolumeGroupSnapshot, getVolumeGroupSnapshot } from './group-controller.js';
import { errno, invalid, notFound, unavailable, unsupported } from '../errors.js';
import { collectStatus, OneRead, volumeDetail, volumeDetails, type StatusSources } from '../driver/status/collect.js';
import { parseId } from '../ids.js';
import { INSPECT_SERVICE, MAX_PAGE, type VolumesRequest } from './inspect-service.js';
import { hasBackend, type ControllerContext, type DriverContext, type DriverState, type IdentityState, type StartContext } from '../driver/context.js';
import { poolFeatures } from '../driver/pool-state.js';
import { controllerExpandVolume, controllerPublishVolume, controllerUnpublishVolume } from './controller/publish.js';
import { controllerGetVolume, listVolumes, validateVolumeCapabilities } from './controller/queries.js';
import { createSnapshot, deleteSnapshot, getSnapshot, listSnapshots } from './controller/snapshots.js';
import { controllerModifyVolume, createVolume, deleteVolume, getCapacity } from './controller/volumes.js';
import { getPluginCapabilities, getPluginInfo, probe } from './identity.js';
import { nodeExpandVolume, nodeGetInfo, nodeGetVolumeStats } from './node/info-stats-expand.js';
import { capabilityResponse, CONTROLLER_RPC_NEEDS, NODE_RPC_NEEDS, serviceCapabilities } from './service-capabilities.js';
import { nodePublishVolume, nodeStageVolume, nodeUnpublishVolume, nodeUnstageVolume } from './node/stage-publish.js';
import { loadCsi } from './proto.js';
import { socketPath } from './socket-path.js';

export { socketPath };
import type { routerHandlers } from './router-handlers.js';
import { serverStream, unary } from './rpc.js';
import { getMetadataAllocated, getMetadataDelta } from './snapshot-metadata.js';
import { operationsInProgress } from '../operations.js';

/**
 * `resizer` serves what external-resizer asks at start, and nothing else, for pools that grow on the
 * node: Identity with CONTROLLER_SERVICE, a Controller service with no optional capability (no
 * EXPAND_VOLUME, so the resizer does not call ControllerExpandVolume) and NodeGetCapabilities with
 * EXPAND_VOLUME (so it becomes the "trivial resizer" that hands the resize to the kubelet's
 * NodeExpandVolume on the node plugin).
 */
export type Mode = 'all' | 'controller' | 'node' | 'resizer';


function identityHandlers(state: () => IdentityState, mode: Mode): IdentityHandlers {
  return {
    GetPluginInfo: unary('GetPluginInfo', () => getPluginInfo(state())),
    // The resizer's CONTROLLER_SERVICE is what external-resizer asks for at start; it serves neither snapshot service.
    GetPluginCapabilities: unary('GetPluginCapabilities', () => getPluginCapabilities(mode !== 'node', mode === 'resizer' ? undefined : poolFeatures(state().ctx))),
    Probe: unary('Probe', () => probe(state())),
  };
}

/**
 * Handlers behind the capability table and the pool's readiness, each given the state of this call:
 * UNIMPLEMENTED when the RPC needs a capability this driver does not advertise; `served` handlers
 * get the driver with its pool, or UNAVAILABLE with the reason while it cannot serve; `always`
 * handlers (what the sidecars and the kubelet ask at start) get what is known either way.
 */
function gate<C extends DriverContext>(state: () => DriverState, mode: Mode, service: 'controller' | 'node', usable: (ctx: DriverContext) => ctx is C) {
  const needs: Record<string, string | null> = service === 'controller' ? CONTROLLER_RPC_NEEDS : NODE_RPC_NEEDS;
  const checked = (method: string) => {
    const s = state();
    const need = needs[method];
    if (need && !(serviceCapabilities(poolFeatures(s.ctx), mode)[service] as readonly string[]).includes(need)) throw unsupported(`${method} is not supported by this driver (no ${need} capability)`);
    return s;
  };
  return {
    served:
      <Req, Res>(method: string, fn: (ctx: C, req: Req) => Promise<Res> | Res) =>
      unary<Req, Res>(method, (req) => {
        const s = checked(method);
        if (s.notServing !== undefined) throw unavailable(`the pool is not ready: ${s.notServing}`);
        if (!usable(s.ctx)) throw unavailable(`${method} needs the pool, and this process has none`);
        return fn(s.ctx, req);
      }),
    always:
      <Req, Res>(method: string, fn: (ctx: StartContext | DriverContext, req: Req) => Promise<Res> | Res) =>
      unary<Req, Res>(method, (req) => fn(checked(method).ctx, req)),
  };
}

const anyContext = (ctx: DriverContext): ctx is DriverContext => true;

function controllerHandlers(state: () => DriverState, mode: Mode): ControllerHandlers {
  const { served, always } = gate(state, mode, 'controller', hasBackend);
  return {
    CreateVolume: served('CreateVolume', (ctx, r) => createVolume(ctx, r)),
    DeleteVolume: served('DeleteVolume', (ctx, r) => deleteVolume(ctx, r)),
    ValidateVolumeCapabilities: served('ValidateVolumeCapabilities', (ctx, r) => validateVolumeCapabilities(ctx, r)),
    ListVolumes: served('ListVolumes', (ctx, r) => listVolumes(ctx, r)),
    GetCapacity: served('GetCapacity', (ctx, r) => getCapacity(ctx, r)),
    ControllerGetCapabilities: always('ControllerGetCapabilities', (ctx) => capabilityResponse(serviceCapabilities(poolFeatures(ctx), mode).controller)),
    ControllerGetVolume: served('ControllerGetVolume', (ctx, r) => controllerGetVolume(ctx, r)),
    CreateSnapshot: served('CreateSnapshot', (ctx, r) => createSnapshot(ctx, r)),
    DeleteSnapshot: served('DeleteSnapshot', (ctx, r) => deleteSnapshot(ctx, r)),
    ListSnapshots: served('ListSnapshots', (ctx, r) => listSnapshots(ctx, r)),
    GetSnapshot: served('GetSnapshot', (ctx, r) => getSnapshot(ctx, r)),
    ControllerPublishVolume: served('ControllerPublishVolume', (ctx, r) => controllerPublishVolume(ctx, r)),
    ControllerUnpublishVolume: served('ControllerUnpublishVolume', (ctx, r) => controllerUnpublishVolume(ctx, r)),
    ControllerExpandVolume: served('ControllerExpandVolume', (ctx, r) => controllerExpandVolume(ctx, r)),
    ControllerModifyVolume: served('ControllerModifyVolume', (ctx, r) => controllerModifyVolume(ctx, r)),
  };
}

/**
 * The SnapshotMetadata service, beside the controller, where the pool tells its snapshots' blocks
 * (UNIMPLEMENTED elsewhere, as GetPluginCapabilities says).
 */
function snapshotMetadataHandlers(state: () => DriverState): SnapshotMetadataHandlers {
  const served =
    <Req, Res>(method: string, fn: (ctx: ControllerContext, req: Req, signal: AbortSignal) => Promise<AsyncIterable<Res>>) =>
    serverStream<Req, Res>(method, async (req, signal) => {
      const s = state();
      if (s.notServing !== undefined) throw unavailable(`the pool is not ready: ${s.notServing}`);
      if (!hasBackend(s.ctx)) throw unavailable(`${method} needs the pool, and this process has none`);
      if (!poolFeatures(s.ctx).snapshotMetadata) throw unsupported(`${method} is not supported by the ${s.ctx.backendKind} pool (no SNAPSHOT_METADATA_SERVICE)`);
      return fn(s.ctx, req, signal);
    });
  return {
    GetMetadataAllocated: served('GetMetadataAllocated', getMetadataAllocated),
    GetMetadataDelta: served('GetMetadataDelta', getMetadataDelta),
  };
}

/** The GroupController service, beside the controller, where the pool cuts group snapshots (UNIMPLEMENTED elsewhere). */
function groupControllerHandlers(state: () => DriverState): GroupControllerHandlers {
  const served = <Req, Res>(method: string, fn: (ctx: ControllerContext, req: Req) => Promise<Res>) =>
    unary<Req, Res>(method, (req) => {
      const s = state();
      if (s.notServing !== undefined) throw unavailable(`the pool is not ready: ${s.notServing}`);
      if (!hasBackend(s.ctx)) throw unavailable(`${method} needs the pool, and this process has none`);
      if (!poolFeatures(s.ctx).groupSnapshots) throw unsupported(`${method} is not supported by the ${s.ctx.backendKind} pool (no GROUP_CONTROLLER_SERVICE)`);
      return fn(s.ctx, req);
    });
  return {
    GroupControllerGetCapabilities: unary('GroupControllerGetCapabilities', () => ({
      capabilities: poolFeatures(state().ctx).groupSnapshots ? [{ rpc: { type: 'CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT' as const } }] : [],
    })),
    CreateVolumeGroupSnapshot: served('CreateVolumeGroupSnapshot', createVolumeGroupSnapshot),
    DeleteVolumeGroupSnapshot: served('DeleteVolumeGroupSnapshot', deleteVolumeGroupSnapshot),
    GetVolumeGroupSnapshot: served('GetVolumeGroupSnapshot', getVolumeGroupSnapshot),
  };
}

/**
 * The capability queries alone, from the same table: grpc-js answers UNIMPLEMENTED for every method
 * a service leaves out, which is the truth here (this process has no pool and no node).
 */
function resizerHandlers(): { controller: Partial<ControllerHandlers>; node: Partial<NodeHandlers> } {
  const caps = serviceCapabilities(poolFeatures({}), 'resizer');
  return {
    controller: { ControllerGetCapabilities: unary('ControllerGetCapabilities', () => capabilityResponse(caps.controller)) },
    node: { NodeGetCapabilities: unary('NodeGetCapabilities', () => capabilityResponse(caps.node)) },
  };
}

function nodeHandlers(state: () => DriverState, mode: Mode): NodeHandlers {
  const { served, always } = gate(state, mode, 'node', anyContext);
  return {
    NodeStageVolume: served('NodeStageVolume', (ctx, r) => nodeStageVolume(ctx, r)),
    NodeUnstageVolume: served('NodeUnstageVolume', (ctx, r) => nodeUnstageVolume(ctx, r)),
    NodePublishVolume: served('NodePublishVolume', (ctx, r) => nodePublishVolume(ctx, r)),
    NodeUnpublishVolume: served('NodeUnpublishVolume', (ctx, r) => nodeUnpublishVolume(ctx, r)),
    NodeGetVolumeStats: served('NodeGetVolumeStats', (ctx, r) => nodeGetVolumeStats(ctx, r)),
    NodeExpandVolume: served('NodeExpandVolume', (ctx, r) => nodeExpandVolume(ctx, r)),
    NodeGetCapabilities: always('NodeGetCapabilities', (ctx) => capabilityResponse(serviceCapabilities(poolFeatures(ctx), mode).node)),
    // The registrar registers the node with what this says, pool or not.
    NodeGetInfo: always('NodeGetInfo', (ctx) => nodeGetInfo(ctx)),
  };
}

/** vpool.v1.Inspect (src/status/): the status of the whole node, and volumes with what CSI does not carry. */
function inspectHandlers(state: () => DriverState, mode: Mode, sources: StatusSources): grpc.UntypedServiceImplementation {
  const reads = new OneRead();
  // A JSON request is whatever the caller sent: anything but an object reads as an empty one.
  const fields = (req: unknown): Record<string, unknown> => (req && typeof req === 'object' && !Array.isArray(req) ? (req as Record<string, unknown>) : {});
  const withPool = (): ControllerContext => {
    const s = state();
    if (s.notServing !== undefined) throw unavailable(`the pool is not ready: ${s.notServing}`);
    if (!('volumeView' in s.ctx) || !hasBackend(s.ctx)) throw unavailable('this node plugin has no pool (hypervisor mode: the controller holds it); ask the controller');
    return s.ctx;
  };
  return {
    Status: unary('InspectStatus', () => reads.run('the status', (track) => collectStatus(state(), sources, track))),
    Volumes: unary('InspectVolumes', (req: VolumesRequest) => {
      const { after = '', limit = MAX_PAGE } = fields(req) as VolumesRequest;
      if (typeof after !== 'string' || (after !== '' && parseId('vol', 'after', after) === null)) throw invalid('after must be a volume ID (the last of the page before)');
      if (!Number.isInteger(limit) || limit < 1 || limit > MAX_PAGE) throw invalid(`limit must be a whole number from 1 to ${MAX_PAGE}`);
      const ctx = withPool();
      return reads.run('the volume listing', () => volumeDetails(ctx, after, limit, mode !== 'controller'));
    }),
    Volume: unary('InspectVolume', async (req: { id?: string }) => {
      const asked = fields(req).id;
      const id = parseId('vol', 'id', typeof asked === 'string' ? asked : '');
      const ctx = withPool();
      const found = id ? await reads.run('the volume', () => volumeDetail(ctx, id, mode !== 'controller')) : null;
      if (!found) throw notFound(`volume ${String(asked)} does not exist`);
      return found;
    }),
    Operations: unary('InspectOperations', () => ({ operations: operationsInProgress() }), { quiet: true }),
  };
}

/** Removes a socket left by a crashed driver; refuses to steal one that a live process answers on. */
async function clearStaleSocket(p: string): Promise<void> {
  const st = await lstat(p).catch((err) => {
    if (errno(err) === 'ENOENT') return null;
    throw err;
  });
  if (!st) return;
  if (!st.isSocket()) throw new Error(`${p} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const s = net.connect(p);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
  if (live) throw new Error(`another process is serving on ${p}`);
  await unlink(p);
}

export interface RunningServer {
  socket: string;
  /** Stops accepting calls, lets in-flight ones finish, removes the socket. */
  shutdown(): Promise<void>;
}

/** What a server serves: the driver (its state at each call), or the resizer mode's identity alone. */
export type Served =
  | { mode: Exclude<Mode, 'resizer'>; state: () => DriverState; inspect?: StatusSources }
  | { mode: 'resizer'; identity: IdentityState['ctx'] }
  /** The snapshot router's services alone (router-handlers.ts): no pool, no node. */
  | { mode: 'snapshot-router'; handlers: ReturnType<typeof routerHandlers> };

export async function startServer(served: Served, endpoint: string, socketGroup?: number): Promise<RunningServer> {
  const csi = loadCsi().csi.v1;
  // No channelz: it counts and traces every call for a debugging service this server never exposes.
  const server = new grpc.Server({ 'grpc.enable_channelz': 0 });
  if (served.mode === 'snapshot-router') {
    server.addService(csi.Identity.service, served.handlers.identity);
    server.addService(csi.Controller.service, served.handlers.controller as grpc.UntypedServiceImplementation);
    server.addService(csi.GroupController.service, served.handlers.group);
    server.addService(csi.Node.service, served.handlers.node as grpc.UntypedServiceImplementation);
  } else if (served.mode === 'resizer') {
    const identity = { ctx: served.identity };
    server.addService(csi.Identity.service, identityHandlers(() => identity, 'resizer'));
    const { controller, node } = resizerHandlers();
    server.addService(csi.Controller.service, controller as grpc.UntypedServiceImplementation);
    server.addService(csi.Node.service, node as grpc.UntypedServiceImplementation);
  } else {
    const { mode, state } = served;
    server.addService(csi.Identity.service, identityHandlers(state, mode));
    if (mode !== 'node') server.addService(csi.Controller.service, controllerHandlers(state, mode));
    if (mode !== 'node') server.addService(csi.SnapshotMetadata.service, snapshotMetadataHandlers(state));
    if (mode !== 'node') server.addService(csi.GroupController.service, groupControllerHandlers(state));
    if (mode !== 'controller') server.addService(csi.Node.service, nodeHandlers(state, mode));
    if (served.inspect) server.addService(INSPECT_SERVICE, inspectHandlers(state, mode, served.inspect));
  }

  const socket = socketPath(endpoint);
  await clearStaleSocket(socket);
  // Create the socket 0660 from the start rather than chmod-ing a window open after bind.
  const umask = process.umask(0o117);
  try {
    await new Promise<number>((resolve, reject) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))));
  } finally {
    process.umask(umask);
  }
  // Non-root sidecars reach the socket through its group.
  if (socketGroup !== undefined) await chown(socket, process.getuid?.() ?? 0, socketGroup);
  await chmod(socket, 0o660);
  return {
    socket,
    shutdown: () =>
      new Promise<void>((resolve) => {
        server.tryShutdown(() => {
          unlink(socket).catch(() => undefined).finally(resolve);
        });
      }),
  };
}
