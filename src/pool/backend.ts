/**
 * The seam between the driver's operations (above, src/driver/) and where the bytes live (below).
 * Implementations are unlocked and trust their arguments: the driver validates, locks and decides
 * idempotency.
 */
import type { Page } from '../paging.js';
import type { ByteRange } from './block-ranges.js';
import type { MutableCheck } from './mutable-parameters.js';
import type { Condition, ContentSource, GroupSnapshot, GroupSnapshotRecord, SnapshotRecord, VolumeRecord } from '../records.js';

export type { Condition, ContentSource, GroupSnapshot, GroupSnapshotRecord, SnapshotRecord, VolumeRecord };

export interface ThinPoolUse {
  name: string;
  dataPercent: number;
  metadataPercent: number;
}

export interface PoolTuning {
  reserveBytes: number;
  overprovisionRatio: number;
}

/** Where a pool is (a directory, a volume group, a libvirt pool) and the disks it is made of. */
export interface PoolDescription {
  location: string;
  devices: Array<{ name: string; sizeBytes: number; freeBytes?: number; missing?: boolean; fsType?: string }>;
  reserveBytes: number;
}

export interface PoolCapacity {
  totalBytes: number;
  /** What a new volume can still be given, after the reserve and what existing volumes may yet use. */
  availableBytes: number;
}

export interface CreateVolumeSpec {
  id: string;
  name: string;
  capacityBytes: number;
  source?: ContentSource;
  parameters: Record<string, string>;
  /**
   * The content comes from elsewhere (the source is on another node): the backend makes the new
   * volume empty (reading as zeros), lets `fill` write it, and only then commits it. A crash or a
   * failed fill leaves nothing that lists (the retry starts over). `source` names what it came from.
   */
  fill?: (target: WritableData) => Promise<void>;
}

/** A new volume's bytes, open to write before it is committed: a file (sparse, zeros) or a block device. */
export interface WritableData {
  path: string;
  file: boolean;
}

/** A volume's or snapshot's bytes, open to read and held unchanged (and undeleted) until released. */
export interface ReadableData {
  path: string;
  size: number;
  /** A regular file, whose holes SEEK_HOLE finds. */
  file: boolean;
  release(): Promise<void>;
}

/** A volume a crashed clone or restore left half-made: never listed, and no PersistentVolume can name it. */
export interface UnfinishedVolume {
  id: string;
  name: string;
  sizeBytes: number;
  createdAt: number;
}

export interface CreateSnapshotSpec {
  id: string;
  name: string;
  sourceVolumeId: string;
  /** VolumeSnapshotClass parameters, already validated against snapshotParameters. */
  parameters: Record<string, string>;
}

/** A parameter the backend accepts: returns why a value is wrong, or null. */
export type ParameterCheck = (value: string) => string | null;

export interface PoolBackend {
  readonly kind: string;
  /** Where a volume grows: on the node (NodeExpandVolume, node-local pools) or on the controller. */
  readonly expansion: 'node' | 'controller';
  /** Volume sizes are whole multiples of this (1 MiB for files, the extent size for LVM). */
  readonly granularity: number;
  /** StorageClass parameters beyond fsType and the provisioner's own keys. */
  readonly volumeParameters: Readonly<Record<string, ParameterCheck>>;
  /** VolumeSnapshotClass parameters. */
  readonly snapshotParameters: Readonly<Record<string, ParameterCheck>>;
  /**
   * VolumeAttributesClass parameters (CSI mutable_parameters), changed on a live volume by
   * setParameters; pools that can change nothing leave both out (no MODIFY_VOLUME).
   */
  readonly mutableParameters?: Readonly<Record<string, MutableCheck>>;
  /** Replaces the volume's recorded parameters in one atomic write; the caller holds the volume's lock and checked the keys. */
  setParameters?(id: string, parameters: Record<string, string>): Promise<VolumeRecord>;
  /**
   * Holds the recorded parameters where the controller itself applies them (libvirt: the disk in
   * each domain it is attached to); node-local pools leave this out (their node plugins do it).
   */
  applyParameters?(vol: VolumeRecord): Promise<void>;
  /** The parameters as compared on a CreateVolume retry, when a default and an absent key mean the same. */
  canonicalParameters?(parameters: Record<string, string>): Record<string, string>;
  /** Throws with the reason when the pool cannot serve requests. */
  probe(): Promise<void>;
  /** Space for new volumes made with these (validated) parameters. */
  capacity(parameters?: Record<string, string>): Promise<PoolCapacity>;

