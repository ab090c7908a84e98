import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { VolumePool } from '../../src/cluster/volume-pool.js';
import { createVolume, mountCap } from '../helpers/csi.js';
import { codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { BUILTIN_TYPES, FakeApiServer, type KObject } from '../helpers/fake-apiserver.js';
import { eventually, startFakeCluster } from '../helpers/kube.js';
import { httpBase } from '../helpers/metrics.js';

const filePool = (name: string, directory: string): KObject =>
  ({ apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name }, spec: { backend: 'file', directory, nodeSelector: { matchLabels: { 'vpool.dev/pool': 'yes' } } } }) as KObject;

// A real driver process as the chart runs it on a file/lvm node (the API reachable, no flag about
// VolumePools), against the FAKE API server (no API server can run here).
describe('VolumePools on a default install', needsRoot(), () => {
  let fake: FakeApiServer;
  let kubeconfig: string;
  let dir: string;
  // One driver per node at a time, as a DaemonSet runs them (two agents of one node would overwrite each other's entry).
  const drivers: Driver[] = [];
  const done = async (d: Driver) => {
    drivers.splice(drivers.indexOf(d), 1);
    assert.deepEqual(await finish(d), []);
  };
  const entry = (pool: string) => (fake.get('volumepools', pool) as unknown as VolumePool | undefined)?.status?.nodes?.find((n) => n.node === 'test-node');
  const ready = async (d: Driver) => (await d.client.probe({})).ready?.value;

  before(async () => {
    ({ fake, kubeconfig } = await startFakeCluster());
    dir = await mkdtemp('/var/tmp/vpool-vp-default-');
    fake.create('nodes', { metadata: { name: 'test-node', labels: { 'vpool.dev/pool': 'yes' } } });
  });
  after(async () => {
    for (const d of drivers) assert.deepEqual(await finish(d), []);
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('builds and reports every VolumePool that selects the node, while serving its own pool', async () => {
    const side = path.join(dir, 'side');
    fake.create('volumepools', filePool('side', side));
    fake.create('volumepools', { ...filePool('elsewhere', path.join(dir, 'elsewhere')), spec: { backend: 'file', directory: path.join(dir, 'elsewhere'), nodeSelector: { matchLabels: { 'vpool.dev/pool': 'other' } } } } as KObject);
    const d = await startDriver({ args: ['--kubeconfig', kubeconfig] });
    drivers.push(d);
    const e = await eventually('the side pool reported', () => entry('side'));
    assert.equal(e.phase, 'Ready');
    assert.ok(!e.conditions.some((c) => c.type === 'Served'), 'built and reported, not served');
    await stat(path.join(side, 'volumes'));
    assert.equal(entry('elsewhere'), undefined, 'a pool that does not select the node is left alone');
    await assert.rejects(stat(path.join(dir, 'elsewhere')), /ENOENT/);
    // The driver serves the pool of its flags, ready all along.
    assert.equal(await ready(d), true);
    const v = await createVolume(d, 'own', 8 * MiB, mountCap());
    await stat(path.join(d.poolDir, 'volumes', `${v.volume_id}.img`));
    assert.deepEqual((await readdir(path.join(side, 'volumes'))).length, 0);
    await d.client.deleteVolume({ volume_id: v.volume_id });
    await done(d);
  });

  it('without the CRD it serves, builds nothing and says why once', async () => {
    const bare = await new FakeApiServer(BUILTIN_TYPES).start();
    try {
      const d = await startDriver({ args: ['--kubeconfig', await bare.kubeconfig()] });
      drivers.push(d);
      await eventually('the log line', () => d.logs.some((l) => l.includes('VolumePool CRD is not installed')));
      assert.equal(await ready(d), true);
      assert.equal(d.logs.filter((l) => l.includes('VolumePool CRD is not installed')).length, 1);
      await done(d);
    } finally {
      await bare.stop();
    }
  });

  it('a named VolumePool that does not exist yet: not ready, UNAVAILABLE, an Event and 503; served once it is built', async () => {
    const d = await startDriver({ args: ['--kubeconfig', kubeconfig, '--pool-from-cluster', 'later', '--health-address', '127.0.0.1:0'] });
    drivers.push(d);
    assert.equal(await ready(d), false);
    assert.equal(await codeOf(d.client.createVolume({ name: 'x', capacity_range: { required_bytes: String(MiB) }, volume_capabilities: [mountCap()] })), 'UNAVAILABLE');
    assert.equal((await d.client.nodeGetInfo({})).node_id, 'test-node', 'the registrar can still register the node');
    const ev = await eventually('an Event', () => fake.list('events', 'default').find((e) => e.reason === 'VolumePoolNotServed' && /later does not exist/.test(String(e.message))));
    assert.equal((ev.involvedObject as { kind: string; name: string }).name, 'test-node');
    const health = await fetch(`${httpBase(d)}/healthz`);
    assert.equal(health.status, 503);
    assert.match(await health.text(), /later does not exist/);

    fake.create('volumepools', filePool('later', path.join(dir, 'later')));
    for (let i = 0; i < 300 && !(await ready(d)); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await ready(d), true, 'serves once the pool is built');
    assert.equal((await fetch(`${httpBase(d)}/healthz`)).status, 200);
    const served = await eventually('Served=True', () => entry('later')?.conditions.find((c) => c.type === 'Served' && c.status === 'True'));
    assert.equal(served.reason, 'Serving');
    const v = await createVolume(d, 'in-later', 8 * MiB, mountCap());
    await stat(path.join(dir, 'later', 'volumes', `${v.volume_id}.img`));
    await d.client.deleteVolume({ volume_id: v.volume_id });
    await done(d);
  });

  it('with --volume-pools off, only the served VolumePool is built', async () => {
    fake.create('nodes', { metadata: { name: 'node-b', labels: { 'vpool.dev/pool': 'yes' } } });
    fake.create('volumepools', filePool('only-b', path.join(dir, 'only-b')));
    const d = await startDriver({ nodeId: 'node-b', args: ['--kubeconfig', kubeconfig, '--volume-pools', 'off', '--pool-from-cluster', 'only-b'] });
    drivers.push(d);
    for (let i = 0; i < 300 && !(await ready(d)); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(await ready(d), true);
    const onB = (pool: string) => (fake.get('volumepools', pool) as unknown as VolumePool | undefined)?.status?.nodes?.find((n) => n.node === 'node-b');
    assert.equal(onB('only-b')?.phase, 'Ready');
    assert.equal(onB('side'), undefined, 'a pool it does not serve is not built by it');
    await done(d);
  });

  it('a named VolumePool that fails on the node: not ready, Served=False with the reason, an Event', async () => {
    const blocker = path.join(dir, 'not-a-dir');
    await writeFile(blocker, '');
    fake.create('volumepools', filePool('broken', path.join(blocker, 'pool')));
    const d = await startDriver({ args: ['--kubeconfig', kubeconfig, '--pool-from-cluster', 'broken'] });
    drivers.push(d);
    const c = await eventually('Served=False', () => entry('broken')?.conditions.find((x) => x.type === 'Served' && x.status === 'False'));
    assert.equal(c.reason, 'PoolFailed');
    assert.match(c.message, /ENOTDIR|not a directory/);
    assert.equal(await ready(d), false);
    await eventually('an Event', () => fake.list('events', 'default').find((e) => e.reason === 'VolumePoolNotServed' && /broken failed on this node/.test(String(e.message))));
    assert.match(String((await d.client.listVolumes({}).catch((e: Error) => e)) as Error), /UNAVAILABLE|broken failed/);
  });
});
