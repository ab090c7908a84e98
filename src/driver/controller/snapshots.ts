import { conflict, invalid, notFound } from '../../errors.js';
import { idFor, isId, parseId, validateName } from '../../ids.js';
import { snapshotLock, volumeLock } from '../../locks.js';
import type { SnapshotRecord } from '../../records.js';
import type { ControllerContext } from '../context.js';
import { parseSnapshotParameters } from '../parameters.js';

export interface NewSnapshot {
  name: string;
  sourceVolumeId: string;
  /** VolumeSnapshotClass parameters as given. */
  parameters: Record<string, string>;
}

/** Takes the snapshot, or returns the one a retry made; ALREADY_EXISTS when the name is taken for another volume. */
export async function createSnapshot(ctx: ControllerContext, req: NewSnapshot): Promise<SnapshotRecord> {
  const name = validateName('name', req.name);
  if (!req.sourceVolumeId) throw invalid('source_volume_id is required');
  const source = parseId('vol', 'source_volume_id', req.sourceVolumeId);
  const parameters = parseSnapshotParameters(req.parameters, ctx.backend.snapshotParameters);
  const id = idFor('snap', name);
  return ctx.locks.with([snapshotLock(id), ...(source ? [volumeLock(source)] : [])], async () => {
    const existing = await ctx.backend.getSnapshot(id);
    if (existing) {
      if (existing.sourceVolumeId !== req.sourceVolumeId) throw conflict(`snapshot ${name} exists for another source volume (${existing.sourceVolumeId})`);
      return existing;
    }
    if (!source || !(await ctx.backend.getVolume(source))) throw notFound(`source volume ${req.sourceVolumeId} does not exist`);
    return ctx.backend.createSnapshot({ id, name, sourceVolumeId: source, parameters });
  });
}

/** Deletes the snapshot; one that was never ours or is gone already is done. */
export async function deleteSnapshot(ctx: ControllerContext, snapshotId: string): Promise<void> {
  const id = parseId('snap', 'snapshot_id', snapshotId);
  if (!id) return;
  // A member of a group snapshot is refused by the pool (INVALID_ARGUMENT, the spec's code).
  await ctx.locks.with([snapshotLock(id)], () => ctx.backend.deleteSnapshot(id));
}

export interface SnapshotFilter {
  snapshotId?: string;
  sourceVolumeId?: string;
}

/** The snapshots that match; filtering by an unknown or malformed ID finds nothing rather than failing (the spec's wording). */
export async function findSnapshots(ctx: ControllerContext, filter: SnapshotFilter): Promise<SnapshotRecord[]> {
  let all: SnapshotRecord[];
  if (filter.snapshotId) {
    const one = isId('snap', filter.snapshotId) ? await ctx.backend.getSnapshot(filter.snapshotId) : null;
    all = one ? [one] : [];
  } else {
    all = await ctx.backend.listSnapshots();
  }
  return filter.sourceVolumeId ? all.filter((s) => s.sourceVolumeId === filter.sourceVolumeId) : all;
}

export async function getSnapshot(ctx: ControllerContext, snapshotId: string): Promise<SnapshotRecord> {
  const id = parseId('snap', 'snapshot_id', snapshotId);
  const snap = id ? await ctx.backend.getSnapshot(id) : null;
  if (!snap) throw notFound(`snapshot ${snapshotId} does not exist`);
  return snap;
}
