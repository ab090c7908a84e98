import { notFound } from '../errors.js';
import { parseId } from '../ids.js';
import type { VolumeRecord } from '../records.js';
import type { ControllerContext, DriverContext } from './context.js';

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
