import type { CreateVolumeGroupSnapshotRequest__Output } from '../../gen/csi/v1/CreateVolumeGroupSnapshotRequest.js';
import type { CreateVolumeGroupSnapshotResponse } from '../../gen/csi/v1/CreateVolumeGroupSnapshotResponse.js';
import type { DeleteVolumeGroupSnapshotRequest__Output } from '../../gen/csi/v1/DeleteVolumeGroupSnapshotRequest.js';
import type { GetVolumeGroupSnapshotRequest__Output } from '../../gen/csi/v1/GetVolumeGroupSnapshotRequest.js';
import type { GetVolumeGroupSnapshotResponse } from '../../gen/csi/v1/GetVolumeGroupSnapshotResponse.js';
import type { VolumeGroupSnapshot } from '../../gen/csi/v1/VolumeGroupSnapshot.js';
import type { ControllerContext } from '../driver/context.js';
import { createGroupSnapshot, deleteGroupSnapshot, getGroupSnapshot } from '../driver/controller/group-snapshots.js';
import type { GroupSnapshot } from '../records.js';
import { toCsiSnapshot } from './convert.js';

function toCsiGroup(g: GroupSnapshot): VolumeGroupSnapshot {
  return {
    group_snapshot_id: g.group.id,
    snapshots: g.snapshots.map(toCsiSnapshot),
    creation_time: { seconds: String(Math.floor(g.group.createdAt / 1000)), nanos: (g.group.createdAt % 1000) * 1e6 },
    // A group without members is no backup: never ready (a pool that lost them says why in its log).
    ready_to_use: g.snapshots.length > 0 && g.snapshots.length === g.group.snapshotIds.length && g.snapshots.every((s) => s.readyToUse),
  };
}

export async function createVolumeGroupSnapshot(ctx: ControllerContext, req: CreateVolumeGroupSnapshotRequest__Output): Promise<CreateVolumeGroupSnapshotResponse> {
  return { group_snapshot: toCsiGroup(await createGroupSnapshot(ctx, { name: req.name, sourceVolumeIds: req.source_volume_ids, parameters: req.parameters })) };
}

export async function getVolumeGroupSnapshot(ctx: ControllerContext, req: GetVolumeGroupSnapshotRequest__Output): Promise<GetVolumeGroupSnapshotResponse> {
  return { group_snapshot: toCsiGroup(await getGroupSnapshot(ctx, req.group_snapshot_id, req.snapshot_ids)) };
}

export async function deleteVolumeGroupSnapshot(ctx: ControllerContext, req: DeleteVolumeGroupSnapshotRequest__Output): Promise<object> {
  await deleteGroupSnapshot(ctx, req.group_snapshot_id, req.snapshot_ids);
  return {};
}
