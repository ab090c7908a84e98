import * as grpc from '@grpc/grpc-js';
import { chmod, chown, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import type { ControllerHandlers } from '../../gen/csi/v1/Controller.js';
import type { IdentityHandlers } from '../../gen/csi/v1/Identity.js';
import type { NodeHandlers } from '../../gen/csi/v1/Node.js';
import { errno, unavailable, unsupported } from '../errors.js';
import { hasBackend, type ControllerContext, type DriverContext, type IdentityContext } from '../driver/context.js';
import { poolFeatures } from '../driver/pool-state.js';
import { controllerExpandVolume, controllerPublishVolume, controllerUnpublishVolume } from './controller/publish.js';
import { controllerGetVolume, listVolumes, validateVolumeCapabilities } from './controller/queries.js';
import { createSnapshot, deleteSnapshot, getSnapshot, listSnapshots } from './controller/snapshots.js';
import { createVolume, deleteVolume, getCapacity } from './controller/volumes.js';
import { getPluginCapabilities, getPluginInfo, probe } from './identity.js';
import { nodeExpandVolume, nodeGetInfo, nodeGetVolumeStats } from './node/info-stats-expand.js';
import { capabilityResponse, CONTROLLER_RPC_NEEDS, NODE_RPC_NEEDS, serviceCapabilities } from './service-capabilities.js';
import { nodePublishVolume, nodeStageVolume, nodeUnpublishVolume, nodeUnstageVolume } from './node/stage-publish.js';
import { loadCsi } from './proto.js';
import { unary } from './rpc.js';

/**
 * `resizer` serves what external-resizer asks at start, and nothing else, for pools that grow on the
 * node: Identity with CONTROLLER_SERVICE, a Controller service with no optional capability (no
 * EXPAND_VOLUME, so the resizer does not call ControllerExpandVolume) and NodeGetCapabilities with
 * EXPAND_VOLUME (so it becomes the "trivial resizer" that hands the resize to the kubelet's
 * NodeExpandVolume on the node plugin).
 */
export type Mode = 'all' | 'controller' | 'node' | 'resizer';


function isFull(ctx: DriverContext | IdentityContext): ctx is DriverContext {
  return 'blockDevices' in ctx;
}

function identityHandlers(ctx: IdentityContext, mode: Mode): IdentityHandlers {
  return {
    GetPluginInfo: unary('GetPluginInfo', () => getPluginInfo(ctx)),
    GetPluginCapabilities: unary('GetPluginCapabilities', () => getPluginCapabilities(mode !== 'node')),
    Probe: unary('Probe', () => probe(ctx)),
  };
}

/**
 * A handler behind the capability table and the pool's readiness: UNIMPLEMENTED when the RPC needs
 * a capability this driver does not advertise, UNAVAILABLE with the reason while the pool is not
 * open (DriverContext.pending) unless the RPC is one the sidecars and the kubelet ask at start.
 */
function gate(ctx: DriverContext, mode: Mode, service: 'controller' | 'node') {
  const needs: Record<string, string | null> = service === 'controller' ? CONTROLLER_RPC_NEEDS : NODE_RPC_NEEDS;
  return <Req, Res>(method: string, fn: (req: Req) => Promise<Res> | Res, opts: { beforePool?: boolean } = {}) =>
    unary<Req, Res>(method, (req) => {
      const need = needs[method];
      if (need && !(serviceCapabilities(poolFeatures(ctx), mode)[service] as readonly string[]).includes(need)) throw unsupported(`${method} is not supported by this driver (no ${need} capability)`);
      if (ctx.pending && !opts.beforePool) throw unavailable(`the pool is not ready: ${ctx.pending}`);
      return fn(req);
    });
}

function controllerHandlers(ctx: ControllerContext, mode: Mode): ControllerHandlers {
  const served = gate(ctx, mode, 'controller');
  return {
    CreateVolume: served('CreateVolume', (r) => createVolume(ctx, r)),
    DeleteVolume: served('DeleteVolume', (r) => deleteVolume(ctx, r)),
    ValidateVolumeCapabilities: served('ValidateVolumeCapabilities', (r) => validateVolumeCapabilities(ctx, r)),
    ListVolumes: served('ListVolumes', (r) => listVolumes(ctx, r)),
    GetCapacity: served('GetCapacity', (r) => getCapacity(ctx, r)),
    ControllerGetCapabilities: served('ControllerGetCapabilities', () => capabilityResponse(serviceCapabilities(poolFeatures(ctx), mode).controller), { beforePool: true }),
    ControllerGetVolume: served('ControllerGetVolume', (r) => controllerGetVolume(ctx, r)),
    CreateSnapshot: served('CreateSnapshot', (r) => createSnapshot(ctx, r)),
    DeleteSnapshot: served('DeleteSnapshot', (r) => deleteSnapshot(ctx, r)),
    ListSnapshots: served('ListSnapshots', (r) => listSnapshots(ctx, r)),
    GetSnapshot: served('GetSnapshot', (r) => getSnapshot(ctx, r)),
    ControllerPublishVolume: served('ControllerPublishVolume', (r) => controllerPublishVolume(ctx, r)),
    ControllerUnpublishVolume: served('ControllerUnpublishVolume', (r) => controllerUnpublishVolume(ctx, r)),
    ControllerExpandVolume: served('ControllerExpandVolume', (r) => controllerExpandVolume(ctx, r)),
    // Never advertised: the gate answers UNIMPLEMENTED before this runs.
    ControllerModifyVolume: served('ControllerModifyVolume', () => ({})),
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

function nodeHandlers(ctx: DriverContext, mode: Mode): NodeHandlers {
  const served = gate(ctx, mode, 'node');
  return {
    NodeStageVolume: served('NodeStageVolume', (r) => nodeStageVolume(ctx, r)),
    NodeUnstageVolume: served('NodeUnstageVolume', (r) => nodeUnstageVolume(ctx, r)),
    NodePublishVolume: served('NodePublishVolume', (r) => nodePublishVolume(ctx, r)),
    NodeUnpublishVolume: served('NodeUnpublishVolume', (r) => nodeUnpublishVolume(ctx, r)),
    NodeGetVolumeStats: served('NodeGetVolumeStats', (r) => nodeGetVolumeStats(ctx, r)),
    NodeExpandVolume: served('NodeExpandVolume', (r) => nodeExpandVolume(ctx, r)),
    NodeGetCapabilities: served('NodeGetCapabilities', () => capabilityResponse(serviceCapabilities(poolFeatures(ctx), mode).node), { beforePool: true }),
    // The registrar registers the node with what this says, pool or not.
    NodeGetInfo: served('NodeGetInfo', () => nodeGetInfo(ctx), { beforePool: true }),
  };
}

/** `unix:///run/csi.sock`, `unix:/run/csi.sock` or a bare absolute path → the socket path. */
export function socketPath(endpoint: string): string {
  const p = endpoint.replace(/^unix:\/\//, '').replace(/^unix:/, '');
  if (!p.startsWith('/')) throw new Error(`--endpoint must be unix:///absolute/path (got ${endpoint})`);
  return p;
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

export async function startServer(ctx: DriverContext | IdentityContext, mode: Mode, endpoint: string, socketGroup?: number): Promise<RunningServer> {
  const csi = loadCsi().csi.v1;
  const server = new grpc.Server();
  server.addService(csi.Identity.service, identityHandlers(ctx, mode));
  if (mode === 'resizer') {
    const { controller, node } = resizerHandlers();
    server.addService(csi.Controller.service, controller as grpc.UntypedServiceImplementation);
    server.addService(csi.Node.service, node as grpc.UntypedServiceImplementation);
  } else {
    if (!isFull(ctx)) throw new Error(`mode ${mode} needs the whole driver context`);
    if (mode !== 'node') {
      if (!hasBackend(ctx) && !ctx.pending) throw new Error('the controller service needs the pool');
      server.addService(csi.Controller.service, controllerHandlers(ctx as ControllerContext, mode));
    }
    if (mode !== 'controller') server.addService(csi.Node.service, nodeHandlers(ctx, mode));
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
