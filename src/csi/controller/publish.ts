import type { ControllerExpandVolumeRequest__Output } from '../../../gen/csi/v1/ControllerExpandVolumeRequest.js';
import type { ControllerExpandVolumeResponse } from '../../../gen/csi/v1/ControllerExpandVolumeResponse.js';
import type { ControllerPublishVolumeRequest__Output } from '../../../gen/csi/v1/ControllerPublishVolumeRequest.js';
import type { ControllerPublishVolumeResponse } from '../../../gen/csi/v1/ControllerPublishVolumeResponse.js';
import type { ControllerUnpublishVolumeRequest__Output } from '../../../gen/csi/v1/ControllerUnpublishVolumeRequest.js';
import type { ControllerUnpublishVolumeResponse } from '../../../gen/csi/v1/ControllerUnpublishVolumeResponse.js';
import type { ControllerContext } from '../../driver/context.js';
import * as publish from '../../driver/controller/publish.js';
import { invalid } from '../../errors.js';
import { parseCapability } from '../capabilities.js';
import { parseRange } from '../sizing.js';

export async function controllerPublishVolume(ctx: ControllerContext, req: ControllerPublishVolumeRequest__Output): Promise<ControllerPublishVolumeResponse> {
  const use = parseCapability(req.volume_capability, ctx.access);
  const publish_context = await publish.publishVolume(ctx, { volumeId: req.volume_id, nodeId: req.node_id, use, readOnly: req.readonly });
  return { publish_context };
}

export async function controllerUnpublishVolume(ctx: ControllerContext, req: ControllerUnpublishVolumeRequest__Output): Promise<ControllerUnpublishVolumeResponse> {
  await publish.unpublishVolume(ctx, req.volume_id, req.node_id);
  return {};
}

export async function controllerExpandVolume(ctx: ControllerContext, req: ControllerExpandVolumeRequest__Output): Promise<ControllerExpandVolumeResponse> {
  if (!req.capacity_range) throw invalid('capacity_range is required');
  const range = parseRange(req.capacity_range);
  const use = req.volume_capability ? parseCapability(req.volume_capability, ctx.access) : null;
  const grown = await publish.expandVolume(ctx, req.volume_id, range, use);
  return { capacity_bytes: String(grown.capacityBytes), node_expansion_required: grown.nodeExpansionRequired };
}
