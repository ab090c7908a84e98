import { invalidArgument } from '../errors.js';
import { FS_TYPES, isFsType, type FsType } from './capabilities.js';

/** StorageClass parameters the file pool understands. */
export interface VolumeParameters {
  fsType?: FsType;
  /** PVC/PV identity passed by external-provisioner --extra-create-metadata, kept for people and reconcilers. */
  pvcName?: string;
  pvcNamespace?: string;
  pvName?: string;
}

const K8S_KEYS: Record<string, keyof VolumeParameters> = {
  'csi.storage.k8s.io/pvc/name': 'pvcName',
  'csi.storage.k8s.io/pvc/namespace': 'pvcNamespace',
  'csi.storage.k8s.io/pv/name': 'pvName',
};
const K8S_VALUE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;

export function parseVolumeParameters(params: Record<string, string> | undefined): VolumeParameters {
  const out: VolumeParameters = {};
  for (const [key, value] of Object.entries(params ?? {})) {
    if (key === 'fsType') {
      if (!isFsType(value)) throw invalidArgument(`parameter fsType=${JSON.stringify(value)} is not supported (use ${FS_TYPES.join(' or ')})`);
      out.fsType = value;
    } else if (key in K8S_KEYS) {
      if (!K8S_VALUE.test(value)) throw invalidArgument(`parameter ${key} is not a Kubernetes object name`);
      out[K8S_KEYS[key] as 'pvcName'] = value;
    } else if (key.startsWith('csi.storage.k8s.io/')) {
      // Sidecar-owned keys (secret references and the like) carry nothing for this pool.
    } else {
      throw invalidArgument(`unknown parameter ${JSON.stringify(key)} (supported: fsType)`);
    }
  }
  return out;
}

/** Parameters that change what the volume is (compared on an idempotent CreateVolume retry). */
export function identityParameters(p: VolumeParameters): Record<string, string> {
  return p.fsType ? { fsType: p.fsType } : {};
}
