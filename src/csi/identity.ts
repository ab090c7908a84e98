import type { GetPluginCapabilitiesResponse } from '../../gen/csi/v1/GetPluginCapabilitiesResponse.js';
import type { GetPluginInfoResponse } from '../../gen/csi/v1/GetPluginInfoResponse.js';
import type { ProbeResponse } from '../../gen/csi/v1/ProbeResponse.js';
import { log } from '../log.js';
import type { IdentityContext } from './context.js';


export function getPluginInfo(ctx: IdentityContext): GetPluginInfoResponse {
  return { name: ctx.driverName, vendor_version: ctx.version, manifest: { backend: ctx.backendKind } };
}

export function getPluginCapabilities(withController: boolean): GetPluginCapabilitiesResponse {
  return {
    capabilities: [
      ...(withController ? [{ service: { type: 'CONTROLLER_SERVICE' as const } }] : []),
      { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
      { volume_expansion: { type: 'ONLINE' } },
      { volume_expansion: { type: 'OFFLINE' } },
    ],
  };
}

export async function probe(ctx: IdentityContext): Promise<ProbeResponse> {
  if (ctx.pending) {
    log.warn('probe: not ready', { reason: ctx.pending });
    return { ready: { value: false } };
  }
  try {
    // A node in hypervisor mode has no pool to ask; it is ready when it can serve its own calls.
    await ctx.backend?.probe();
    return { ready: { value: true } };
  } catch (err) {
    log.warn('probe: pool not usable', { error: String(err) });
    return { ready: { value: false } };
  }
}
