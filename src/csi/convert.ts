import type { Snapshot } from '../../gen/csi/v1/Snapshot.js';
import type { Volume } from '../../gen/csi/v1/Volume.js';
import type { Condition, SnapshotRecord, VolumeRecord } from '../records.js';

/** The driver's records as CSI messages, shared by both services. */

/** A volume as CSI returns it (CreateVolume, ListVolumes, ControllerGetVolume). */
export function toCsiVolume(topology: Record<string, string>, v: VolumeRecord): Volume {
  return {
    volume_id: v.id,
    capacity_bytes: String(v.capacityBytes),
    volume_context: v.parameters.fsType ? { fsType: v.parameters.fsType } : {},
    content_source: v.source
      ? v.source.kind === 'snapshot'
        ? { snapshot: { snapshot_id: v.source.id } }
        : { volume: { volume_id: v.source.id } }
      : null,
    accessible_topology: [{ segments: topology }],
  };
}

export function toCsiSnapshot(s: SnapshotRecord): Snapshot {
  return {
    snapshot_id: s.id,
    source_volume_id: s.sourceVolumeId,
    size_bytes: String(s.sizeBytes),
    creation_time: { seconds: String(Math.floor(s.createdAt / 1000)), nanos: (s.createdAt % 1000) * 1e6 },
    ready_to_use: s.readyToUse,
    group_snapshot_id: s.groupId ?? '',
  };
}

export function toCsiStatus(publishedNodes: string[], condition: Condition) {
  return { published_node_ids: publishedNodes, volume_condition: condition };
}
