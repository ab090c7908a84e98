import type { NodeExpandVolumeRequest__Output } from '../../../gen/csi/v1/NodeExpandVolumeRequest.js';
import type { NodeExpandVolumeResponse } from '../../../gen/csi/v1/NodeExpandVolumeResponse.js';
import type { NodeGetInfoResponse } from '../../../gen/csi/v1/NodeGetInfoResponse.js';
import type { NodeGetVolumeStatsRequest__Output } from '../../../gen/csi/v1/NodeGetVolumeStatsRequest.js';
import type { NodeGetVolumeStatsResponse } from '../../../gen/csi/v1/NodeGetVolumeStatsResponse.js';
import type { DriverContext, StartContext } from '../../driver/context.js';
import { expandOnNode, volumeStats, type Usage } from '../../driver/node/stats-expand.js';
import { parseCapability } from '../capabilities.js';
import { parseRange } from '../sizing.js';

export function nodeGetInfo(ctx: Pick<StartContext, 'nodeId' | 'maxVolumesPerNode' | 'topology'>): NodeGetInfoResponse {
  return {
    node_id: ctx.nodeId,
    max_volumes_per_node: String(ctx.maxVolumesPerNode),
    accessible_topology: { segments: ctx.topology },
  };
}

const usage = (unit: 'BYTES' | 'INODES', u: Usage) => ({ unit, total: String(u.total), available: String(u.available), used: String(u.used) });

export async function nodeGetVolumeStats(ctx: DriverContext, req: NodeGetVolumeStatsRequest__Output): Promise<NodeGetVolumeStatsResponse> {
  const stats = await volumeStats(ctx, req.volume_id, req.volume_path);
  if (stats.kind === 'block') return { usage: [{ unit: 'BYTES', total: String(stats.totalBytes) }], volume_condition: stats.condition };
  return { usage: [usage('BYTES', stats.bytes), usage('INODES', stats.inodes)], volume_condition: stats.condition };
}

export async function nodeExpandVolume(ctx: DriverContext, req: NodeExpandVolumeRequest__Output): Promise<NodeExpandVolumeResponse> {
  const range = parseRange(req.capacity_range);
  // Validated only: the filesystem found at volume_path says what to grow.
  if (req.volume_capability) parseCapability(req.volume_capability, ctx.access);
  return { capacity_bytes: String(await expandOnNode(ctx, req.volume_id, req.volume_path, range)) };
}
