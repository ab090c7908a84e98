import type { BlockMetadata } from '../../gen/csi/v1/BlockMetadata.js';
import type { GetMetadataAllocatedRequest__Output } from '../../gen/csi/v1/GetMetadataAllocatedRequest.js';
import type { GetMetadataAllocatedResponse } from '../../gen/csi/v1/GetMetadataAllocatedResponse.js';
import type { GetMetadataDeltaRequest__Output } from '../../gen/csi/v1/GetMetadataDeltaRequest.js';
import type { ControllerContext } from '../driver/context.js';
import { allocatedBlocks, changedBlocks, type BlockStream } from '../driver/controller/snapshot-metadata.js';
import { invalid, outOfRange } from '../errors.js';
import { HEARTBEAT, withHeartbeat } from '../heartbeat.js';

/**
 * Tuples per message when the caller leaves max_results 0: about 20 bytes each on the wire, so a
 * message stays far below gRPC's 4 MiB default and a reader sees progress.
 */
const DEFAULT_PER_MESSAGE = 1024;

function offset(text: string): number {
  if (!/^-?\d+$/.test(text)) throw invalid(`starting_offset ${JSON.stringify(text)} is not an integer`);
  const v = BigInt(text);
  if (v < 0n) throw outOfRange(`starting_offset ${text} is negative`);
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw outOfRange(`starting_offset ${text} is past the end of every volume this pool can hold`);
  return Number(v);
}

function perMessage(maxResults: number): number {
  if (!Number.isInteger(maxResults) || maxResults < 0) throw invalid(`max_results must be 0 or more (got ${maxResults})`);
  return maxResults || DEFAULT_PER_MESSAGE;
}

/**
 * The stream's messages: VARIABLE_LENGTH tuples (the pools report runs, not fixed blocks), at most
 * `max` a message, the volume's capacity in each. A snapshot with nothing to report still gets one
 * message, so the reader learns the capacity.
 */
async function* messages(stream: BlockStream, max: number): AsyncGenerator<GetMetadataAllocatedResponse> {
  const message = (block_metadata: BlockMetadata[]): GetMetadataAllocatedResponse => ({
    block_metadata_type: 'VARIABLE_LENGTH',
    volume_capacity_bytes: String(stream.capacityBytes),
    block_metadata,
  });
  let batch: BlockMetadata[] = [];
  let sent = false;
  let at = Date.now();
  // A delta that reads two images may find nothing for minutes: what it found goes out within FLUSH_MS,
  // and a message with no tuples at least every HEARTBEAT_MS, so a reader (the sidecar, a forwarding
  // node, a backup) tells a slow answer from a hung one.
  for await (const item of withHeartbeat(stream.ranges, HEARTBEAT_MS)) {
    if (item !== HEARTBEAT) batch.push({ byte_offset: String(item[0]), size_bytes: String(item[1] - item[0]) });
    if (batch.length >= max || (batch.length && Date.now() - at >= FLUSH_MS) || item === HEARTBEAT) {
      yield message(batch);
      sent = true;
      batch = [];
      at = Date.now();
    }
  }
  if (batch.length || !sent) yield message(batch);
}

const FLUSH_MS = 5_000;
const HEARTBEAT_MS = 30_000;

export async function getMetadataAllocated(ctx: ControllerContext, req: GetMetadataAllocatedRequest__Output, signal: AbortSignal): Promise<AsyncIterable<GetMetadataAllocatedResponse>> {
  const max = perMessage(req.max_results);
  return messages(await allocatedBlocks(ctx, { snapshotId: req.snapshot_id, from: offset(req.starting_offset) }, signal), max);
}

/** The delta's messages have the allocated ones' shape (GetMetadataDeltaResponse has the same fields). */
export async function getMetadataDelta(ctx: ControllerContext, req: GetMetadataDeltaRequest__Output, signal: AbortSignal): Promise<AsyncIterable<GetMetadataAllocatedResponse>> {
  const max = perMessage(req.max_results);
  return messages(await changedBlocks(ctx, { baseId: req.base_snapshot_id, targetId: req.target_snapshot_id, from: offset(req.starting_offset) }, signal), max);
}
