import type { CreateVolumeRequest__Output } from '../../../gen/csi/v1/CreateVolumeRequest.js';
import type { CreateVolumeResponse } from '../../../gen/csi/v1/CreateVolumeResponse.js';
import type { DeleteVolumeRequest__Output } from '../../../gen/csi/v1/DeleteVolumeRequest.js';
import type { DeleteVolumeResponse } from '../../../gen/csi/v1/DeleteVolumeResponse.js';
import type { GetCapacityRequest__Output } from '../../../gen/csi/v1/GetCapacityRequest.js';
import type { GetCapacityResponse } from '../../../gen/csi/v1/GetCapacityResponse.js';
import type { TopologyRequirement__Output } from '../../../gen/csi/v1/TopologyRequirement.js';
import type { ControllerModifyVolumeRequest__Output } from '../../../gen/csi/v1/ControllerModifyVolumeRequest.js';
import type { ControllerModifyVolumeResponse } from '../../../gen/csi/v1/ControllerModifyVolumeResponse.js';
import type { ControllerContext } from '../../driver/context.js';
import { modifyVolume } from '../../driver/controller/modify.js';
import * as volumes from '../../driver/controller/volumes.js';
import type { ContentSource } from '../../records.js';
import { capabilityProblem, parseCapabilities } from '../capabilities.js';
import { toCsiVolume } from '../convert.js';
import { parseRange } from '../sizing.js';

function contentSource(req: CreateVolumeRequest__Output): ContentSource | undefined {
  const src = req.volume_content_source;
  if (src?.type === 'snapshot') return { kind: 'snapshot', id: src.snapshot?.snapshot_id ?? '' };
  if (src?.type === 'volume') return { kind: 'volume', id: src.volume?.volume_id ?? '' };
  return undefined;
}

function placement(req: TopologyRequirement__Output | null): volumes.Placement | undefined {
  if (!req) return undefined;
  return { requisite: req.requisite.map((t) => t.segments ?? {}), preferred: req.preferred.map((t) => t.segments ?? {}) };
}

export async function createVolume(ctx: ControllerContext, req: CreateVolumeRequest__Output): Promise<CreateVolumeResponse> {
  const volume = await volumes.createVolume(ctx, {
    name: req.name,
    uses: parseCapabilities(req.volume_capabilities, ctx.access),
    parameters: req.parameters,
    mutableParameters: req.mutable_parameters,
    range: parseRange(req.capacity_range),
    source: contentSource(req),
    placement: placement(req.accessibility_requirements),
  });
  return { volume: toCsiVolume(ctx.topology, volume) };
}

export async function deleteVolume(ctx: ControllerContext, req: DeleteVolumeRequest__Output): Promise<DeleteVolumeResponse> {
  await volumes.deleteVolume(ctx, req.volume_id);
  return {};
}

export async function getCapacity(ctx: ControllerContext, req: GetCapacityRequest__Output): Promise<GetCapacityResponse> {
  const c = await volumes.capacity(ctx, {
    parameters: req.parameters,
    segments: req.accessible_topology ? (req.accessible_topology.segments ?? {}) : undefined,
    servable: req.volume_capabilities.every((cap) => capabilityProblem(cap, ctx.access) === null),
  });
  return {
    available_capacity: String(c.availableBytes),
    maximum_volume_size: c.maximumVolumeBytes === null ? null : { value: String(c.maximumVolumeBytes) },
    minimum_volume_size: c.minimumVolumeBytes === null ? null : { value: String(c.minimumVolumeBytes) },
  };
}

export async function controllerModifyVolume(ctx: ControllerContext, req: ControllerModifyVolumeRequest__Output): Promise<ControllerModifyVolumeResponse> {
  await modifyVolume(ctx, req.volume_id, req.mutable_parameters);
  return {};
}
