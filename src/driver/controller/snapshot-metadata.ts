import { DriverError, exhausted, invalid, notFound, outOfRange, unsupported } from '../../errors.js';
import { parseId } from '../../ids.js';
import type { ByteRange } from '../../pool/block-ranges.js';
import type { SnapshotBlocks, SnapshotRecord } from '../../pool/backend.js';
import type { ControllerContext } from '../context.js';

/** The ranges of one answer of the SnapshotMetadata service, and the size of the volume they are of. */
export interface BlockStream {
  capacityBytes: number;
  ranges: AsyncIterable<ByteRange>;
}

/**
 * Streams served at once, and waiting: a delta compared by reading data reads two whole images, so
 * a crowd of backups must not start them all together. Past the queue: RESOURCE_EXHAUSTED, retried.
 */
export class StreamSlots {
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(
    readonly max = 4,
    readonly queue = 16,
  ) {}

  /** Waits for a slot (or the call's end); the slot is the caller's until it calls the release returned. */
  async take(signal: AbortSignal): Promise<() => void> {
    if (this.running >= this.max) {
      if (this.waiting.length >= this.queue) throw exhausted(`${this.running} snapshot metadata streams run and ${this.waiting.length} wait; retry later`);
      await new Promise<void>((resolve, reject) => {
        const turn = () => {
          signal.removeEventListener('abort', gone);
          resolve();
        };
        const gone = () => {
          this.waiting.splice(this.waiting.indexOf(turn), 1);
          reject(new DriverError('cancelled', 'the call ended while it waited for a snapshot metadata stream slot'));
        };
        this.waiting.push(turn);
        signal.addEventListener('abort', gone, { once: true });
      });
    } else this.running++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const next = this.waiting.shift();
      // The slot passes straight to the next in line: `running` stays.
      if (next) next();
      else this.running--;
    };
  }
}

const slots = new StreamSlots();

/** Ranges that hold a stream slot until they are done with (ended, failed or given up). */
async function* holding(release: () => void, ranges: AsyncIterable<ByteRange>): AsyncGenerator<ByteRange> {
  try {
    yield* ranges;
  } finally {
    release();
  }
}

/** Whether this pool can tell its snapshots' blocks (the SNAPSHOT_METADATA_SERVICE capability). */
export function hasSnapshotMetadata(ctx: Partial<ControllerContext>): boolean {
  return ctx.backend?.snapshotBlocks !== undefined;
}

function blocksOf(ctx: Pick<ControllerContext, 'backend'>): SnapshotBlocks {
  const blocks = ctx.backend.snapshotBlocks;
  if (!blocks) throw unsupported(`the ${ctx.backend.kind} pool does not tell its snapshots' blocks`);
  return blocks;
}

/** The spec's starting_offset: negative or past the volume's end is OUT_OF_RANGE; at the end, nothing is left to send. */
function checkOffset(from: number, capacityBytes: number): void {
  if (!Number.isSafeInteger(from) || from < 0) throw outOfRange(`starting_offset ${from} is negative`);
  if (from > capacityBytes) throw outOfRange(`starting_offset ${from} is past the end of the snapshot (${capacityBytes} bytes)`);
}

/**
 * Snapshots this node's pool does not hold, asked of the node that does (a node-local pool: the
 * sidecar a backup tool reaches may sit on any node). Absent without the node-to-node channel.
 */
export interface RemoteSnapshotMetadata {
  allocated(snapshotId: string, from: number, signal: AbortSignal): Promise<BlockStream>;
  delta(baseId: string, targetId: string, from: number, signal: AbortSignal): Promise<BlockStream>;
}

/** What the answers take: the pool, and the peers for what it lacks. */
export type MetadataContext = Pick<ControllerContext, 'backend'> & { remoteMetadata?: RemoteSnapshotMetadata };

/** A snapshot of this pool, null when it holds none by that ID (the ID checked first: a malformed one is INVALID_ARGUMENT, never forwarded). */
async function localSnapshot(ctx: MetadataContext, field: string, snapshotId: string): Promise<SnapshotRecord | null> {
  const id = parseId('snap', field, snapshotId);
  return id ? await ctx.backend.getSnapshot(id) : null;
}

