import type { ControllerGetVolumeRequest__Output } from '../../../gen/csi/v1/ControllerGetVolumeRequest.js';
import type { ControllerGetVolumeResponse } from '../../../gen/csi/v1/ControllerGetVolumeResponse.js';
import type { ListVolumesRequest__Output } from '../../../gen/csi/v1/ListVolumesRequest.js';
import type { ListVolumesResponse } from '../../../gen/csi/v1/ListVolumesResponse.js';
import type { ValidateVolumeCapabilitiesRequest__Output } from '../../../gen/csi/v1/ValidateVolumeCapabilitiesRequest.js';
import type { ValidateVolumeCapabilitiesResponse } from '../../../gen/csi/v1/ValidateVolumeCapabilitiesResponse.js';
import type { ControllerContext } from '../../driver/context.js';
import * as queries from '../../driver/controller/queries.js';
import { invalid } from '../../errors.js';
import { isId } from '../../ids.js';
import { capabilityProblem } from '../capabilities.js';
import { toCsiStatus, toCsiVolume } from '../convert.js';
import { checkPageRequest, nextTokenOf } from '../pagination.js';

export async function validateVolumeCapabilities(ctx: ControllerContext, req: ValidateVolumeCapabilitiesRequest__Output): Promise<ValidateVolumeCapabilitiesResponse> {
  if (!req.volume_id) throw invalid('volume_id is required');
  if (!req.volume_capabilities.length) throw invalid('volume_capabilities is required');
  const fromVolume = await queries.mismatches(ctx, req.volume_id, {
    parameters: req.parameters,
    mutableParameters: req.mutable_parameters,
    mountFsTypes: req.volume_capabilities.map((c) => (c.access_type === 'mount' ? (c.mount?.fs_type ?? '') : '')),
    contextFsType: req.volume_context.fsType,
  });
  const problems = [...req.volume_capabilities.map((c) => capabilityProblem(c, ctx.access)).filter((p): p is string => p !== null), ...fromVolume];

  if (problems.length) return { confirmed: null, message: problems.join('; ') };
  return {
    confirmed: { volume_context: req.volume_context, volume_capabilities: req.volume_capabilities, parameters: req.parameters, mutable_parameters: req.mutable_parameters },
    message: '',
  };
}

export async function listVolumes(ctx: ControllerContext, req: ListVolumesRequest__Output): Promise<ListVolumesResponse> {
  checkPageRequest(req.max_entries, req.starting_token, (k) => isId('vol', k));
  const listed = await queries.listVolumes(ctx, req.starting_token, req.max_entries);
  const page = listed.items;
  const nextToken = nextTokenOf(listed, (v) => v.id);
  const statuses = await queries.statuses(ctx, page);
  return { entries: page.map((v, i) => ({ volume: toCsiVolume(ctx.topology, v), status: toCsiStatus(statuses[i].publishedNodes, statuses[i].condition) })), next_token: nextToken };
}

export async function controllerGetVolume(ctx: ControllerContext, req: ControllerGetVolumeRequest__Output): Promise<ControllerGetVolumeResponse> {
  const { volume, status } = await queries.getVolume(ctx, req.volume_id);
  return { volume: toCsiVolume(ctx.topology, volume), status: toCsiStatus(status.publishedNodes, status.condition) };
}
