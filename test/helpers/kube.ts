import { readFileSync } from 'node:fs';
import path from 'node:path';
import { parse } from 'yaml';
import { loadKube, type Kube } from '../../src/cluster/kube.js';
import { PROJECT_ROOT } from '../../src/csi/proto.js';
import { BUILTIN_TYPES, FakeApiServer, SNAPSHOT_CONTENT_TYPE, typeFromCrd } from './fake-apiserver.js';

export const CRD_FILE = path.join(PROJECT_ROOT, 'charts/vpool-csi/crds/vpool.dev_volumepools.yaml');

/** The FAKE API server with the chart's VolumePool CRD (and, unless told not to, the snapshot API). */
export async function startFakeCluster(opts: { snapshots?: boolean } = {}): Promise<{ fake: FakeApiServer; kube: Kube; kubeconfig: string }> {
  const fake = new FakeApiServer([...BUILTIN_TYPES, ...(opts.snapshots === false ? [] : [SNAPSHOT_CONTENT_TYPE])]);
  fake.addType(typeFromCrd(parse(readFileSync(CRD_FILE, 'utf8'))));
  await fake.start();
  const kubeconfig = await fake.kubeconfig();
  return { fake, kube: loadKube(kubeconfig), kubeconfig };
}

/** Polls the fake's store (not the driver) until the check passes; the driver itself never polls. */
export async function eventually<T>(what: string, check: () => T | undefined | false, timeoutMs = 30_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = check();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}
