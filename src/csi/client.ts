import * as grpc from '@grpc/grpc-js';
import { loadCsi } from './proto.js';
import { socketPath } from './socket-path.js';

type Callback<Res> = grpc.requestCallback<Res>;

function promisify<Req, Res>(fn: (argument: Req, callback: Callback<Res>) => grpc.ClientUnaryCall, signal?: AbortSignal): (req: Req, options?: grpc.CallOptions) => Promise<Res> {
  // The same method takes call options (a deadline) before the callback; typed by its two-argument form.
  const withOptions = fn as unknown as (argument: Req, options: grpc.CallOptions, callback: Callback<Res>) => grpc.ClientUnaryCall;
  return (req, options) =>
    new Promise<Res>((resolve, reject) => {
      const cancel = () => call.cancel();
      const call = withOptions(req, options ?? {}, (err, res) => {
        signal?.removeEventListener('abort', cancel);
        if (err) reject(err);
        else resolve(res as Res);
      });
      // Cancelled (Ctrl-C): the driver's handler sees the call end and stops where it can.
      if (signal?.aborted) call.cancel();
      else signal?.addEventListener('abort', cancel, { once: true });
    });
}

/** A server stream's messages, all of them; rejects with the status when the stream ends in an error, not at its end. */
function collect<Req, Res>(fn: (argument: Req, options?: grpc.CallOptions) => grpc.ClientReadableStream<Res>): (req: Req, options?: grpc.CallOptions) => Promise<Res[]> {
  return (req, options) =>
    new Promise<Res[]>((resolve, reject) => {
      const got: Res[] = [];
      const call = fn(req, options ?? {});
      // Whole only when the messages are all read ('end') and the status is OK: grpc-js ends the
      // stream before it reports an error status.
      let ended = false;
      let ok = false;
      const settle = () => ended && ok && resolve(got);
      call.on('data', (m: Res) => got.push(m));
      call.on('error', reject);
      call.on('status', (st: grpc.StatusObject) => {
        ok = st.code === grpc.status.OK;
        settle();
      });
      call.on('end', () => {
        ended = true;
        settle();
      });
    });
}

/**
 * A typed CSI client over a unix socket, for the CLI, the tests and the benchmarks; `signal` cancels
 * every unary call under way; `channel`: grpc-js channel options.
 */
export function connectCsi(endpoint: string, signal?: AbortSignal, channel: grpc.ChannelOptions = {}) {
  const csi = loadCsi().csi.v1;
  const address = `unix://${socketPath(endpoint)}`;
  const creds = grpc.credentials.createInsecure();
  const id = new csi.Identity(address, creds, channel);
  const ctl = new csi.Controller(address, creds, channel);
  const node = new csi.Node(address, creds, channel);
  const meta = new csi.SnapshotMetadata(address, creds, channel);
  const group = new csi.GroupController(address, creds, channel);
  return {
    getPluginInfo: promisify(id.GetPluginInfo.bind(id), signal),
    getPluginCapabilities: promisify(id.GetPluginCapabilities.bind(id), signal),
    probe: promisify(id.Probe.bind(id), signal),
    createVolume: promisify(ctl.CreateVolume.bind(ctl), signal),
    deleteVolume: promisify(ctl.DeleteVolume.bind(ctl), signal),
    validateVolumeCapabilities: promisify(ctl.ValidateVolumeCapabilities.bind(ctl), signal),
    listVolumes: promisify(ctl.ListVolumes.bind(ctl), signal),
    getCapacity: promisify(ctl.GetCapacity.bind(ctl), signal),
    controllerGetCapabilities: promisify(ctl.ControllerGetCapabilities.bind(ctl), signal),
    controllerGetVolume: promisify(ctl.ControllerGetVolume.bind(ctl), signal),
    controllerPublishVolume: promisify(ctl.ControllerPublishVolume.bind(ctl), signal),
    controllerUnpublishVolume: promisify(ctl.ControllerUnpublishVolume.bind(ctl), signal),
    controllerExpandVolume: promisify(ctl.ControllerExpandVolume.bind(ctl), signal),
    controllerModifyVolume: promisify(ctl.ControllerModifyVolume.bind(ctl), signal),
    createSnapshot: promisify(ctl.CreateSnapshot.bind(ctl), signal),
    deleteSnapshot: promisify(ctl.DeleteSnapshot.bind(ctl), signal),
    listSnapshots: promisify(ctl.ListSnapshots.bind(ctl), signal),
    getSnapshot: promisify(ctl.GetSnapshot.bind(ctl), signal),
    nodeStageVolume: promisify(node.NodeStageVolume.bind(node), signal),
    nodeUnstageVolume: promisify(node.NodeUnstageVolume.bind(node), signal),
    nodePublishVolume: promisify(node.NodePublishVolume.bind(node), signal),
    nodeUnpublishVolume: promisify(node.NodeUnpublishVolume.bind(node), signal),
    nodeGetVolumeStats: promisify(node.NodeGetVolumeStats.bind(node), signal),
    nodeExpandVolume: promisify(node.NodeExpandVolume.bind(node), signal),
    nodeGetCapabilities: promisify(node.NodeGetCapabilities.bind(node), signal),
    nodeGetInfo: promisify(node.NodeGetInfo.bind(node), signal),
    groupControllerGetCapabilities: promisify(group.GroupControllerGetCapabilities.bind(group), signal),
    createVolumeGroupSnapshot: promisify(group.CreateVolumeGroupSnapshot.bind(group), signal),
    getVolumeGroupSnapshot: promisify(group.GetVolumeGroupSnapshot.bind(group), signal),
    deleteVolumeGroupSnapshot: promisify(group.DeleteVolumeGroupSnapshot.bind(group), signal),
    getMetadataAllocated: collect(meta.GetMetadataAllocated.bind(meta)),
    getMetadataDelta: collect(meta.GetMetadataDelta.bind(meta)),
    /** The stream itself, to read part of it or cancel it. */
    streamMetadataDelta: meta.GetMetadataDelta.bind(meta),
    close(): void {
      meta.close();
      group.close();
      id.close();
      ctl.close();
      node.close();
    },
  };
}

export type CsiClient = ReturnType<typeof connectCsi>;

export function isServiceError(err: unknown): err is grpc.ServiceError {
  return err instanceof Error && 'code' in err && 'details' in err;
}

/** A failed call as a person reads it: the status code's name and the driver's message. */
export function describeCallError(err: unknown): Error {
  if (!isServiceError(err)) return err instanceof Error ? err : new Error(String(err));
  return new Error(`${err.code === undefined ? '' : grpc.status[err.code]}: ${err.details}`);
}
