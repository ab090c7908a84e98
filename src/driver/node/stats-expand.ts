import { statfs } from 'node:fs/promises';
import type { NodeExpandVolumeRequest__Output } from '../../../gen/csi/v1/NodeExpandVolumeRequest.js';
import type { NodeExpandVolumeResponse } from '../../../gen/csi/v1/NodeExpandVolumeResponse.js';
import type { NodeGetInfoResponse } from '../../../gen/csi/v1/NodeGetInfoResponse.js';
import type { NodeGetVolumeStatsRequest__Output } from '../../../gen/csi/v1/NodeGetVolumeStatsRequest.js';
import type { NodeGetVolumeStatsResponse } from '../../../gen/csi/v1/NodeGetVolumeStatsResponse.js';
import { invalid, notFound } from '../../errors.js';
import { growFilesystem } from '../../host/filesystem.js';
import { blockDeviceSize } from '../../host/loop.js';
import { readMounts } from '../../host/mounts.js';
import { stateAt, type PathState } from '../../host/staging.js';
import { parseCapability } from '../capabilities.js';
import { topologySegments, type DriverContext } from '../context.js';
import { volumeLock } from '../../locks.js';
import { parseId } from '../../ids.js';
import { requireVolume } from '../lookups.js';
import { chooseSize, parseRange } from '../sizing.js';
import { isFsType } from '../../filesystems.js';

export function nodeGetInfo(ctx: DriverContext): NodeGetInfoResponse {
  return {
    node_id: ctx.nodeId,
    max_volumes_per_node: String(ctx.maxVolumesPerNode),
    accessible_topology: { segments: topologySegments(ctx) },
  };
}

/**
 * Where the volume is usable at `volumePath` (a staging or publish path), from the kernel. A path
 * this driver could never have published to cannot hold the volume: NOT_FOUND, as the spec reads.
 */
async function volumeAt(ctx: DriverContext, volumeId: string, rawPath: string): Promise<{ path: string; state: PathState & { kind: 'filesystem' | 'block' } }> {
  let volumePath: string;
  try {
    volumePath = await ctx.paths.resolve('volume_path', rawPath);
  } catch (err) {
    throw notFound(`volume ${volumeId} is not at ${JSON.stringify(rawPath)}: ${(err as Error).message}`);
  }
  const devices = (await ctx.blockDevices.devices(volumeId)).map((a) => a.device);
  const state = await stateAt(await readMounts(), volumePath, devices);
  if (state.kind === 'filesystem' || state.kind === 'block') return { path: volumePath, state };
  throw notFound(`volume ${volumeId} is not staged or published at ${volumePath}`);
}

export async function nodeGetVolumeStats(ctx: DriverContext, req: NodeGetVolumeStatsRequest__Output): Promise<NodeGetVolumeStatsResponse> {
  const known = parseId('vol', 'volume_id', req.volume_id);
  if (!req.volume_path) throw invalid('volume_path is required');
  // No backend lookup: a volume that does not exist has no device, so volumeAt answers NOT_FOUND.
  if (!known) throw notFound(`volume ${req.volume_id} does not exist`);
  const id = known;
  const { path: volumePath, state } = await volumeAt(ctx, id, req.volume_path);
  const problem = await ctx.blockDevices.deviceProblem(id, state.device);
  const volume_condition = { abnormal: problem !== null, message: problem ?? 'volume is healthy' };
  if (state.kind === 'block') {
    return { usage: [{ unit: 'BYTES', total: String(await blockDeviceSize(state.device)) }], volume_condition };
  }
  const fs = await statfs(volumePath);
  return {
    usage: [
      { unit: 'BYTES', total: String(fs.blocks * fs.bsize), available: String(fs.bavail * fs.bsize), used: String((fs.blocks - fs.bfree) * fs.bsize) },
      { unit: 'INODES', total: String(fs.files), available: String(fs.ffree), used: String(fs.files - fs.ffree) },
    ],
    volume_condition,
  };
}

export async function nodeExpandVolume(ctx: DriverContext, req: NodeExpandVolumeRequest__Output): Promise<NodeExpandVolumeResponse> {
  parseId('vol', 'volume_id', req.volume_id);
  if (!req.volume_path) throw invalid('volume_path is required');
  const range = parseRange(req.capacity_range);
  if (req.volume_capability) parseCapability(req.volume_capability, ctx.access);
  return ctx.locks.with([volumeLock(req.volume_id)], async () => {
    const vol = await requireVolume(ctx, 'volume_id', req.volume_id);
    const { path: volumePath, state } = await volumeAt(ctx, vol.id, req.volume_path);
    // Without a capacity range the filesystem grows to fill the volume as it is (the spec allows either).
    const granularity = ctx.backend?.granularity ?? ctx.sizing.granularity;
    const size = range.required || range.limit ? Math.max(vol.capacityBytes, chooseSize(range, { ...ctx.sizing, granularity })) : vol.capacityBytes;
    const grown = await ctx.volumeView.expand(vol, size, state.device);
    for (const { device } of await ctx.blockDevices.devices(vol.id)) await ctx.blockDevices.refreshSize(device);
    if (state.kind === 'filesystem' && isFsType(state.fsType)) await growFilesystem(state.fsType, state.device, volumePath);
    return { capacity_bytes: String(grown) };
  });
}