  getVolume(id: string): Promise<VolumeRecord | null>;
  listVolumes(): Promise<VolumeRecord[]>;
  /**
   * One page of volumes in ID order (pageAfter's order), for a pool whose IDs are cheap to list and
   * whose facts are dear (libvirt reads each volume's XML): only the page's volumes are read. Pools
   * that leave it out are paged from listVolumes().
   */
  listVolumePage?(after: string, limit: number): Promise<Page<VolumeRecord>>;
  createVolume(spec: CreateVolumeSpec): Promise<VolumeRecord>;
  deleteVolume(id: string): Promise<void>;
  expandVolume(id: string, capacityBytes: number): Promise<VolumeRecord>;
  /** How healthy each volume is, in the order given: one look at the pool for all of them (a ListVolumes page). */
  volumeConditions(volumes: readonly VolumeRecord[]): Promise<Condition[]>;
  /** Where the pool is and what it is made of, for `vpool-csi status`. */
  describe(): Promise<PoolDescription>;
  /** What each volume holds on the pool's disks now (a sparse file, a thin LV: less than its size); pools that cannot tell leave this out. */
  allocation?(volumes: readonly VolumeRecord[]): Promise<Map<string, number>>;
  /** How full the pool's thin pools are (pools without thin pools leave this out). */
  thinPools?(): Promise<ThinPoolUse[]>;
  /** Applies settings changed while serving (a VolumePool edited); pools without such settings leave this out. */
  applySettings?(t: PoolTuning): void;
  /** A reason the volume must not be deleted now (attached somewhere), or null. */
  volumeBusy(id: string): Promise<string | null>;

  /**
   * Opens a volume's or a snapshot's bytes for reading by another node; null when absent. The
   * caller holds the volume's lock (the one staging takes) until release. The bytes are those of
   * one point in time: a volume nothing has attached is read in place; one that is attached (it may
   * be written meanwhile) from a reflink or snapshot made here and dropped at release, or the open
   * is refused (FAILED_PRECONDITION) where the pool cannot make one. Pools whose data no other node
   * can take leave this out.
   */
  openData?(kind: 'volume' | 'snapshot', id: string): Promise<ReadableData | null>;

  /**
   * What crashed clones and restores left that no sweep at start removed (the pool was not reopened
   * by a process that sweeps, or the volume was held then), for the orphan reaper. Pools that leave
   * nothing half-made past a restart leave these out.
   */
  listUnfinished?(): Promise<UnfinishedVolume[]>;
  /** Removes one unless something holds it now (then why); the caller holds its volume lock. */
  removeUnfinished?(id: string): Promise<string | null>;

  getSnapshot(id: string): Promise<SnapshotRecord | null>;
  listSnapshots(): Promise<SnapshotRecord[]>;
  createSnapshot(spec: CreateSnapshotSpec): Promise<SnapshotRecord>;
  deleteSnapshot(id: string): Promise<void>;

  /** Which blocks of its snapshots hold data and which changed (CSI SnapshotMetadata); pools that cannot tell leave this out. */
  readonly snapshotBlocks?: SnapshotBlocks;
  /** Snapshots of several volumes at one point in time; pools that cannot cut one leave this out. */
  readonly groupSnapshots?: GroupSnapshots;
}

/**
 * Group snapshots of a pool. The caller holds the group's lock and every member volume's, has
 * checked the IDs, and derived the members' snapshot IDs; create cuts every member at one point in
 * time or fails leaving none (FAILED_PRECONDITION where the pool cannot make the cut consistent,
 * saying why), and a group is listed only once all its members are.
 */
export interface GroupSnapshots {
  get(id: string): Promise<GroupSnapshot | null>;
  create(spec: { id: string; name: string; members: ReadonlyArray<{ volumeId: string; snapshotId: string; snapshotName: string }> }): Promise<GroupSnapshot>;
  /** Removes the group and every member (also members a crash left without their group); nothing there is OK. */
  delete(id: string): Promise<void>;
}

/**
 * The block metadata of a pool's snapshots. Ranges come ascending and apart, start at or after
 * `from` (a range across it starts there) and end within the snapshot's size. A reader that copies
 * the ranges of `allocated` into a blank volume, and then those of each `delta` from the newer
 * snapshot, has every snapshot byte for byte: so a range may hold bytes that did not change, never
 * miss one that did. The caller has checked the snapshots exist, `base` is older than `target`
 * and both are of one volume.
 */
