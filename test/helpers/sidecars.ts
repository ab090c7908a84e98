import type { CsiClient } from '../../src/csi/client.js';
import { codeOf } from './driver.js';

/**
 * MODEL of external-resizer v1.14.0's start-up (no resizer can run here), read from its source:
 * cmd/csi-resizer/main.go, pkg/csi/client.go, pkg/resizer/csi_resizer.go, pkg/modifier/csi_modifier.go
 * and csi-lib-utils v0.22 rpc/common.go. In order:
 *  1. csi.New: ProbeForever. Probe until ready; a gRPC error other than DEADLINE_EXCEEDED exits
 *     ("failed probing CSI driver"); not ready is retried every second.
 *  2. GetPluginInfo: the driver name ("Get driver name failed" on error).
 *  3. NewResizerFromClient: GetPluginCapabilities must list CONTROLLER_SERVICE, else it exits with
 *     "CSI driver does not support controller service". ControllerGetCapabilities (an error exits):
 *     with EXPAND_VOLUME a csiResizer, after one more ControllerGetCapabilities (SINGLE_NODE_MULTI_WRITER).
 *     Without it, NodeGetCapabilities (an error exits): EXPAND_VOLUME makes the trivial resizer,
 *     otherwise it exits with "CSI driver neither supports controller resize nor node resize".
 *  4. NewModifierFromClient: ControllerGetCapabilities again (MODIFY_VOLUME); an error exits.
 * A failure here is the process exiting 1 (CrashLoopBackOff): the model throws with the message the
 * resizer logs.
 */
export type ResizerKind = 'controller' | 'trivial';

export interface ResizerModel {
  driverName: string;
  kind: ResizerKind;
  /** The RPCs asked, in order, as the real resizer would have asked them. */
  calls: string[];
}

export async function resizerStartup(client: CsiClient, opts: { probeDeadlineMs?: number } = {}): Promise<ResizerModel> {
  const calls: string[] = [];
  const ask = async <T>(name: string, p: () => Promise<T>, failure: string): Promise<T> => {
    calls.push(name);
    try {
      return await p();
    } catch (err) {
      throw new Error(`${failure}: ${name}: ${await codeOf(Promise.reject(err))} ${(err as Error).message}`);
    }
  };
  const deadline = Date.now() + (opts.probeDeadlineMs ?? 10_000);
  for (;;) {
    calls.push('Probe');
    let ready: boolean;
    try {
      ready = (await client.probe({})).ready?.value ?? true; // csi-lib-utils: an unset ready means ready
    } catch (err) {
      if ((await codeOf(Promise.reject(err))) !== 'DEADLINE_EXCEEDED') throw new Error(`failed probing CSI driver: ${(err as Error).message}`);
      ready = false;
    }
    if (ready) break;
    if (Date.now() > deadline) throw new Error('CSI driver is not ready (the real resizer would keep probing)');
    await new Promise((r) => setTimeout(r, 1000));
  }
  const driverName = (await ask('GetPluginInfo', () => client.getPluginInfo({}), 'Get driver name failed')).name;
  const plugin = await ask('GetPluginCapabilities', () => client.getPluginCapabilities({}), 'failed to check if plugin supports controller service');
  if (!plugin.capabilities.some((c) => c.service?.type === 'CONTROLLER_SERVICE')) throw new Error('Failed to create CSI resizer: CSI driver does not support controller service');
  const ctl = await ask('ControllerGetCapabilities', () => client.controllerGetCapabilities({}), 'failed to check if plugin supports controller resize');
  let kind: ResizerKind;
  if (ctl.capabilities.some((c) => c.rpc?.type === 'EXPAND_VOLUME')) {
    await ask('ControllerGetCapabilities', () => client.controllerGetCapabilities({}), 'failed to check if plugin supports the SINGLE_NODE_MULTI_WRITER capability');
    kind = 'controller';
  } else {
    const node = await ask('NodeGetCapabilities', () => client.nodeGetCapabilities({}), 'failed to check if plugin supports node resize');
    if (!node.capabilities.some((c) => c.rpc?.type === 'EXPAND_VOLUME')) throw new Error('Failed to create CSI resizer: CSI driver neither supports controller resize nor node resize');
    kind = 'trivial';
  }
  await ask('ControllerGetCapabilities', () => client.controllerGetCapabilities({}), 'Failed to create CSI modifier: failed to check if plugin supports controller modify');
  return { driverName, kind, calls };
}

/**
 * MODEL of one resize by external-resizer v1.14.0 (pkg/resizer): the trivial resizer calls nothing
 * and answers (requested size, node expansion required); the csiResizer calls ControllerExpandVolume
 * with required_bytes only and the PV's capability.
 */
export async function resizerResize(client: CsiClient, model: ResizerModel, volumeId: string, bytes: number, capability: Parameters<CsiClient['controllerExpandVolume']>[0]['volume_capability']): Promise<{ capacityBytes: number; nodeExpansionRequired: boolean }> {
  if (model.kind === 'trivial') return { capacityBytes: bytes, nodeExpansionRequired: true };
  const res = await client.controllerExpandVolume({ volume_id: volumeId, capacity_range: { required_bytes: String(bytes) }, volume_capability: capability, secrets: {} });
  return { capacityBytes: Number(res.capacity_bytes), nodeExpansionRequired: res.node_expansion_required };
}
