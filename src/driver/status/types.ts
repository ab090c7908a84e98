import type { OperationView } from '../../operations.js';
/**
 * What `vpool-csi status` and the client's volume tables read from a running driver (the vpool.v1.Inspect
 * service on the CSI socket, src/status/inspect-service.ts). JSON on the wire: these types are the contract.
 * Read-only, and nothing in it is secret beyond what the CSI socket's own callers (who may delete every
 * volume) already see: no credentials, no keys.
 */

export interface VolumeDetail {
  id: string;
  /** The CSI name (the PersistentVolume's name under Kubernetes). */
  name: string;
  capacityBytes: number;
  /** What the volume holds on the pool's disks now; absent where the pool cannot tell. */
  allocatedBytes?: number;
  /** RFC 3339. */
  createdAt: string;
  /** "snapshot/<id>" or "volume/<id>" for a restore or a clone. */
  source?: string;
  /** The filesystem asked for at creation (the StorageClass's fsType); absent for raw block or when none was asked. */
  fsType?: string;
  /** The claim it was made for, "namespace/name", when the provisioner said (--extra-create-metadata). */
  claim?: string;
  /** Nodes it is attached to (ControllerPublishVolume; hypervisor mode). */
  attachedTo: string[];
  /** Where this node has it staged or published: "block" or the filesystem, and the path. Only a node plugin knows. */
  mounts?: Array<{ path: string; as: string; readOnly: boolean }>;
  health: { abnormal: boolean; message: string };
  /** The I/O limits its class set (VolumeAttributesClass), as recorded: key → figure; absent when none. */
  ioLimits?: Record<string, number>;
  /** The lvm tier its class names (its extents are there, or are being moved there: the status's operations). */
  tier?: string;
}

export interface VolumePage {
  volumes: VolumeDetail[];
  /** The ID to ask after for the next page; empty at the end. */
  next: string;
}

export interface DeviceStatus {
  name: string;
  sizeBytes: number;
  freeBytes?: number;
  missing?: boolean;
  /** The filesystem, for a pool that is a directory. */
  fsType?: string;
}

export interface PoolStatusReport {
  backend: string;
  /** A directory, a volume group, a libvirt pool. */
  location: string;
  totalBytes: number;
  availableBytes: number;
  /** Bytes the volumes hold now, where the pool can tell. */
  allocatedBytes?: number;
  reserveBytes: number;
  devices: DeviceStatus[];
  thinPools: Array<{ name: string; dataPercent: number; metadataPercent: number }>;
}

export interface RecentProblem {
  /** RFC 3339. */
  at: string;
  message: string;
  /** The RPC or the part of the driver, and the object, when known. */
  where?: string;
  code?: string;
}

export interface DriverStatus {
  driver: { name: string; version: string; mode: string; nodeId: string; backend: string; startedAt: string; ready: boolean; notReadyBecause?: string };
  /** Absent on a node plugin in hypervisor mode (the pool is the controller's); `error` when the pool did not answer. */
  pool?: PoolStatusReport | { error: string };
  /** `atLeast`: the pool holds more than the 10,000 a status reads; the counts are of those. */
  volumes?: { count: number; atLeast?: boolean; attached: number; staged: number; abnormal: number; limited?: number } | { error: string };
  snapshots?: { count: number; groups?: number } | { error: string };
  /** Sends to other nodes under way now; absent without a transfer listener. */
  transfers?: { sending: number };
  /** Copies this driver is making now (restores, clones, volumes received from other nodes). */
  copies?: OperationView[];
  /** The last orphan check's counts by kind; absent when orphans are not checked, `pending` before the first check. */
  orphans?: { counts: Record<string, number> } | { pending: true };
  /** The last problems the driver logged (newest last), at most 20. */
  recentProblems: RecentProblem[];
  /** What needs a person: empty when all is well (`vpool-csi status` then exits 0). */
  attention: string[];
}
