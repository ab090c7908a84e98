import { createHash, randomBytes } from 'node:crypto';
import { open, readFile, statfs } from 'node:fs/promises';
import path from 'node:path';
import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import { errorMessage } from '../errors.js';
import { parseQuantity } from '../units.js';
import { humanQuantity } from './volume-pool.js';
import { statusOf, type Kube } from './kube.js';

export interface CheckVolumeOptions {
  /** Where the claim is mounted in this pod. */
  path: string;
  namespace: string;
  claim: string;
  /** Expand the claim to this many bytes (0: do not expand). */
  growToBytes: number;
  timeoutMs: number;
  log: (line: string) => void;
}

export interface CheckVolumeReport {
  claim: string;
  wroteBytes: number;
  sizeBeforeBytes: number;
  sizeAfterBytes?: number;
  expandSeconds?: number;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const fsBytes = async (p: string) => {
  const s = await statfs(p);
  return s.blocks * s.bsize;
};

/**
 * What `helm test` runs in a pod that mounts a claim of the installed StorageClass: data written
 * and read back through the real mount, then the claim expanded through the cluster (resizer and
 * kubelet, whichever way this driver grows) and the filesystem seen to grow under the running pod,
 * with the data intact. Any step that does not happen in time fails with what the claim says.
 */
export async function checkVolume(kube: Kube, o: CheckVolumeOptions): Promise<CheckVolumeReport> {
  const file = path.join(o.path, 'vpool-csi-check');
  const data = randomBytes(4 * 1024 * 1024);
  const fh = await open(file, 'w', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  if (sha(await readFile(file)) !== sha(data)) throw new Error(`${file}: what was read back differs from what was written`);
  const report: CheckVolumeReport = { claim: `${o.namespace}/${o.claim}`, wroteBytes: data.length, sizeBeforeBytes: await fsBytes(o.path) };
  o.log(`wrote and read back ${data.length} bytes on ${o.path} (filesystem of ${report.sizeBeforeBytes} bytes)`);
  if (!o.growToBytes) return report;

  const started = Date.now();
  await requestSize(kube, o);
  o.log(`asked for ${humanQuantity(o.growToBytes)} on claim ${report.claim}`);
  const deadline = started + o.timeoutMs;
  let pvc: V1PersistentVolumeClaim | undefined;
  for (;;) {
    pvc = await kube.core.readNamespacedPersistentVolumeClaim({ name: o.claim, namespace: o.namespace });
    const capacity = parseQuantity(pvc.status?.capacity?.storage ?? '0');
    // The kubelet grows the filesystem online; statfs here sees it (a little under the device: metadata).
    const fs = await fsBytes(o.path);
    if (capacity >= o.growToBytes && fs > report.sizeBeforeBytes) {
      report.sizeAfterBytes = fs;
      break;
    }
    if (Date.now() > deadline) {
      const conditions = (pvc.status?.conditions ?? []).map((c) => `${c.type}=${c.status}${c.message ? ` (${c.message})` : ''}`).join('; ') || 'none';
      throw new Error(`claim ${report.claim} did not grow within ${o.timeoutMs / 1000} s: capacity ${pvc.status?.capacity?.storage ?? 'unset'}, filesystem ${fs} bytes, conditions: ${conditions}`);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  report.expandSeconds = Math.round((Date.now() - started) / 100) / 10;
  if (sha(await readFile(file)) !== sha(data)) throw new Error(`${file} changed while the volume grew`);
  o.log(`the filesystem grew to ${report.sizeAfterBytes} bytes in ${report.expandSeconds} s; the data is intact`);
  return report;
}

/** Raises spec.resources.requests.storage, read-modify-write with the resourceVersion (409: read again). */
async function requestSize(kube: Kube, o: CheckVolumeOptions): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    const pvc = await kube.core.readNamespacedPersistentVolumeClaim({ name: o.claim, namespace: o.namespace });
    const requested = parseQuantity(pvc.spec?.resources?.requests?.storage ?? '0');
    if (requested >= o.growToBytes) return;
    pvc.spec = { ...pvc.spec, resources: { ...pvc.spec?.resources, requests: { ...pvc.spec?.resources?.requests, storage: String(o.growToBytes) } } };
    try {
      await kube.core.replaceNamespacedPersistentVolumeClaim({ name: o.claim, namespace: o.namespace, body: pvc });
      return;
    } catch (e) {
      if (statusOf(e) !== 409 || attempt >= 5) throw new Error(`cannot expand claim ${o.namespace}/${o.claim}: ${errorMessage(e)}`);
    }
  }
}
