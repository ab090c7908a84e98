import { invalid, notFound, outOfRange, unsupported } from '../../errors.js';
import { parseId } from '../../ids.js';
import type { ByteRange } from '../../pool/block-ranges.js';
import type { SnapshotBlocks, SnapshotRecord } from '../../pool/backend.js';
import type { ControllerContext } from '../context.js';

/** The ranges of one answer of the SnapshotMetadata service, and the size of the volume they are of. */
export interface BlockStream {
  capacityBytes: number;
  ranges: AsyncIterable<ByteRange>;
}

/** Whether this pool can tell its snapshots' blocks (the SNAPSHOT_METADATA_SERVICE capability). */
export function hasSnapshotMetadata(ctx: Partial<ControllerContext>): boolean {
  return ctx.backend?.snapshotBlocks !== undefined;
}

function blocksOf(ctx: ControllerContext): SnapshotBlocks {
  const blocks = ctx.backend.snapshotBlocks;
  if (!blocks) throw unsupported(`the ${ctx.backend.kind} pool does not tell its snapshots' blocks`);
  return blocks;
}

async function snapshot(ctx: ControllerContext, field: string, snapshotId: string): Promise<SnapshotRecord> {
  const id = parseId('snap', field, snapshotId);
  const snap = id ? await ctx.backend.getSnapshot(id) : null;
  if (!snap) throw notFound(`${field} ${snapshotId}: no such snapshot`);
  return snap;
}

/** The spec's starting_offset: negative or past the volume's end is OUT_OF_RANGE; at the end, nothing is left to send. */
function checkOffset(from: number, capacityBytes: number): void {
  if (!Number.isSafeInteger(from) || from < 0) throw outOfRange(`starting_offset ${from} is negative`);
  if (from > capacityBytes) throw outOfRange(`starting_offset ${from} is past the end of the snapshot (${capacityBytes} bytes)`);
}

/** GetMetadataAllocated: where the snapshot holds data, from `from` on. */
export async function allocatedBlocks(ctx: ControllerContext, req: { snapshotId: string; from: number }, signal: AbortSignal): Promise<BlockStream> {
  const blocks = blocksOf(ctx);
  const snap = await snapshot(ctx, 'snapshot_id', req.snapshotId);
  checkOffset(req.from, snap.sizeBytes);
  return { capacityBytes: snap.sizeBytes, ranges: blocks.allocated(snap, req.from, signal) };
}

/**
 * GetMetadataDelta: where the target may differ from the base, from `from` on. Both must be
 * snapshots of one volume and the base the older: a delta across volumes, or backwards, would
 * restore something that never existed.
 */
export async function changedBlocks(ctx: ControllerContext, req: { baseId: string; targetId: string; from: number }, signal: AbortSignal): Promise<BlockStream> {
  const blocks = blocksOf(ctx);
  const base = await snapshot(ctx, 'base_snapshot_id', req.baseId);
  const target = await snapshot(ctx, 'target_snapshot_id', req.targetId);
  if (base.sourceVolumeId !== target.sourceVolumeId) {
    throw invalid(`base_snapshot_id ${base.id} is of volume ${base.sourceVolumeId} and target_snapshot_id ${target.id} of volume ${target.sourceVolumeId}: a delta is between snapshots of one volume`);
  }
  if (base.id !== target.id && base.createdAt > target.createdAt) {
    throw invalid(`base_snapshot_id ${base.id} was taken after target_snapshot_id ${target.id}: the base must be the older`);
  }
  if (target.sizeBytes < base.sizeBytes) throw invalid(`target_snapshot_id ${target.id} is smaller than base_snapshot_id ${base.id}: volumes do not shrink`);
  checkOffset(req.from, target.sizeBytes);
  const ranges = base.id === target.id ? (async function* (): AsyncGenerator<ByteRange> {})() : blocks.delta(base, target, req.from, signal);
  return { capacityBytes: target.sizeBytes, ranges };
}
