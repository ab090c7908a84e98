import type { VolumeCapability__Output } from '../../gen/csi/v1/VolumeCapability.js';
import { invalid } from '../errors.js';

import { FS_TYPES, isFsType } from '../filesystems.js';
import type { AccessModeName, AccessPolicy, Capability } from '../driver/access.js';

const SINGLE_NODE: readonly string[] = ['SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER'];
const READ_ONLY: readonly string[] = ['SINGLE_NODE_READER_ONLY', 'MULTI_NODE_READER_ONLY'];

// Options a CO could use to turn our mount into something else entirely.
const FORBIDDEN_FLAGS = new Set(['bind', 'rbind', 'remount', 'move', 'make-shared', 'make-private', 'loop']);
const FLAG_RE = /^[A-Za-z0-9_.:=+-]{1,128}$/;

/** Why this driver cannot serve a capability, or null when it can. */
export function capabilityProblem(cap: VolumeCapability__Output | null | undefined, policy: AccessPolicy): string | null {
  if (!cap) return 'a volume capability is required';
  const mode = cap.access_mode?.mode ?? 'UNKNOWN';
  if (cap.access_type !== 'block' && cap.access_type !== 'mount') return 'volume capability needs an access type (block or mount)';
  const isSingle = SINGLE_NODE.includes(mode);
  const blockMultiRead = cap.access_type === 'block' && mode === 'MULTI_NODE_READER_ONLY';
  const blockMultiWrite = cap.access_type === 'block' && mode === 'MULTI_NODE_MULTI_WRITER' && policy.multiNodeWriterBlock;
  if (cap.access_type === 'mount' && !isSingle && !READ_ONLY.includes(mode)) {
    // ext4 and xfs keep their state in each mounting kernel: two nodes writing one would corrupt it.
    return `access mode ${mode} is not supported for filesystem volumes: ext4 and xfs are single-node filesystems, mounted read-write on two nodes at once they are corrupted; use a SINGLE_NODE_* mode${policy.multiNodeWriterBlock ? ', or block access (volumeMode: Block) for a volume several nodes write' : ''}`;
  }
  if (!isSingle && !blockMultiRead && !blockMultiWrite) {
    const block = policy.multiNodeWriterBlock ? ', MULTI_NODE_READER_ONLY and MULTI_NODE_MULTI_WRITER' : ' and MULTI_NODE_READER_ONLY';
    return `access mode ${mode} is not supported for ${cap.access_type} volumes (SINGLE_NODE_* modes${cap.access_type === 'block' ? block : ''})`;
  }
  if (cap.access_type === 'mount' && cap.mount) {
    const fs = cap.mount.fs_type;
    if (fs && !isFsType(fs)) return `fs_type ${JSON.stringify(fs)} is not supported (use ${FS_TYPES.join(' or ')})`;
    for (const flag of cap.mount.mount_flags) {
      if (!FLAG_RE.test(flag)) return `mount flag ${JSON.stringify(flag)} has characters a mount option cannot have`;
      if (FORBIDDEN_FLAGS.has(flag)) return `mount flag ${JSON.stringify(flag)} is not allowed`;
    }
    if (cap.mount.volume_mount_group) return 'volume_mount_group is not supported (no VOLUME_MOUNT_GROUP capability)';
  }
  return null;
}

export function parseCapability(cap: VolumeCapability__Output | null | undefined, policy: AccessPolicy, field = 'volume_capability'): Capability {
  const problem = capabilityProblem(cap, policy);
  if (problem || !cap) throw invalid(`${field}: ${problem ?? 'missing'}`);
  const mode = (cap.access_mode?.mode ?? 'UNKNOWN') as AccessModeName;
  const readOnly = READ_ONLY.includes(mode);
  if (cap.access_type === 'block') return { access: 'block', mode, readOnly };
  const fs = cap.mount?.fs_type ?? '';
  return { access: 'mount', mode, readOnly, fsType: isFsType(fs) ? fs : '', mountFlags: [...(cap.mount?.mount_flags ?? [])] };
}

export function parseCapabilities(caps: VolumeCapability__Output[], policy: AccessPolicy, field = 'volume_capabilities'): Capability[] {
  if (!caps || caps.length === 0) throw invalid(`${field} is required`);
  return caps.map((c, i) => parseCapability(c, policy, `${field}[${i}]`));
}
