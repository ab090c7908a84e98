import type { Volume } from '../../gen/csi/v1/Volume.js';
import { notFound } from '../errors.js';
import { parseId } from '../ids.js';
import type { VolumeRecord } from '../pool/backend.js';
import { topologySegments, type ControllerContext, type DriverContext } from './context.js';

/** The lookups and conversions both CSI services share. */

/** A volume as CSI returns it (CreateVolume, ListVolumes, ControllerGetVolume). */
export function toCsiVolume(ctx: DriverContext, v: VolumeRecord): Volume {
  return {
    volume_id: v.id,
    capacity_bytes: String(v.capacityBytes),
    volume_context: v.parameters.fsType ? { fsType: v.parameters.fsType } : {},
    content_source: v.source
      ? v.source.kind === 'snapshot'
        ? { snapshot: { snapshot_id: v.source.id } }
        : { volume: { volume_id: v.source.id } }
      : null,
    accessible_topology: [{ segments: topologySegments(ctx) }],
  };
}

/** A volume of the pool by the ID the CO gave, or NOT_FOUND. */
export async function requirePoolVolume(ctx: ControllerContext, field: string, id: string): Promise<VolumeRecord> {
  const known = parseId('vol', field, id);
  const vol = known ? await ctx.backend.getVolume(known) : null;
  if (!vol) throw notFound(`volume ${id} does not exist`);
  return vol;
}

/** The volume as the node knows it (the pool, or in hypervisor mode the CO's volume_context), or NOT_FOUND. */
export async function requireVolume(ctx: DriverContext, field: string, id: string, volumeContext: Record<string, string> = {}): Promise<VolumeRecord> {
  const known = parseId('vol', field, id);
  const vol = known ? await ctx.volumeView.get(known, volumeContext) : null;
  if (!vol) throw notFound(`volume ${id} does not exist`);
  return vol;
}
