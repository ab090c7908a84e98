import { parseMutableParameters } from '../../pool/mutable-parameters.js';
import { notFound } from '../../errors.js';
import { parseId } from '../../ids.js';
import { pageAfter, type Page } from '../../paging.js';
import type { Condition, VolumeRecord } from '../../records.js';
import type { ControllerContext } from '../context.js';
import { requirePoolVolume } from '../lookups.js';
import { parseVolumeParameters } from '../parameters.js';

export interface IntendedUse {
  /** StorageClass parameters the CO means to use the volume with. */
  parameters: Record<string, string>;
  /** Filesystems the CO's mount capabilities name. */
  mountFsTypes: string[];
  /** The fsType of the volume_context the CO holds, if it holds one. */
  contextFsType?: string;
  /** VolumeAttributesClass parameters the volume is to be used with. */
  mutableParameters?: Record<string, string>;
}

/** Why the volume cannot be used as intended (empty: it can); NOT_FOUND when there is no such volume. */
export async function mismatches(ctx: ControllerContext, volumeId: string, use: IntendedUse): Promise<string[]> {
  const vol = await requirePoolVolume(ctx, 'volume_id', volumeId);
  const problems: string[] = [];
  const made = vol.parameters.fsType;
  try {
    const params = parseVolumeParameters(use.parameters, ctx.backend.volumeParameters, ctx.backend.mutableParameters);
    if (params.fsType && params.fsType !== made) problems.push(`the volume was not created with fsType ${params.fsType}`);
  } catch (err) {
    problems.push((err as Error).message);
  }
  try {
    parseMutableParameters(use.mutableParameters, ctx.backend.mutableParameters ?? {});
  } catch (err) {
    problems.push((err as Error).message);
  }
  for (const fs of use.mountFsTypes) if (fs && made && fs !== made) problems.push(`the volume is meant for ${made}, not ${fs}`);
  if (use.contextFsType !== undefined && use.contextFsType !== (made ?? '')) problems.push('volume_context does not match the volume');
  return problems;
}

export interface VolumeStatus {
  publishedNodes: string[];
  condition: Condition;
}

/** One page of volumes in ID order: read page by page where the pool can, else cut from the whole list. */
export async function listVolumes(ctx: ControllerContext, after: string, limit: number): Promise<Page<VolumeRecord>> {
  if (ctx.backend.listVolumePage) return ctx.backend.listVolumePage(after, limit);
  return pageAfter(await ctx.backend.listVolumes(), (v) => v.id, after, limit);
}

/** Where each volume is published and how healthy it is, with one look at the nodes for all of them. */
export async function statuses(ctx: ControllerContext, vols: VolumeRecord[]): Promise<VolumeStatus[]> {
  const published = ctx.controllerAttacher ? await ctx.controllerAttacher.publishedNodes(vols.map((v) => v.id)) : new Map<string, string[]>();
  const conditions = await ctx.backend.volumeConditions(vols);
  return vols.map((v, i) => ({ publishedNodes: published.get(v.id) ?? [], condition: conditions[i] }));
}

export async function getVolume(ctx: ControllerContext, volumeId: string): Promise<{ volume: VolumeRecord; status: VolumeStatus }> {
  const id = parseId('vol', 'volume_id', volumeId);
  const volume = id ? await ctx.backend.getVolume(id) : null;
  if (!volume) throw notFound(`volume ${volumeId} does not exist`);
  const publishedNodes = ctx.controllerAttacher ? [...new Set((await ctx.controllerAttacher.attachments(volume.id)).map((a) => a.nodeId))] : [];
  const [condition] = await ctx.backend.volumeConditions([volume]);
  return { volume, status: { publishedNodes, condition } };
}
