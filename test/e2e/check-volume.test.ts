import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { mountCap } from '../helpers/csi.js';
import { BIN, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import type { FakeApiServer, KObject } from '../helpers/fake-apiserver.js';
import { startFakeCluster } from '../helpers/kube.js';
import { resizerResize, resizerStartup } from '../helpers/sidecars.js';

const execFileP = promisify(execFile);
const NS = 'vpool-csi';
const CLAIM = 'vpool-csi-test';
type Claim = KObject & { spec: { resources: { requests: { storage: string } } }; status?: { capacity?: { storage: string } } };

// `vpool-csi check-volume`, the command of the chart's `helm test` pod, run for real on a volume
// this driver staged and published, against the FAKE API server (no cluster can run here). The
// test plays the cluster's part: external-resizer (MODEL, test/helpers/sidecars.ts) sees the claim's
// new request and, as the trivial resizer, hands it to the node; the kubelet (MODEL of 1.32's online
// expansion) calls NodeExpandVolume on the publish path and records the new capacity on the claim.
describe('helm test: check-volume writes, reads back and grows a claim through the cluster', needsRoot(), () => {
  let fake: FakeApiServer;
  let kubeconfig: string;
  let d: Driver;
  before(async () => {
    ({ fake, kubeconfig } = await startFakeCluster());
    fake.addType({ group: '', version: 'v1', plural: 'persistentvolumeclaims', kind: 'PersistentVolumeClaim', namespaced: true, statusSubresource: true });
    d = await startDriver();
  });
  after(async () => {
    assert.deepEqual(await finish(d), []);
    await fake.stop();
  });

  it('passes when the cluster grows the volume, with the data intact', async () => {
    const cap = mountCap('xfs');
    const id = (await d.client.createVolume({ name: 'pvc-check', capacity_range: { required_bytes: String(300 * MiB) }, volume_capabilities: [cap] })).volume!.volume_id;
    const staging = path.join(d.mntDir, 'staging', 'check');
    const target = path.join(d.mntDir, 'pods', 'check', 'mount');
    await mkdir(staging, { recursive: true });
    await mkdir(path.dirname(target), { recursive: true });
    await d.client.nodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
    await d.client.nodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
    fake.create('persistentvolumeclaims', { metadata: { name: CLAIM, namespace: NS }, spec: { resources: { requests: { storage: String(300 * MiB) } } } } as KObject);
    fake.updateStatus('persistentvolumeclaims', CLAIM, (o) => void (o.status = { phase: 'Bound', capacity: { storage: String(300 * MiB) } }), NS);

    const resizer = await resizerStartup(d.client);
    let expanded = false;
    const cluster = setInterval(() => {
      const pvc = fake.get('persistentvolumeclaims', CLAIM, NS) as Claim;
      const want = Number(pvc.spec.resources.requests.storage);
      if (expanded || want <= Number(pvc.status?.capacity?.storage ?? 0)) return;
      expanded = true;
      void (async () => {
        const r = await resizerResize(d.client, resizer, id, want, cap);
        assert.equal(r.nodeExpansionRequired, true);
        await d.client.nodeExpandVolume({ volume_id: id, volume_path: target, staging_target_path: staging, capacity_range: { required_bytes: String(want) }, volume_capability: cap });
        fake.updateStatus('persistentvolumeclaims', CLAIM, (o) => void ((o as Claim).status!.capacity = { storage: String(want) }), NS);
      })();
    }, 100);
    try {
      const { stdout } = await execFileP(BIN, ['check-volume', '--path', target, '--claim', CLAIM, '--namespace', NS, '--grow-to', '600Mi', '--timeout', '60s', '--kubeconfig', kubeconfig]);
      const report = JSON.parse(stdout) as { claim: string; wroteBytes: number; sizeBeforeBytes: number; sizeAfterBytes: number };
      assert.equal(report.claim, `${NS}/${CLAIM}`);
      assert.equal(report.wroteBytes, 4 * MiB);
      assert.ok(report.sizeAfterBytes > report.sizeBeforeBytes + 250 * MiB, JSON.stringify(report));
      assert.equal((fake.get('persistentvolumeclaims', CLAIM, NS) as Claim).spec.resources.requests.storage, String(600 * MiB));
    } finally {
      clearInterval(cluster);
    }
    await d.client.nodeUnpublishVolume({ volume_id: id, target_path: target });
    await d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: staging });
    await d.client.deleteVolume({ volume_id: id });
  });

  it('fails with what the claim says when nothing grows it', async () => {
    fake.create('persistentvolumeclaims', { metadata: { name: 'stuck', namespace: NS }, spec: { resources: { requests: { storage: '1Gi' } } } } as KObject);
    fake.updateStatus('persistentvolumeclaims', 'stuck', (o) => void (o.status = { phase: 'Bound', capacity: { storage: '1Gi' }, conditions: [{ type: 'Resizing', status: 'True', message: 'waiting for an external controller' }] }), NS);
    const dir = path.join(d.mntDir, 'stuck');
    await mkdir(dir, { recursive: true });
    const err = await execFileP(BIN, ['check-volume', '--path', dir, '--claim', 'stuck', '--namespace', NS, '--grow-to', '2Gi', '--timeout', '2s', '--kubeconfig', kubeconfig]).then(() => null, (e: { stderr: string; code: number }) => e);
    assert.equal(err?.code, 1);
    assert.match(err?.stderr ?? '', /did not grow within 2 s: capacity 1Gi.*Resizing=True \(waiting for an external controller\)/);
  });
});
