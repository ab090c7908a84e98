import type { NodePublishVolumeRequest__Output } from '../../../gen/csi/v1/NodePublishVolumeRequest.js';
import type { NodePublishVolumeResponse } from '../../../gen/csi/v1/NodePublishVolumeResponse.js';
import type { NodeStageVolumeRequest__Output } from '../../../gen/csi/v1/NodeStageVolumeRequest.js';
import type { NodeStageVolumeResponse } from '../../../gen/csi/v1/NodeStageVolumeResponse.js';
import type { NodeUnpublishVolumeRequest__Output } from '../../../gen/csi/v1/NodeUnpublishVolumeRequest.js';
import type { NodeUnpublishVolumeResponse } from '../../../gen/csi/v1/NodeUnpublishVolumeResponse.js';
import type { NodeUnstageVolumeRequest__Output } from '../../../gen/csi/v1/NodeUnstageVolumeRequest.js';
import type { NodeUnstageVolumeResponse } from '../../../gen/csi/v1/NodeUnstageVolumeResponse.js';
import type { DriverContext } from '../../driver/context.js';
import * as publish from '../../driver/node/publish.js';
import * as stage from '../../driver/node/stage.js';
import { parseCapability } from '../capabilities.js';

export async function nodeStageVolume(ctx: DriverContext, req: NodeStageVolumeRequest__Output): Promise<NodeStageVolumeResponse> {
  const use = parseCapability(req.volume_capability, ctx.access);
  await stage.stageVolume(ctx, { volumeId: req.volume_id, stagingPath: req.staging_target_path, use, publishContext: req.publish_context, volumeContext: req.volume_context });
  return {};
}

export async function nodeUnstageVolume(ctx: DriverContext, req: NodeUnstageVolumeRequest__Output): Promise<NodeUnstageVolumeResponse> {
  await stage.unstageVolume(ctx, req.volume_id, req.staging_target_path);
  return {};
}

export async function nodePublishVolume(ctx: DriverContext, req: NodePublishVolumeRequest__Output): Promise<NodePublishVolumeResponse> {
  const use = parseCapability(req.volume_capability, ctx.access);
  await publish.publishVolume(ctx, {
    volumeId: req.volume_id,
    targetPath: req.target_path,
    stagingPath: req.staging_target_path,
    use,
    readOnly: req.readonly,
    publishContext: req.publish_context,
    volumeContext: req.volume_context,
  });
  return {};
}

export async function nodeUnpublishVolume(ctx: DriverContext, req: NodeUnpublishVolumeRequest__Output): Promise<NodeUnpublishVolumeResponse> {
  await publish.unpublishVolume(ctx, req.volume_id, req.target_path);
  return {};
}
