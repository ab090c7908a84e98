import type { GetPluginCapabilitiesResponse } from '../../gen/csi/v1/GetPluginCapabilitiesResponse.js';
import type { GetPluginInfoResponse } from '../../gen/csi/v1/GetPluginInfoResponse.js';
import type { ProbeResponse } from '../../gen/csi/v1/ProbeResponse.js';
import { log } from '../log.js';
import type { IdentityState } from '../driver/context.js';
import { notReadyBecause } from '../driver/pool-state.js';


export function getPluginInfo({ ctx }: IdentityState): GetPluginInfoResponse {
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

export async function probe(state: IdentityState): Promise<ProbeResponse> {
  const reason = await notReadyBecause(state);
  if (reason) log.warn('probe: not ready', { reason });
  return { ready: { value: reason === null } };
}
