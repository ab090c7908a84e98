import { invalid } from '../errors.js';
import type { ParameterCheck } from '../pool/backend.js';
import { FS_TYPES, isFsType, type FsType } from '../filesystems.js';
import { parseMutableParameters, type MutableCheck } from '../pool/mutable-parameters.js';

/** StorageClass parameters after validation. */
export interface VolumeParameters {
  fsType?: FsType;
  /** The backend's own parameters (thin/thick, stripes, ...), as given. */
  backend: Record<string, string>;
  /**
   * Mutable parameters (I/O limits, tier) a StorageClass sets, as changes to a new volume's record;
   * CreateVolume's mutable_parameters take precedence over them.
   */
  mutable: Record<string, string | null>;
  /** PVC/PV identity passed by external-provisioner --extra-create-metadata, kept for people and reconcilers. */
  pvcName?: string;
  pvcNamespace?: string;
  pvName?: string;
}

const K8S_KEYS: Record<string, 'pvcName' | 'pvcNamespace' | 'pvName'> = {
  'csi.storage.k8s.io/pvc/name': 'pvcName',
  'csi.storage.k8s.io/pvc/namespace': 'pvcNamespace',
  'csi.storage.k8s.io/pv/name': 'pvName',
};
const K8S_VALUE = /^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$/;
/** Kubernetes' key for a StorageClass's filesystem; external-provisioner moves it into the capability's fs_type and strips it. */
export const FSTYPE_KEY = 'csi.storage.k8s.io/fstype';
/**
 * The old spelling, any case ("fsType", "fstype", ...): external-provisioner puts its value into the
 * capability's fs_type too, and passes the key on (it strips only csi.storage.k8s.io/ keys).
 */
const isLegacyFsKey = (key: string) => key.toLowerCase() === 'fstype';

function supported(spec: Readonly<Record<string, ParameterCheck>>, extra: string[], after: string[] = []): string {
  return [...extra, ...Object.keys(spec), ...after].join(', ') || 'none';
}

export function parseVolumeParameters(params: Record<string, string> | undefined, spec: Readonly<Record<string, ParameterCheck>>, mutableSpec: Readonly<Record<string, MutableCheck>> = {}): VolumeParameters {
  const out: VolumeParameters = { backend: {}, mutable: {} };
  let fsKey = '';
  for (const [key, value] of Object.entries(params ?? {})) {
    if (isLegacyFsKey(key) || key === FSTYPE_KEY) {
      // Both spellings at once is what external-provisioner refuses too ("fstype specified in parameters with both ...").
      if (fsKey) throw invalid(`the filesystem is given by both ${fsKey} and ${key}; use ${FSTYPE_KEY} alone`);
      if (!isFsType(value)) throw invalid(`parameter ${key}=${JSON.stringify(value)} is not supported (use ${FS_TYPES.join(' or ')})`);
      fsKey = key;
      out.fsType = value;
    } else if (Object.hasOwn(K8S_KEYS, key)) {
      if (!K8S_VALUE.test(value)) throw invalid(`parameter ${key} is not a Kubernetes object name`);
      out[K8S_KEYS[key]] = value;
    } else if (key.startsWith('csi.storage.k8s.io/')) {
      // Sidecar-owned keys (secret references and the like) carry nothing for the pool.
    } else if (Object.hasOwn(spec, key)) {
      const problem = spec[key](value);
      if (problem) throw invalid(`parameter ${key}=${JSON.stringify(value)}: ${problem}`);
      out.backend[key] = value;
    } else if (Object.hasOwn(mutableSpec, key)) {
      Object.assign(out.mutable, parseMutableParameters({ [key]: value }, mutableSpec, 'parameters'));
    } else {
      throw invalid(`unknown parameter ${JSON.stringify(key)} (supported: ${supported(spec, [FSTYPE_KEY, 'fsType'], Object.keys(mutableSpec))})`);
    }
  }
  return out;
}

export function parseSnapshotParameters(params: Record<string, string> | undefined, spec: Readonly<Record<string, ParameterCheck>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, value] of Object.entries(params ?? {})) {
    if (key.startsWith('csi.storage.k8s.io/')) continue;
    if (!Object.hasOwn(spec, key)) throw invalid(`unknown parameter ${JSON.stringify(key)} (supported: ${supported(spec, [])})`);
    const problem = spec[key](value);
    if (problem) throw invalid(`parameter ${key}=${JSON.stringify(value)}: ${problem}`);
    out[key] = value;
  }
  return out;
}

/** Parameters that change what the volume is (compared on an idempotent CreateVolume retry). */
export function identityParameters(p: VolumeParameters): Record<string, string> {
  return { ...p.backend, ...(p.fsType ? { fsType: p.fsType } : {}) };
}

export function sameParameters(a: Record<string, string>, b: Record<string, string>): boolean {
  const keys = (r: Record<string, string>) => Object.keys(r).filter((k) => !['pvcName', 'pvcNamespace', 'pvName'].includes(k)).sort();
  const ka = keys(a);
  const kb = keys(b);
  return ka.length === kb.length && ka.every((k, i) => k === kb[i] && a[k] === b[k]);
}
