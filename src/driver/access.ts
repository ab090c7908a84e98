import type { FsType } from '../filesystems.js';

export type AccessModeName =
  | 'SINGLE_NODE_WRITER'
  | 'SINGLE_NODE_READER_ONLY'
  | 'SINGLE_NODE_SINGLE_WRITER'
  | 'SINGLE_NODE_MULTI_WRITER'
  | 'MULTI_NODE_READER_ONLY'
  | 'MULTI_NODE_MULTI_WRITER';

/**
 * What the pool can share. Node-local pools: one node, plus read-only block views. Hypervisor mode
 * adds MULTI_NODE_MULTI_WRITER for raw block volumes: a shareable virtio disk in several VMs, the
 * access mode KubeVirt live migration needs (the guests coordinate writes, not the driver).
 */
export interface AccessPolicy {
  multiNodeWriterBlock: boolean;
}

export const NODE_LOCAL_ACCESS: AccessPolicy = { multiNodeWriterBlock: false };
export const HYPERVISOR_ACCESS: AccessPolicy = { multiNodeWriterBlock: true };

/** How a volume is to be used, once the CSI edge has validated the capability: what the node must do and what it must refuse. */
export type Capability =
  | { access: 'block'; mode: AccessModeName; readOnly: boolean }
  | { access: 'mount'; mode: AccessModeName; readOnly: boolean; fsType: FsType | ''; mountFlags: string[] };
