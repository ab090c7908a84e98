import type { CreateSnapshotRequest__Output } from '../../../gen/csi/v1/CreateSnapshotRequest.js';
import type { CreateSnapshotResponse } from '../../../gen/csi/v1/CreateSnapshotResponse.js';
import type { DeleteSnapshotRequest__Output } from '../../../gen/csi/v1/DeleteSnapshotRequest.js';
import type { DeleteSnapshotResponse } from '../../../gen/csi/v1/DeleteSnapshotResponse.js';
import type { GetSnapshotRequest__Output } from '../../../gen/csi/v1/GetSnapshotRequest.js';
import type { GetSnapshotResponse } from '../../../gen/csi/v1/GetSnapshotResponse.js';
import type { ListSnapshotsRequest__Output } from '../../../gen/csi/v1/ListSnapshotsRequest.js';
import type { ListSnapshotsResponse } from '../../../gen/csi/v1/ListSnapshotsResponse.js';
import type { Snapshot } from '../../../gen/csi/v1/Snapshot.js';
import { conflict, invalid, notFound } from '../../errors.js';
import type { SnapshotRecord } from '../../pool/backend.js';
import { type ControllerContext } from '../context.js';
import { snapshotLock, volumeLock } from '../../locks.js';
import { idFor, isId, parseId, validateName } from '../../ids.js';
import { paginate } from '../pagination.js';
import { parseSnapshotParameters } from '../parameters.js';

function toCsiSnapshot(s: SnapshotRecord): Snapshot {
  return {
    snapshot_id: s.id,
    source_volume_id: s.sourceVolumeId,
    size_bytes: String(s.sizeBytes),
    creation_time: { seconds: String(Math.floor(s.createdAt / 1000)), nanos: (s.createdAt % 1000) * 1e6 },
    ready_to_use: s.readyToUse,
    group_snapshot_id: '',
  };
}

export async function createSnapshot(ctx: ControllerContext, req: CreateSnapshotRequest__Output): Promise<CreateSnapshotResponse> {
  const name = validateName('name', req.name);
  if (!req.source_volume_id) throw invalid('source_volume_id is required');
  const source = parseId('vol', 'source_volume_id', req.source_volume_id);
  const parameters = parseSnapshotParameters(req.parameters, ctx.backend.snapshotParameters);
  const id = idFor('snap', name);
  return ctx.locks.with([snapshotLock(id), ...(source ? [volumeLock(source)] : [])], async () => {
    const existing = await ctx.backend.getSnapshot(id);
    if (existing) {
      if (existing.sourceVolumeId !== req.source_volume_id) throw conflict(`snapshot ${name} exists for another source volume (${existing.sourceVolumeId})`);
      return { snapshot: toCsiSnapshot(existing) };
    }
    if (!source || !(await ctx.backend.getVolume(source))) throw notFound(`source volume ${req.source_volume_id} does not exist`);
    return { snapshot: toCsiSnapshot(await ctx.backend.createSnapshot({ id, name, sourceVolumeId: source, parameters })) };
  });
}

export async function deleteSnapshot(ctx: ControllerContext, req: DeleteSnapshotRequest__Output): Promise<DeleteSnapshotResponse> {
  const id = parseId('snap', 'snapshot_id', req.snapshot_id);
  if (!id) return {};
  return ctx.locks.with([snapshotLock(id)], async () => {
    await ctx.backend.deleteSnapshot(id);
    return {};
  });
}

export async function listSnapshots(ctx: ControllerContext, req: ListSnapshotsRequest__Output): Promise<ListSnapshotsResponse> {
  let all: SnapshotRecord[];
  if (req.snapshot_id) {
    // Filtering by ID: an unknown or malformed ID lists nothing rather than failing (the spec's wording).
    const id = isId('snap', req.snapshot_id) ? req.snapshot_id : null;
    const one = id ? await ctx.backend.getSnapshot(id) : null;
    all = one ? [one] : [];
  } else {
    all = await ctx.backend.listSnapshots();
  }
  if (req.source_volume_id) all = all.filter((s) => s.sourceVolumeId === req.source_volume_id);
  const { page, nextToken } = paginate(all, (s) => s.id, req.max_entries, req.starting_token, (k) => isId('snap', k));
  return { entries: page.map((s) => ({ snapshot: toCsiSnapshot(s) })), next_token: nextToken };
}

export async function getSnapshot(ctx: ControllerContext, req: GetSnapshotRequest__Output): Promise<GetSnapshotResponse> {
  const id = parseId('snap', 'snapshot_id', req.snapshot_id);
  const snap = id ? await ctx.backend.getSnapshot(id) : null;
  if (!snap) throw notFound(`snapshot ${req.snapshot_id} does not exist`);
  return { snapshot: toCsiSnapshot(snap) };
}