/** GetMetadataAllocated: where the snapshot holds data, from `from` on. */
export async function allocatedBlocks(ctx: MetadataContext, req: { snapshotId: string; from: number }, signal: AbortSignal): Promise<BlockStream> {
  const snap = await localSnapshot(ctx, 'snapshot_id', req.snapshotId);
  if (!snap && ctx.remoteMetadata) {
    if (!Number.isSafeInteger(req.from) || req.from < 0) throw outOfRange(`starting_offset ${req.from} is negative`);
    // No slot here: a relay reads no disk, and the holder takes one of its own (two nodes relaying to each
    // other from a shared pool of slots could each wait for the other's).
    return ctx.remoteMetadata.allocated(req.snapshotId, req.from, signal);
  }
  if (!snap) throw notFound(`snapshot_id ${req.snapshotId}: no such snapshot`);
  const blocks = blocksOf(ctx);
  checkOffset(req.from, snap.sizeBytes);
  const release = await slots.take(signal);
  return { capacityBytes: snap.sizeBytes, ranges: holding(release, blocks.allocated(snap, req.from, signal)) };
}

/**
 * GetMetadataDelta: where the target may differ from the base, from `from` on. Both must be
 * snapshots of one volume and the base the older: a delta across volumes, or backwards, would
 * restore something that never existed. Snapshots of one volume are on one node: both here, or both
 * asked of the node that holds them.
 */
export async function changedBlocks(ctx: MetadataContext, req: { baseId: string; targetId: string; from: number }, signal: AbortSignal): Promise<BlockStream> {
  const base = await localSnapshot(ctx, 'base_snapshot_id', req.baseId);
  const target = await localSnapshot(ctx, 'target_snapshot_id', req.targetId);
  if (!base && !target && ctx.remoteMetadata) {
    if (!Number.isSafeInteger(req.from) || req.from < 0) throw outOfRange(`starting_offset ${req.from} is negative`);
    return ctx.remoteMetadata.delta(req.baseId, req.targetId, req.from, signal);
  }
  if (!base) throw notFound(`base_snapshot_id ${req.baseId}: no such snapshot${target ? ' on the node that holds the target (a delta is between snapshots of one volume)' : ''}`);
  if (!target) throw notFound(`target_snapshot_id ${req.targetId}: no such snapshot on the node that holds the base (a delta is between snapshots of one volume)`);
  const blocks = blocksOf(ctx);
  if (base.sourceVolumeId !== target.sourceVolumeId) {
    throw invalid(`base_snapshot_id ${base.id} is of volume ${base.sourceVolumeId} and target_snapshot_id ${target.id} of volume ${target.sourceVolumeId}: a delta is between snapshots of one volume`);
  }
  if (base.id !== target.id && base.createdAt > target.createdAt) {
    throw invalid(`base_snapshot_id ${base.id} was taken after target_snapshot_id ${target.id}: the base must be the older`);
  }
  if (target.sizeBytes < base.sizeBytes) throw invalid(`target_snapshot_id ${target.id} is smaller than base_snapshot_id ${base.id}: volumes do not shrink`);
  checkOffset(req.from, target.sizeBytes);
  if (base.id === target.id) return { capacityBytes: target.sizeBytes, ranges: (async function* (): AsyncGenerator<ByteRange> {})() };
  const release = await slots.take(signal);
  return { capacityBytes: target.sizeBytes, ranges: holding(release, blocks.delta(base, target, req.from, signal)) };
}

/** This node's own answers, for a peer that forwards a request (never forwarded again). */
export function localMetadata(backend: ControllerContext['backend']): { holds(id: string): Promise<boolean>; allocated: RemoteSnapshotMetadata['allocated']; delta: RemoteSnapshotMetadata['delta'] } {
  const ctx: MetadataContext = { backend };
  return {
    holds: async (id) => (await backend.getSnapshot(id)) !== null,
    allocated: (id, from, signal) => allocatedBlocks(ctx, { snapshotId: id, from }, signal),
    delta: (baseId, targetId, from, signal) => changedBlocks(ctx, { baseId, targetId, from }, signal),
  };
}
