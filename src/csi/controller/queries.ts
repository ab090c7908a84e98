import type { ControllerGetVolumeRequest__Output } from '../../../gen/csi/v1/ControllerGetVolumeRequest.js';
import type { ControllerGetVolumeResponse } from '../../../gen/csi/v1/ControllerGetVolumeResponse.js';
import type { ListVolumesRequest__Output } from '../../../gen/csi/v1/ListVolumesRequest.js';
import type { ListVolumesResponse } from '../../../gen/csi/v1/ListVolumesResponse.js';
import type { ValidateVolumeCapabilitiesRequest__Output } from '../../../gen/csi/v1/ValidateVolumeCapabilitiesRequest.js';
import type { ValidateVolumeCapabilitiesResponse } from '../../../gen/csi/v1/ValidateVolumeCapabilitiesResponse.js';
import { invalid, notFound } from '../../errors.js';
import { capabilityProblem } from '../capabilities.js';
import type { ControllerContext } from '../context.js';
import { isId, parseId } from '../../ids.js';
import { paginate } from '../pagination.js';
import { parseVolumeParameters } from '../parameters.js';
import { requirePoolVolume, toCsiVolume } from '../lookups.js';

export async function validateVolumeCapabilities(ctx: ControllerContext, req: ValidateVolumeCapabilitiesRequest__Output): Promise<ValidateVolumeCapabilitiesResponse> {
  parseId('vol', 'volume_id', req.volume_id);
  if (!req.volume_capabilities.length) throw invalid('volume_capabilities is required');
  const vol = await requirePoolVolume(ctx, 'volume_id', req.volume_id);
  const problems = req.volume_capabilities.map((c) => capabilityProblem(c, ctx.access)).filter((p): p is string => p !== null);
  let params: ReturnType<typeof parseVolumeParameters>;
  try {
    params = parseVolumeParameters(req.parameters, ctx.backend.volumeParameters);
  } catch (err) {
    return { confirmed: null, message: (err as Error).message };
  }
  if (params.fsType && params.fsType !== vol.parameters.fsType) problems.push(`the volume was not created with fsType ${params.fsType}`);
  for (const c of req.volume_capabilities) {
    const fs = c.access_type === 'mount' ? c.mount?.fs_type : '';
    if (fs && vol.parameters.fsType && fs !== vol.parameters.fsType) problems.push(`the volume is meant for ${vol.parameters.fsType}, not ${fs}`);
  }
  const ctxFs = req.volume_context.fsType;
  if (ctxFs !== undefined && ctxFs !== (vol.parameters.fsType ?? '')) problems.push('volume_context does not match the volume');
  if (problems.length) return { confirmed: null, message: problems.join('; ') };
  return {
    confirmed: { volume_context: req.volume_context, volume_capabilities: req.volume_capabilities, parameters: req.parameters, mutable_parameters: req.mutable_parameters },
    message: '',
  };
}

export async function listVolumes(ctx: ControllerContext, req: ListVolumesRequest__Output): Promise<ListVolumesResponse> {
  const all = await ctx.backend.listVolumes();
  const { page, nextToken } = paginate(all, (v) => v.id, req.max_entries, req.starting_token, (k) => isId('vol', k));
  const published = ctx.controllerAttacher ? await ctx.controllerAttacher.publishedNodes(page.map((v) => v.id)) : new Map<string, string[]>();
  const entries = await Promise.all(
    page.map(async (v) => ({ volume: toCsiVolume(ctx, v), status: { published_node_ids: published.get(v.id) ?? [], volume_condition: await ctx.backend.volumeCondition(v) } })),
  );
  return { entries, next_token: nextToken };
}

export async function controllerGetVolume(ctx: ControllerContext, req: ControllerGetVolumeRequest__Output): Promise<ControllerGetVolumeResponse> {
  const id = parseId('vol', 'volume_id', req.volume_id);
  const vol = id ? await ctx.backend.getVolume(id) : null;
  if (!vol) throw notFound(`volume ${req.volume_id} does not exist`);
  const published = ctx.controllerAttacher ? [...new Set((await ctx.controllerAttacher.attachments(vol.id)).map((a) => a.nodeId))] : [];
  return { volume: toCsiVolume(ctx, vol), status: { published_node_ids: published, volume_condition: await ctx.backend.volumeCondition(vol) } };
}
