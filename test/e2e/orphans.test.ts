import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { OrphanReport } from '../../src/cluster/orphans.js';
import type { VolumePool } from '../../src/cluster/volume-pool.js';
import { TOPOLOGY_KEY } from '../../src/driver/context.js';
import { createVolume, mountCap } from '../helpers/csi.js';
import { BIN, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import type { FakeApiServer, KObject } from '../helpers/fake-apiserver.js';
import { eventually, startFakeCluster } from '../helpers/kube.js';
import { httpBase, samples } from '../helpers/metrics.js';

const execFileP = promisify(execFile);

const pv = (name: string, handle: string, node: string): KObject => ({
  metadata: { name },
  spec: {
    csi: { driver: 'vpool.csi.dev', volumeHandle: handle },
    claimRef: { namespace: 'apps', name: `claim-${name}` },
    nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: TOPOLOGY_KEY, operator: 'In', values: [node] }] }] } },
  },
});

// A real driver process on a file pool that it takes from a VolumePool (--pool-from-cluster), and
// the real `vpool-csi reconcile`, both talking to the FAKE API server over HTTP.
describe('pool from the cluster, and orphan reconciliation', needsRoot(), () => {
  let fake: FakeApiServer;
  let kubeconfig: string;
  let d: Driver;
  let poolDir: string;
  const ids: Record<string, string> = {};
  const reconcile = async (...args: string[]) => {
    const { stdout } = await execFileP(BIN, ['reconcile', '--pool-from-cluster', 'files', '--node-id', 'test-node', '--kubeconfig', kubeconfig, ...args]);
    return JSON.parse(stdout) as OrphanReport;
  };
  const volumeIds = async () => ((await d.client.listVolumes({})).entries ?? []).map((e) => e.volume?.volume_id).sort();
  const snapshotIds = async () => ((await d.client.listSnapshots({})).entries ?? []).map((e) => e.snapshot?.snapshot_id).sort();

  before(async () => {
    ({ fake, kubeconfig } = await startFakeCluster());
    poolDir = path.join(await mkdtemp('/var/tmp/vpool-cluster-pool-'), 'pool');
    fake.create('nodes', { metadata: { name: 'test-node', labels: { 'kubernetes.io/hostname': 'test-node' } } });
    fake.create('volumepools', { apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name: 'files' }, spec: { backend: 'file', directory: poolDir, reserve: '0' } } as KObject);
    d = await startDriver({ args: ['--pool-from-cluster', 'files', '--kubeconfig', kubeconfig, '--orphan-check-interval', '1s', '--metrics-address', '127.0.0.1:0'] });
    // The driver answers at once and is ready once the VolumePool is built here.
    for (let i = 0; i < 300 && !(await d.client.probe({})).ready?.value; i++) await new Promise((r) => setTimeout(r, 100));
  });
  after(async () => {
    if (d) assert.deepEqual(await finish(d), []);
    await fake?.stop();
    if (poolDir) await rm(path.dirname(poolDir), { recursive: true, force: true });
  });

  it('serves the pool the VolumePool names, takes its edits while running, and reports it in status', async () => {
    for (const n of ['owned', 'orphan']) ids[n] = (await createVolume(d, `pvc-${n}`, 8 * MiB, mountCap())).volume_id;
    assert.equal((await readdir(path.join(poolDir, 'volumes'))).filter((f) => f.endsWith('.json')).length, 2, 'the volumes are in spec.directory, not in --pool-dir');
    ids.snapOwned = (await d.client.createSnapshot({ source_volume_id: ids.owned, name: 'snap-owned' })).snapshot?.snapshot_id ?? '';
    ids.snapOrphan = (await d.client.createSnapshot({ source_volume_id: ids.owned, name: 'snap-orphan' })).snapshot?.snapshot_id ?? '';
    // An edit of the VolumePool reaches the running driver (reserve, at once) and refreshes the status.
    const capacity = async () => Number((await d.client.getCapacity({})).available_capacity);
    const before = await capacity();
    fake.update('volumepools', 'files', (o) => void ((o.spec as { reserve: string }).reserve = '512Mi'));
    const e = await eventually('status', () => (fake.get('volumepools', 'files') as unknown as VolumePool).status?.nodes?.find((n) => n.node === 'test-node' && n.observedGeneration === 2));
    for (let i = 0; i < 100 && before - (await capacity()) < 500 * MiB; i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(Math.abs(before - (await capacity()) - 512 * MiB) < 32 * MiB, 'the new reserve applies without a restart');
    assert.equal(e.phase, 'Ready');
    assert.equal(e.volumes, 2);
    assert.equal(e.snapshots, 2);
    assert.ok(e.sizeBytes > 0 && e.freeBytes > 0);
  });

  it('reconcile --dry-run reports volumes without a PV, snapshots without a content and PVs without a volume, deleting nothing', async () => {
    for (const [name, handle, node] of [['pv-owned', ids.owned, 'test-node'], ['pv-lost', 'pvc-gone-0000', 'test-node'], ['pv-elsewhere', 'pvc-other-node', 'other-node']]) {
      fake.create('persistentvolumes', pv(name, handle, node));
      fake.updateStatus('persistentvolumes', name, (o) => void (o.status = { phase: 'Bound' }));
    }
    fake.create('volumesnapshotcontents', { metadata: { name: 'snapcontent-owned' }, spec: { driver: 'vpool.csi.dev', source: { volumeHandle: ids.owned } } });
    fake.updateStatus('volumesnapshotcontents', 'snapcontent-owned', (o) => void (o.status = { snapshotHandle: ids.snapOwned }));
    const r = await reconcile('--dry-run');
    assert.equal(r.dryRun, true);
    assert.deepEqual(r.volumes.map((v) => [v.id, v.name, v.action]), [[ids.orphan, 'pvc-orphan', 'reported']]);
    assert.equal(r.snapshotsChecked, true);
    assert.deepEqual(r.snapshots.map((s) => [s.id, s.action]), [[ids.snapOrphan, 'reported']]);
    assert.deepEqual(r.missingVolumes, [{ persistentVolume: 'pv-lost', volumeHandle: 'pvc-gone-0000', claim: 'apps/claim-pv-lost', phase: 'Bound' }]);
    assert.deepEqual(await volumeIds(), [ids.owned, ids.orphan].sort());
    const events = fake.list('events', 'default');
    const said = (reason: string) => events.filter((e) => e.reason === reason).map((e) => `${(e.involvedObject as { kind: string; name: string }).kind}/${(e.involvedObject as { name: string }).name}: ${String(e.message)}`);
    assert.ok(said('OrphanVolume').some((m) => m.startsWith('Node/test-node') && m.includes(ids.orphan) && m.endsWith('not deleted (dry run)')), said('OrphanVolume').join('\n'));
    assert.ok(said('OrphanSnapshot').some((m) => m.includes(ids.snapOrphan)));
    assert.ok(said('VolumeMissing').some((m) => m.startsWith('PersistentVolume/pv-lost')));
    // The same report as a person reads it: one row per finding, ages as kubectl's, actions as taken.
    const { stdout: table } = await execFileP(BIN, ['reconcile', '--dry-run', '--no-events', '--pool-from-cluster', 'files', '--node-id', 'test-node', '--kubeconfig', kubeconfig, '-o', 'table']);
    const lines = table.trimEnd().split('\n');
    assert.match(lines[0]!, /^KIND {2,}ID {2,}NAME {2,}AGE {2,}ACTION$/);
    assert.match(lines[1]!, new RegExp(`^volume {3,}${ids.orphan} {3,}pvc-orphan {3,}[0-9]+[smh] {3,}reported$`));
    assert.match(lines[2]!, new RegExp(`^snapshot {3,}${ids.snapOrphan} {3,}snap-orphan {3,}[0-9]+[smh] {3,}reported$`));
    assert.match(lines[3]!, /^PV without volume {3,}pvc-gone-0000 {3,}pv-lost {3,}<none> {3,}reported$/);
    assert.equal(lines.length, 4, table);
    const { stdout: names } = await execFileP(BIN, ['reconcile', '--dry-run', '--no-events', '--pool-from-cluster', 'files', '--node-id', 'test-node', '--kubeconfig', kubeconfig, '-o', 'name']);
    assert.deepEqual(names.trim().split('\n'), [`orphan/${ids.orphan}`, `orphan/${ids.snapOrphan}`, 'orphan/pvc-gone-0000']);
  });

  it('the driver\'s periodic check (report only by default) exports the counts as a metric', async () => {
    // The check runs every second; the metric shows the last one.
    let m = new Map<string, number>();
    for (let i = 0; i < 100 && m.get('{kind="missing_volume"}') !== 1; i++) {
      if (i) await new Promise((r) => setTimeout(r, 100));
      m = samples(await (await fetch(`${httpBase(d)}/metrics`)).text(), 'vpool_csi_orphans');
    }
    assert.equal(m.get('{kind="missing_volume"}'), 1);
    assert.equal(m.get('{kind="volume"}'), 1);
    assert.equal(m.get('{kind="snapshot"}'), 1);
    assert.deepEqual(await volumeIds(), [ids.owned, ids.orphan].sort(), 'nothing deleted without --orphan-delete-after');
  });

  it('without --dry-run deletes only orphans older than the grace period, and only orphans', async () => {
    const young = await reconcile();
    assert.equal(young.volumes[0].action, 'kept: younger than the grace period');
    assert.deepEqual(await volumeIds(), [ids.owned, ids.orphan].sort());
    const r = await reconcile('--grace-period', '0');
    assert.deepEqual(r.volumes.map((v) => [v.id, v.action]), [[ids.orphan, 'deleted']]);
    assert.deepEqual(r.snapshots.map((s) => [s.id, s.action]), [[ids.snapOrphan, 'deleted']]);
    assert.deepEqual(await volumeIds(), [ids.owned]);
    assert.deepEqual(await snapshotIds(), [ids.snapOwned]);
    assert.equal(r.missingVolumes.length, 1, 'a PV without its volume is reported, never "fixed"');
    const again = await reconcile('--grace-period', '0');
    assert.deepEqual([again.volumes.length, again.snapshots.length], [0, 0]);
    // Clean up what the test made, through the driver.
    await d.client.deleteSnapshot({ snapshot_id: ids.snapOwned });
    await d.client.deleteVolume({ volume_id: ids.owned });
  });

  it('without the snapshot API, snapshots are not judged at all (rather than all called orphans)', async () => {
    const bare = await startFakeCluster({ snapshots: false });
    try {
      bare.fake.create('volumepools', { apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name: 'files' }, spec: { backend: 'file', directory: poolDir } } as KObject);
      const v = (await createVolume(d, 'pvc-nosnap', 8 * MiB, mountCap())).volume_id;
      const s = (await d.client.createSnapshot({ source_volume_id: v, name: 'snap-x' })).snapshot?.snapshot_id ?? '';
      const { stdout } = await execFileP(BIN, ['reconcile', '--dry-run', '--pool-from-cluster', 'files', '--node-id', 'test-node', '--kubeconfig', bare.kubeconfig]);
      const r = JSON.parse(stdout) as OrphanReport;
      assert.equal(r.snapshotsChecked, false);
      assert.deepEqual(r.snapshots, []);
      assert.deepEqual(r.volumes.map((x) => x.id), [v]);
      await d.client.deleteSnapshot({ snapshot_id: s });
      await d.client.deleteVolume({ volume_id: v });
    } finally {
      await bare.fake.stop();
    }
  });
});
