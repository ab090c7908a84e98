import type { CreateSnapshotRequest__Output } from '../../../gen/csi/v1/CreateSnapshotRequest.js';
import type { CreateSnapshotResponse } from '../../../gen/csi/v1/CreateSnapshotResponse.js';
import type { DeleteSnapshotRequest__Output } from '../../../gen/csi/v1/DeleteSnapshotRequest.js';
import type { DeleteSnapshotResponse } from '../../../gen/csi/v1/DeleteSnapshotResponse.js';
import type { GetSnapshotRequest__Output } from '../../../gen/csi/v1/GetSnapshotRequest.js';
import type { GetSnapshotResponse } from '../../../gen/csi/v1/GetSnapshotResponse.js';
import type { ListSnapshotsRequest__Output } from '../../../gen/csi/v1/ListSnapshotsRequest.js';
import type { ListSnapshotsResponse } from '../../../gen/csi/v1/ListSnapshotsResponse.js';
import type { ControllerContext } from '../../driver/context.js';
import * as snapshots from '../../driver/controller/snapshots.js';
import { isId } from '../../ids.js';
import { toCsiSnapshot } from '../convert.js';
import { paginate } from '../pagination.js';

export async function createSnapshot(ctx: ControllerContext, req: CreateSnapshotRequest__Output): Promise<CreateSnapshotResponse> {
  const snap = await snapshots.createSnapshot(ctx, { name: req.name, sourceVolumeId: req.source_volume_id, parameters: req.parameters });
  return { snapshot: toCsiSnapshot(snap) };
}

export async function deleteSnapshot(ctx: ControllerContext, req: DeleteSnapshotRequest__Output): Promise<DeleteSnapshotResponse> {
  await snapshots.deleteSnapshot(ctx, req.snapshot_id);
  return {};
}

export async function listSnapshots(ctx: ControllerContext, req: ListSnapshotsRequest__Output): Promise<ListSnapshotsResponse> {
  const all = await snapshots.findSnapshots(ctx, { snapshotId: req.snapshot_id, sourceVolumeId: req.source_volume_id });
  const { page, nextToken } = paginate(all, (s) => s.id, req.max_entries, req.starting_token, (k) => isId('snap', k));
  return { entries: page.map((s) => ({ snapshot: toCsiSnapshot(s) })), next_token: nextToken };
}

export async function getSnapshot(ctx: ControllerContext, req: GetSnapshotRequest__Output): Promise<GetSnapshotResponse> {
  return { snapshot: toCsiSnapshot(await snapshots.getSnapshot(ctx, req.snapshot_id)) };
}
