import { statfs } from 'node:fs/promises';
import { invalid, notFound } from '../../errors.js';
import { isFsType } from '../../filesystems.js';
import { growFilesystem } from '../../host/filesystem.js';
import { blockDeviceSize } from '../../host/loop.js';
import { readMounts } from '../../host/mounts.js';
import { stateAt, type PathState } from '../../host/staging.js';
import { parseId } from '../../ids.js';
import { volumeLock } from '../../locks.js';
import type { Condition } from '../../records.js';
import type { DriverContext } from '../context.js';
import { requireVolume } from '../lookups.js';
import { chooseSize, type Range } from '../sizing.js';

/**
 * Where the volume is usable at `rawPath` (a staging or publish path), from the kernel. A path
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

export interface Usage {
  total: number;
  available: number;
  used: number;
}

export type VolumeStats =
  | { kind: 'block'; totalBytes: number; condition: Condition }
  | { kind: 'filesystem'; bytes: Usage; inodes: Usage; condition: Condition };

/** Usage and health of the volume where it is staged or published. */
export async function volumeStats(ctx: DriverContext, volumeId: string, volumePath: string): Promise<VolumeStats> {
  const known = parseId('vol', 'volume_id', volumeId);
  if (!volumePath) throw invalid('volume_path is required');
  // No pool lookup: a volume that does not exist has no device, so volumeAt answers NOT_FOUND.
  if (!known) throw notFound(`volume ${volumeId} does not exist`);
  const { path, state } = await volumeAt(ctx, known, volumePath);
  const problem = await ctx.blockDevices.deviceProblem(known, state.device);
  const condition = { abnormal: problem !== null, message: problem ?? 'volume is healthy' };
  if (state.kind === 'block') return { kind: 'block', totalBytes: await blockDeviceSize(state.device), condition };
  const fs = await statfs(path);
  return {
    kind: 'filesystem',
    bytes: { total: fs.blocks * fs.bsize, available: fs.bavail * fs.bsize, used: (fs.blocks - fs.bfree) * fs.bsize },
    inodes: { total: fs.files, available: fs.ffree, used: fs.files - fs.ffree },
    condition,
  };
}

/**
 * Grows the volume (node-local pools) or learns the size the controller gave it, makes the kernel see
 * it, and grows the filesystem mounted at `volumePath`. Returns the volume's size in bytes.
 */
export async function expandOnNode(ctx: DriverContext, volumeId: string, volumePath: string, range: Range): Promise<number> {
  const id = parseId('vol', 'volume_id', volumeId);
  if (!volumePath) throw invalid('volume_path is required');
  if (!id) throw notFound(`volume ${volumeId} does not exist`);
  return ctx.locks.with([volumeLock(id)], async () => {
    const vol = await requireVolume(ctx, 'volume_id', id);
    const { path, state } = await volumeAt(ctx, vol.id, volumePath);
    // Without a capacity range the filesystem grows to fill the volume as it is (the spec allows either).
    const granularity = ctx.backend?.granularity ?? ctx.sizing.granularity;
    const size = range.required || range.limit ? Math.max(vol.capacityBytes, chooseSize(range, { ...ctx.sizing, granularity })) : vol.capacityBytes;
    const grown = await ctx.volumeView.expand(vol, size, state.device);
    for (const { device } of await ctx.blockDevices.devices(vol.id)) await ctx.blockDevices.refreshSize(device);
    if (state.kind === 'filesystem' && isFsType(state.fsType)) await growFilesystem(state.fsType, state.device, path);
    return grown;
  });
}
