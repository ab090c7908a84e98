import { conflict, invalid, notFound, precondition, unsupported } from '../../errors.js';
import { idFor, memberIdFor, parseId, validateName } from '../../ids.js';
import { groupLock, snapshotLock, volumeLock } from '../../locks.js';
import type { GroupSnapshot, GroupSnapshots } from '../../pool/backend.js';
import type { ControllerContext } from '../context.js';

/** Whether this pool cuts group snapshots (the GroupController service's capability). */
export function hasGroupSnapshots(ctx: Partial<ControllerContext>): boolean {
  return ctx.backend?.groupSnapshots !== undefined;
}

function groupsOf(ctx: ControllerContext): GroupSnapshots {
  const g = ctx.backend.groupSnapshots;
  if (!g) throw unsupported(`the ${ctx.backend.kind} pool does not cut group snapshots`);
  return g;
}

/**
 * A member's snapshot ID, from the group's and the volume's: a retried create lands on the same
 * IDs. Its name holds a '/', which no CSI snapshot name may, so no CreateSnapshot can take it.
 */
function member(groupId: string, volumeId: string): { snapshotId: string; snapshotName: string } {
  const snapshotName = `${groupId}/${volumeId}`;
  return { snapshotId: memberIdFor(snapshotName), snapshotName };
}

export interface NewGroupSnapshot {
  name: string;
  sourceVolumeIds: readonly string[];
  parameters: Record<string, string>;
}

/** Cuts the group, or returns the one a retry made; ALREADY_EXISTS when the name is taken for other volumes. */
export async function createGroupSnapshot(ctx: ControllerContext, req: NewGroupSnapshot): Promise<GroupSnapshot> {
  const groups = groupsOf(ctx);
  const name = validateName('name', req.name);
  if (!req.sourceVolumeIds.length) throw invalid('source_volume_ids is required');
  // The csi-snapshotter's own keys (with --extra-create-metadata: the group's and its content's names) carry nothing for the pool.
  const unknown = Object.keys(req.parameters).filter((k) => !k.startsWith('csi.storage.k8s.io/'));
  if (unknown.length) throw invalid(`unknown parameters ${unknown.join(', ')}: the ${ctx.backend.kind} pool takes none for group snapshots`);
  const volumeIds = req.sourceVolumeIds.map((v, i) => {
    const id = parseId('vol', `source_volume_ids[${i}]`, v);
    if (!id) throw notFound(`source volume ${v} does not exist`);
    return id;
  });
  if (new Set(volumeIds).size !== volumeIds.length) throw invalid('source_volume_ids names a volume twice');
  const sorted = [...volumeIds].sort();
  const id = idFor('group', name);
  const members = sorted.map((v) => ({ volumeId: v, ...member(id, v) }));
  return ctx.locks.with([groupLock(id), ...sorted.map(volumeLock), ...members.map((m) => snapshotLock(m.snapshotId))], async () => {
    const existing = await groups.get(id);
    if (existing) {
      if (existing.group.sourceVolumeIds.join(',') !== sorted.join(',')) throw conflict(`group snapshot ${name} exists for other volumes (${existing.group.sourceVolumeIds.join(', ')})`);
      return existing;
    }
    for (const v of sorted) {
      if (!(await ctx.backend.getVolume(v))) {
        // The spec's "cannot snapshot multiple volumes together": a volume of another node's pool, or none at all.
        throw precondition(`source volume ${v} is not in this pool: the volumes of a group snapshot must all be in one node's pool`);
      }
    }
    return groups.create({ id, name, members });
  });
}

/** The snapshot_ids a caller names must be the group's, if it names any. */
function checkMembers(g: GroupSnapshot, snapshotIds: readonly string[]): void {
  if (!snapshotIds.length) return;
  const want = [...g.group.snapshotIds].sort().join(',');
  if ([...snapshotIds].sort().join(',') !== want) throw invalid(`snapshot_ids do not match group snapshot ${g.group.id}'s members (${g.group.snapshotIds.join(', ')})`);
}

export async function getGroupSnapshot(ctx: ControllerContext, groupSnapshotId: string, snapshotIds: readonly string[]): Promise<GroupSnapshot> {
  const groups = groupsOf(ctx);
  const id = parseId('group', 'group_snapshot_id', groupSnapshotId);
  const g = id ? await groups.get(id) : null;
  if (!g) throw notFound(`group snapshot ${groupSnapshotId} does not exist`);
  checkMembers(g, snapshotIds);
  return g;
}

/** Deletes the group and its members; one that was never ours or is gone already is done. */
export async function deleteGroupSnapshot(ctx: ControllerContext, groupSnapshotId: string, snapshotIds: readonly string[]): Promise<void> {
  const groups = groupsOf(ctx);
  const id = parseId('group', 'group_snapshot_id', groupSnapshotId);
  if (!id) return;
  await ctx.locks.with([groupLock(id)], async () => {
    const g = await groups.get(id);
    if (g) {
      checkMembers(g, snapshotIds);
      // Each member's lock too: a restore reading a member holds it, and the delete waits (or is ABORTED and retried).
      await ctx.locks.with(g.group.snapshotIds.map(snapshotLock), () => groups.delete(id));
    } else await groups.delete(id);
  });
}
