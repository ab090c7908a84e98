import * as grpc from '@grpc/grpc-js';
import { chmod, chown, lstat, unlink } from 'node:fs/promises';
import net from 'node:net';
import type { ControllerHandlers } from '../../gen/csi/v1/Controller.js';
import type { IdentityHandlers } from '../../gen/csi/v1/Identity.js';
import type { NodeHandlers } from '../../gen/csi/v1/Node.js';
import { errno, unavailable, unimplemented } from '../errors.js';
import { hasBackend, type ControllerContext, type DriverContext } from './context.js';
import { controllerExpandVolume, controllerPublishVolume, controllerUnpublishVolume } from './controller-publish.js';
import { controllerGetCapabilities, controllerGetVolume, listVolumes, validateVolumeCapabilities } from './controller-queries.js';
import { createSnapshot, deleteSnapshot, getSnapshot, listSnapshots } from './controller-snapshots.js';
import { createVolume, deleteVolume, getCapacity } from './controller-volumes.js';
import { getPluginCapabilities, getPluginInfo, probe } from './identity.js';
import { nodePublishVolume, nodeUnpublishVolume } from './node-publish.js';
import { nodeExpandVolume, nodeExpansionCapabilities, nodeGetCapabilities, nodeGetInfo, nodeGetVolumeStats } from './node-service.js';
import { nodeStageVolume, nodeUnstageVolume } from './node-stage.js';
import { loadCsi } from './proto.js';
import { unary } from './rpc.js';

/** Answered while the pool is not open too: what the sidecars and the kubelet ask at start (the registrar's NodeGetInfo). */
const answered = unary;

/**
 * `resizer` serves what external-resizer asks at start, and nothing else, for pools that grow on the
 * node: Identity with CONTROLLER_SERVICE, a Controller service with no optional capability (no
 * EXPAND_VOLUME, so the resizer does not call ControllerExpandVolume) and NodeGetCapabilities with
 * EXPAND_VOLUME (so it becomes the "trivial resizer" that hands the resize to the kubelet's
 * NodeExpandVolume on the node plugin).
 */
export type Mode = 'all' | 'controller' | 'node' | 'resizer';

/** What Identity needs; a full DriverContext is one. */
export type IdentityContext = Pick<DriverContext, 'driverName' | 'version' | 'backendKind' | 'backend' | 'pending'>;

function isFull(ctx: DriverContext | IdentityContext): ctx is DriverContext {
  return 'attacher' in ctx;
}

const notSupported = (what: string) => () => {
  throw unimplemented(`${what} is not supported by this driver`);
};

function identityHandlers(ctx: IdentityContext, mode: Mode): IdentityHandlers {
  return {
    GetPluginInfo: unary('GetPluginInfo', () => getPluginInfo(ctx)),
    GetPluginCapabilities: unary('GetPluginCapabilities', () => getPluginCapabilities(mode !== 'node')),
    Probe: unary('Probe', () => probe(ctx)),
  };
}

/** A handler that needs the pool: UNAVAILABLE, with the reason, while the pool is not open (DriverContext.pending). */
function pooled<Req, Res>(ctx: DriverContext, method: string, fn: (req: Req) => Promise<Res> | Res) {
  return unary<Req, Res>(method, (req) => {
    if (ctx.pending) throw unavailable(`the pool is not ready: ${ctx.pending}`);
    return fn(req);
  });
}

function controllerHandlers(ctx: ControllerContext): ControllerHandlers {
  const unary = <Req, Res>(method: string, fn: (req: Req) => Promise<Res> | Res) => pooled(ctx, method, fn);
  return {
    CreateVolume: unary('CreateVolume', (r) => createVolume(ctx, r)),
    DeleteVolume: unary('DeleteVolume', (r) => deleteVolume(ctx, r)),
    ValidateVolumeCapabilities: unary('ValidateVolumeCapabilities', (r) => validateVolumeCapabilities(ctx, r)),
    ListVolumes: unary('ListVolumes', (r) => listVolumes(ctx, r)),
    GetCapacity: unary('GetCapacity', (r) => getCapacity(ctx, r)),
    ControllerGetCapabilities: answered('ControllerGetCapabilities', () => controllerGetCapabilities(ctx)),
    ControllerGetVolume: unary('ControllerGetVolume', (r) => controllerGetVolume(ctx, r)),
    CreateSnapshot: unary('CreateSnapshot', (r) => createSnapshot(ctx, r)),
    DeleteSnapshot: unary('DeleteSnapshot', (r) => deleteSnapshot(ctx, r)),
    ListSnapshots: unary('ListSnapshots', (r) => listSnapshots(ctx, r)),
    GetSnapshot: unary('GetSnapshot', (r) => getSnapshot(ctx, r)),
    ControllerPublishVolume: unary('ControllerPublishVolume', (r) => controllerPublishVolume(ctx, r)),
    ControllerUnpublishVolume: unary('ControllerUnpublishVolume', (r) => controllerUnpublishVolume(ctx, r)),
    ControllerExpandVolume: unary('ControllerExpandVolume', (r) => controllerExpandVolume(ctx, r)),
    ControllerModifyVolume: unary('ControllerModifyVolume', notSupported('ControllerModifyVolume')),
  };
}

/**
 * The capability queries alone: grpc-js answers UNIMPLEMENTED for every method a service leaves
 * out, which is the truth here (this process has no pool and no node).
 */
function resizerHandlers(): { controller: Partial<ControllerHandlers>; node: Partial<NodeHandlers> } {
  return {
    controller: { ControllerGetCapabilities: unary('ControllerGetCapabilities', () => ({ capabilities: [] })) },
    node: { NodeGetCapabilities: unary('NodeGetCapabilities', () => nodeExpansionCapabilities()) },
  };
}

function nodeHandlers(ctx: DriverContext): NodeHandlers {
  const unary = <Req, Res>(method: string, fn: (req: Req) => Promise<Res> | Res) => pooled(ctx, method, fn);
  return {
    NodeStageVolume: unary('NodeStageVolume', (r) => nodeStageVolume(ctx, r)),
    NodeUnstageVolume: unary('NodeUnstageVolume', (r) => nodeUnstageVolume(ctx, r)),
    NodePublishVolume: unary('NodePublishVolume', (r) => nodePublishVolume(ctx, r)),
    NodeUnpublishVolume: unary('NodeUnpublishVolume', (r) => nodeUnpublishVolume(ctx, r)),
    NodeGetVolumeStats: unary('NodeGetVolumeStats', (r) => nodeGetVolumeStats(ctx, r)),
    NodeExpandVolume: unary('NodeExpandVolume', (r) => nodeExpandVolume(ctx, r)),
    NodeGetCapabilities: answered('NodeGetCapabilities', () => nodeGetCapabilities()),
    NodeGetInfo: answered('NodeGetInfo', () => nodeGetInfo(ctx)),
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
      server.addService(csi.Controller.service, controllerHandlers(ctx as ControllerContext));
    }
    if (mode !== 'controller') server.addService(csi.Node.service, nodeHandlers(ctx));
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