export interface SnapshotBlocks {
  /** Where the snapshot holds data: everything else reads as zeros. */
  allocated(snap: SnapshotRecord, from: number, signal: AbortSignal): AsyncIterable<ByteRange>;
  /** Where `target` may differ from `base`, to `target`'s size (a volume grown in between: the base reads zeros past its size). */
  delta(base: SnapshotRecord, target: SnapshotRecord, from: number, signal: AbortSignal): AsyncIterable<ByteRange>;
}

export interface AttachedDevice {
  device: string;
  readOnly: boolean;
}

/** Node side: turns a volume into a block device on this node and back. */
export interface BlockDevices {
  /** Every device attached for this volume, found from the kernel: the writable one first, then read-only views. */
  devices(volumeId: string): Promise<AttachedDevice[]>;
  /** The same for many volumes from one look at the kernel's devices, where a look costs more than the volumes do (a status page of 1,000 volumes). */
  devicesOfMany?(volumeIds: readonly string[]): Promise<Map<string, AttachedDevice[]>>;
  /** Throws INVALID_ARGUMENT when a publish_context cannot be one the controller gave for this volume. */
  checkPublishContext?(volumeId: string, publishContext: Record<string, string>): void;
  /** Attaches (or returns the existing attachment) and returns the device path; `publishContext` is what ControllerPublishVolume returned. */
  attach(volumeId: string, publishContext?: Record<string, string>): Promise<string>;
  /** A new read-only view of the volume, for a read-only raw block publish. */
  attachReadOnly(volumeId: string): Promise<string>;
  /** Detaches one device, or every device of the volume. */
  detach(volumeId: string, device?: string): Promise<void>;
  /** True only when the backing store provably never held data (so it carries no filesystem signature). */
  provablyBlank(volumeId: string): Promise<boolean>;
  /** Makes the kernel see a new size of the backing store. */
  refreshSize(device: string): Promise<void>;
  /** A reason the backing store is unhealthy (deleted, truncated), or null. */
  deviceProblem(volumeId: string, device: string): Promise<string | null>;
}

/**
 * What the node side knows of a volume: the pool itself for node-local backends, the CO's
 * contexts in hypervisor mode (where the node cannot reach the pool, only the disk it was given).
 */
export interface NodeVolumeView {
  /** The volume, or null when it does not exist. */
  get(id: string, volumeContext: Record<string, string>): Promise<VolumeRecord | null>;
  /** Grows the volume to at least `bytes` (node-local), or reports the size the controller already gave it. */
  expand(volume: VolumeRecord, bytes: number, device: string | undefined): Promise<number>;
}

export interface Attachment {
  /** The node's canonical ID (a domain UUID). */
  nodeId: string;
  readOnly: boolean;
  shared: boolean;
}

export interface PublishSpec {
  readOnly: boolean;
  /** Several nodes may write (MULTI_NODE_MULTI_WRITER): the disk is attached shareable. */
  shared: boolean;
}

/** What a publish finds, for the CSI layer to judge before anything is attached. */
export interface PublishState {
  /** The node's canonical ID. */
  nodeId: string;
  /** Where the volume is attached now, this node included. */
  attachments: Attachment[];
  /** How many of this driver's volumes the node has attached. */
  nodeVolumes: number;
}

/** Controller side of a backend whose volumes are attached to a node from outside it (hypervisor mode). */
export interface ControllerAttacher {
  /** The node's canonical ID, or null when there is no such node. */
  resolveNode(nodeId: string): Promise<string | null>;
  attachments(volumeId: string): Promise<Attachment[]>;
  /** The nodes each of these volumes is attached to, from one look at every node. */
  publishedNodes(volumeIds: string[]): Promise<Map<string, string[]>>;
  /**
   * Reads the state once, lets `decide` judge it (it throws to refuse, and returns false when the
   * volume is already attached as asked), attaches if it returns true, and returns the
   * publish_context the node needs to find the volume. A missing volume or node: a not-found DriverError.
   */
  publish(volumeId: string, nodeId: string, spec: PublishSpec, decide: (state: PublishState) => boolean): Promise<Record<string, string>>;
  /** Detaches the volume from the node; done when the node no longer has it. */
  unpublish(volumeId: string, nodeId: string): Promise<void>;
}
