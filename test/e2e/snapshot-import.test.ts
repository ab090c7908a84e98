import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createVolume, blockCap } from '../helpers/csi.js';
import { writeAt } from '../helpers/data.js';
import { finish, MiB, needsRoot, pattern, startDriver, type Driver } from '../helpers/driver.js';
import type { FakeApiServer, KObject } from '../helpers/fake-apiserver.js';
import { eventually, startFakeCluster } from '../helpers/kube.js';
import { snapshotterSyncPreProvisioned } from '../helpers/sidecars.js';

const MANAGED_BY = 'snapshot.storage.kubernetes.io/managed-by';
const content = (name: string, handle: string, extra: { driver?: string; labels?: Record<string, string> } = {}): KObject => ({
  apiVersion: 'snapshot.storage.k8s.io/v1',
  kind: 'VolumeSnapshotContent',
  metadata: { name, ...(extra.labels ? { labels: extra.labels } : {}) },
  spec: { driver: extra.driver ?? 'vpool.csi.dev', deletionPolicy: 'Retain', sourceVolumeMode: 'Block', source: { snapshotHandle: handle }, volumeSnapshotRef: { name: `snap-${name}`, namespace: 'apps' } },
});

// Importing a snapshot (a pre-provisioned VolumeSnapshotContent, made by hand with the snapshot's
// handle) on node-local pools: two real node plugins on file pools, the FAKE API server (none can run
// here), and a MODEL of the node's csi-snapshotter (--node-deployment), which only sees contents
// labelled for its node.
describe('importing a snapshot: a hand-made VolumeSnapshotContent is taken up by the node that holds the snapshot', needsRoot(), () => {
  let fake: FakeApiServer;
  let kubeconfig: string;
  let a: Driver;
  let b: Driver;
  const kubeconfigOf: Record<string, string> = {};
  /** The passes (each a LIST of the unmanaged contents) a node's plugin has begun so far. */
  const passesOf = (node: string) => fake.requestsFrom.filter((r) => r.token === `${node}-token` && r.request.startsWith('GET ') && r.request.includes('volumesnapshotcontents') && r.request.includes('labelSelector')).length;
  before(async () => {
    ({ fake, kubeconfig } = await startFakeCluster());
    // Each node with its own token, so the test can tell whose passes the FAKE API server saw.
    const args = (node: string) => ['--kubeconfig', kubeconfigOf[node], '--volume-pools', 'off', '--snapshot-import-interval', '1s'];
    for (const node of ['node-a', 'node-b']) kubeconfigOf[node] = await fake.kubeconfig(path.dirname(kubeconfig), `${node}-token`);
    a = await startDriver({ nodeId: 'node-a', args: args('node-a') });
    b = await startDriver({ nodeId: 'node-b', args: args('node-b') });
  });
  after(async () => {
    const left = [...(a ? await finish(a) : []), ...(b ? await finish(b) : [])];
    await fake?.stop();
    assert.deepEqual(left, []);
  });

  it('labels it for its node, whose snapshotter finds it by ID and marks it ready; nothing else is touched', async () => {
    const vol = await createVolume(a, 'backup-src', 16 * MiB, blockCap());
    await writeAt(path.join(a.poolDir, 'volumes', `${vol.volume_id}.img`), MiB, pattern('backup', 2 * MiB));
    const snap = (await a.client.createSnapshot({ name: 'nightly', source_volume_id: vol.volume_id, parameters: {} })).snapshot!;

    fake.create('volumesnapshotcontents', content('imported', snap.snapshot_id));
    fake.create('volumesnapshotcontents', content('nowhere', snap.snapshot_id.replace(/.$/, (c) => (c === '0' ? '1' : '0'))));
    fake.create('volumesnapshotcontents', content('hostile', '../snapshots/x'));
    fake.create('volumesnapshotcontents', content('other-driver', snap.snapshot_id, { driver: 'other.csi.dev' }));
    fake.create('volumesnapshotcontents', content('managed', snap.snapshot_id, { labels: { [MANAGED_BY]: 'node-c' } }));

    const labelled = await eventually('the imported content labelled', () => fake.get('volumesnapshotcontents', 'imported')?.metadata.labels?.[MANAGED_BY]);
    assert.equal(labelled, 'node-a', 'the node that holds the snapshot, not the other');
    // Two more whole passes of each node after it: the second began after the first ended (one runs at a time).
    const seen = { a: passesOf('node-a'), b: passesOf('node-b') };
    await eventually('two more passes of both nodes', () => passesOf('node-a') >= seen.a + 2 && passesOf('node-b') >= seen.b + 2);
    assert.equal(fake.get('volumesnapshotcontents', 'imported')?.metadata.labels?.[MANAGED_BY], 'node-a');
    assert.equal(fake.get('volumesnapshotcontents', 'nowhere')?.metadata.labels, undefined, 'a snapshot no node holds stays unlabelled');
    assert.equal(fake.get('volumesnapshotcontents', 'other-driver')?.metadata.labels, undefined, "another driver's content is not touched");
    assert.equal(fake.get('volumesnapshotcontents', 'hostile')?.metadata.labels, undefined, 'a handle that is no snapshot ID is not looked up');
    assert.deepEqual(fake.get('volumesnapshotcontents', 'managed')?.metadata.labels, { [MANAGED_BY]: 'node-c' }, 'a content already managed is not taken');
    assert.ok(a.logs.some((l) => l.includes('an imported snapshot is on this node') && l.includes('imported')));

    // Each node's snapshotter, as it lists (by its node's label) and asks its own plugin.
    const list = async (selector: string) => {
      const [k, v] = selector.split('=');
      return fake.list('volumesnapshotcontents').filter((c) => c.metadata.labels?.[k] === v) as Array<{ metadata: { name: string }; spec?: { source?: { snapshotHandle?: string } } }>;
    };
    const onA = await snapshotterSyncPreProvisioned(a.client, list, 'node-a');
    assert.deepEqual(onA.map((s) => [s.content, s.status?.readyToUse, s.status?.restoreSize, s.status?.snapshotHandle]), [['imported', true, Number(snap.size_bytes), snap.snapshot_id]]);
    assert.equal(onA[0].status!.creationTime, Number(snap.creation_time!.seconds) * 1e9 + (snap.creation_time!.nanos ?? 0), 'the creation time of the snapshot');
    assert.deepEqual(await snapshotterSyncPreProvisioned(b.client, list, 'node-b'), [], "B's snapshotter sees nothing to do");
    // GetSnapshot by the same ID answers the same; B's plugin does not have it.
    assert.equal((await a.client.getSnapshot({ snapshot_id: snap.snapshot_id })).snapshot?.snapshot_id, snap.snapshot_id);
    assert.deepEqual((await b.client.listSnapshots({ snapshot_id: snap.snapshot_id })).entries, []);

    await a.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
    await a.client.deleteVolume({ volume_id: vol.volume_id });
  });
});
