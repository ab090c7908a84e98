/**
 * What a volume and a snapshot are, in the words every floor shares: pools store them, the driver
 * reasons about them, the CSI edge turns them into messages. No floor owns them, so none has to
 * import upward to name them.
 */
export type ContentSource = { kind: 'snapshot'; id: string } | { kind: 'volume'; id: string };

export interface VolumeRecord {
  id: string;
  name: string;
  capacityBytes: number;
  /** Milliseconds since the epoch. */
  createdAt: number;
  source?: ContentSource;
  /** Parameters that shape the volume (fsType) and provenance (pvc name), as given at creation. */
  parameters: Record<string, string>;
}

export interface SnapshotRecord {
  id: string;
  name: string;
  sourceVolumeId: string;
  sizeBytes: number;
  createdAt: number;
  readyToUse: boolean;
  /** The group snapshot it was cut with: it is deleted with the group, never alone. */
  groupId?: string;
}

/** Snapshots of several volumes cut at one point in time (a VolumeGroupSnapshot). */
export interface GroupSnapshotRecord {
  id: string;
  name: string;
  /** The source volumes, sorted: what a retried create is compared with. */
  sourceVolumeIds: string[];
  /** The members, in the order of sourceVolumeIds. */
  snapshotIds: string[];
  createdAt: number;
}

/** A group snapshot with its members. */
export interface GroupSnapshot {
  group: GroupSnapshotRecord;
  snapshots: SnapshotRecord[];
}

/** Whether a volume is healthy, and why not. */
export interface Condition {
  abnormal: boolean;
  message: string;
}
