import { invalid, notFound } from '../../errors.js';
import { parseId } from '../../ids.js';
import { volumeLock } from '../../locks.js';
import type { VolumeRecord } from '../../records.js';
import type { ControllerContext } from '../context.js';
import { parseMutableParameters, withChanges } from '../../pool/mutable-parameters.js';

/**
 * ControllerModifyVolume: records the changed parameters in the pool (one atomic write, so a crash
 * leaves the old set or the new one), then applies them where the volume is used. Every key is
 * checked before anything is written: a wrong one changes nothing (INVALID_ARGUMENT). A repeat
 * applies again what is recorded, so a call that failed half-way (recorded, not yet applied to a
 * pod) is finished by the CO's retry.
 */
export async function modifyVolume(ctx: ControllerContext, volumeId: string, mutableParameters: Record<string, string>): Promise<VolumeRecord> {
  if (!volumeId) throw invalid('volume_id is required');
  const spec = ctx.backend.mutableParameters ?? {};
  const changes = parseMutableParameters(mutableParameters, spec);
  const id = parseId('vol', 'volume_id', volumeId);
  if (!id) throw notFound(`volume ${volumeId} does not exist`);
  return ctx.locks.with([volumeLock(id)], async () => {
    const vol = await ctx.backend.getVolume(id);
    if (!vol) throw notFound(`volume ${volumeId} does not exist`);
    const next = withChanges(vol.parameters, changes);
    // A node that cannot hold limits takes none (a lift it does take): a record it could never publish is refused now.
    if (next !== vol.parameters) ctx.volumeLimits?.check(next);
    const updated = next === vol.parameters || !ctx.backend.setParameters ? vol : await ctx.backend.setParameters(id, next);
    await ctx.backend.applyParameters?.(updated);
    await ctx.volumeLimits?.apply(updated);
    return updated;
  });
}
