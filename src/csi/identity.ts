import type { GetPluginCapabilitiesResponse } from '../../gen/csi/v1/GetPluginCapabilitiesResponse.js';
import type { GetPluginInfoResponse } from '../../gen/csi/v1/GetPluginInfoResponse.js';
import type { ProbeResponse } from '../../gen/csi/v1/ProbeResponse.js';
import { log } from '../log.js';
import type { IdentityState } from '../driver/context.js';
import { notReadyBecause } from '../driver/pool-state.js';


export function getPluginInfo({ ctx }: IdentityState): GetPluginInfoResponse {
  return { name: ctx.driverName, vendor_version: ctx.version, manifest: { backend: ctx.backendKind } };
}

/** The SnapshotMetadata and GroupController services are served beside a controller whose pool does them. */
export function getPluginCapabilities(withController: boolean, pool: { snapshotMetadata: boolean; groupSnapshots: boolean } = { snapshotMetadata: false, groupSnapshots: false }): GetPluginCapabilitiesResponse {
  return {
    capabilities: [
      ...(withController ? [{ service: { type: 'CONTROLLER_SERVICE' as const } }] : []),
      ...(withController && pool.snapshotMetadata ? [{ service: { type: 'SNAPSHOT_METADATA_SERVICE' as const } }] : []),
      ...(withController && pool.groupSnapshots ? [{ service: { type: 'GROUP_CONTROLLER_SERVICE' as const } }] : []),
      { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
      { volume_expansion: { type: 'ONLINE' } },
      { volume_expansion: { type: 'OFFLINE' } },
    ],
  };
}

/**
 * Ready unless the pool is not there yet or not usable. A disk of the pool that does not answer is the
 * exception: the livenessprobe sidecar turns a Probe that is not ready into a restart, and a restart
 * cannot help a process whose reads wait in the kernel (the new one would wait too, and the old one may
 * not end); so Probe stays ready, the calls that need the disk fail UNAVAILABLE naming it, /healthz
 * answers 503 with the reason and vpool_csi_pv_reads_stuck counts it. A deviation from the spec, whose
 * ready also means ready to serve calls; docs/architecture.md says so.
 */
export async function probe(state: IdentityState): Promise<ProbeResponse> {
  const problem = await notReadyBecause(state);
  if (problem?.deviceNotAnswering) {
    log.warn('probe: a disk of the pool does not answer; ready all the same (a restart cannot help)', { reason: problem.reason });
    return { ready: { value: true } };
  }
  if (problem) log.warn('probe: not ready', { reason: problem.reason });
  return { ready: { value: problem === null } };
}
