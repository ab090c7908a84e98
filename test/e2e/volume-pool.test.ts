import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import type { Kube } from '../../src/cluster/kube.js';
import { PoolAgent } from '../../src/cluster/pool-agent.js';
import type { NodePoolStatus, VolumePool } from '../../src/cluster/volume-pool.js';
import { deviceMapperAvailable, LvmCli } from '../../src/pool/lvm/lvm-cli.js';
import { LvmPool } from '../../src/pool/lvm/lvm-pool.js';
import { idFor } from '../../src/ids.js';
import { MiB, needsRoot } from '../helpers/driver.js';
import type { FakeApiServer, KObject } from '../helpers/fake-apiserver.js';
import { eventually, startFakeCluster } from '../helpers/kube.js';
import { forgetVg, loopDisks, uniqueVg, type LoopDisks } from '../helpers/lvm.js';

const act = deviceMapperAvailable() ? [] : ['--config', 'global{activation=0}'];
const pvsOf = (vg: string) =>
  (JSON.parse(execFileSync('pvs', [...act, '--reportformat', 'json', '-o', 'pv_name,vg_name'], { encoding: 'utf8' })) as { report: Array<{ pv: Array<{ pv_name: string; vg_name: string }> }> }).report
    .flatMap((r) => r.pv)
    .filter((p) => p.vg_name === vg)
    .map((p) => p.pv_name)
    .sort();

// The node agent against real lvm2 on loop devices (activation disabled: this kernel has no
// device-mapper) and the FAKE API server (no API server can run here), in this process.
describe('VolumePool node agent: builds, extends and reports an lvm pool from the cluster', needsRoot(), () => {
  let disks: LoopDisks;
  let fake: FakeApiServer;
  let kube: Kube;
  let agent: PoolAgent;
  const vg = uniqueVg('vpa');
  const name = `pool-${vg}`;
  const entry = (node = 'node-a') => (fake.get('volumepools', name) as unknown as VolumePool | undefined)?.status?.nodes?.find((n) => n.node === node);
  const atGeneration = (g: number) => eventually(`status of generation ${g}`, () => { const e = entry(); return e && e.observedGeneration >= g ? e : undefined; });
  const events = (reason: string) => fake.list('events', 'default').filter((e) => e.reason === reason && (e.involvedObject as { name: string }).name === name);
  const device = (e: NodePoolStatus, path: string) => e.devices.find((d) => d.path === path);

  before(async () => {
    disks = await loopDisks(4, 256 * MiB);
    execFileSync('mkfs.ext4', ['-q', '-F', disks.devices[3]]);
    ({ fake, kube } = await startFakeCluster());
    fake.create('nodes', { metadata: { name: 'node-a', labels: { 'vpool.dev/pool': 'fast' } } });
    fake.create('nodes', { metadata: { name: 'node-b', labels: {} } });
    agent = new PoolAgent(kube, { node: 'node-a', lvm: new LvmCli({ activation: deviceMapperAvailable() }), resyncMs: 3_600_000 });
    await agent.start();
  });
  after(async () => {
    await agent?.stop();
    await fake?.stop();
    await forgetVg(vg, disks.devices);
    await disks.release();
  });

  it('makes the pool from two devices, reports a third that carries a filesystem as Invalid (Event too) and leaves it untouched', async () => {
    const [a, b, , withFs] = disks.devices;
    fake.create('volumepools', { apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name }, spec: { backend: 'lvm', volumeGroup: vg, nodeSelector: { matchLabels: { 'vpool.dev/pool': 'fast' } }, devices: [a, b, withFs] } } as KObject);
    const e = await atGeneration(1);
    assert.deepEqual(pvsOf(vg), [a, b].sort());
    assert.equal(e.phase, 'Degraded');
    assert.equal(device(e, a)?.health, 'Healthy');
    assert.equal(device(e, b)?.health, 'Healthy');
    assert.ok((device(e, a)?.sizeBytes ?? 0) > 200 * MiB);
    assert.equal(device(e, withFs)?.health, 'Invalid');
    assert.match(device(e, withFs)?.message ?? '', /carries ext4; wiping it needs explicit consent/);
    assert.equal(execFileSync('blkid', ['-o', 'value', '-s', 'TYPE', withFs], { encoding: 'utf8' }).trim(), 'ext4', 'the filesystem is still there');
    assert.ok(e.sizeBytes > 400 * MiB && e.sizeBytes < 512 * MiB, String(e.sizeBytes));
    assert.equal(e.freeBytes, e.sizeBytes);
    assert.equal(e.volumes, 0);
    assert.deepEqual(e.conditions.map((c) => [c.type, c.status]), [['Ready', 'False'], ['DevicesHealthy', 'False']]);
    const pool = fake.get('volumepools', name) as unknown as VolumePool;
    assert.equal(pool.status?.ready, '0/1');
    assert.equal(pool.status?.size, `${Math.round((e.sizeBytes / MiB) * 100) / 100}Mi`);
    assert.equal(events('PoolCreated').length, 1);
    const invalid = events('DeviceInvalid');
    assert.equal(invalid.length, 1);
    assert.equal(invalid[0].type, 'Warning');
    assert.match(String(invalid[0].message), new RegExp(`node-a: ${withFs}: carries ext4`));
  });

  it('adds a third device when it appears in the spec, seen through the watch (no polling), and says so in an Event', async () => {
    const [a, b, c, withFs] = disks.devices;
    const before = entry() as NodePoolStatus;
    const lists = () => fake.requests.filter((r) => /^GET \/apis\/vpool.dev\/v1alpha1\/volumepools(\?|$)/.test(r) && !r.includes('watch=true')).length;
    assert.equal(lists(), 1, 'one list at start');
    fake.update('volumepools', name, (o) => void ((o.spec as { devices: string[] }).devices = [a, b, c, withFs]));
    const e = await atGeneration(2);
    assert.deepEqual(pvsOf(vg), [a, b, c].sort());
    assert.equal(device(e, c)?.health, 'Healthy');
    assert.ok(e.sizeBytes - before.sizeBytes > 200 * MiB);
    assert.equal(lists(), 1, 'the change came by the watch');
    assert.equal(events('PoolExtended').length, 1);
    assert.equal(events('DeviceInvalid').length, 1, 'a standing problem is one Event, not one per pass');
  });

  it('writes its status entry beside another node\'s through a 409 conflict, and never shrinks the pool', async () => {
    const [a, b, c, withFs] = disks.devices;
    let injected = false;
    fake.beforeWrite = (method, plural, _n, sub) => {
      if (injected || method !== 'PUT' || plural !== 'volumepools' || sub !== 'status') return;
      injected = true;
      // Another node writes its entry between this agent's read and its write.
      fake.updateStatus('volumepools', name, (o) => {
        const st = (o.status ?? {}) as { nodes?: unknown[] };
        o.status = { ...st, nodes: [...(st.nodes ?? []), { node: 'node-b', phase: 'Ready', observedGeneration: 3, devices: [], sizeBytes: 1, freeBytes: 1, volumes: 0, snapshots: 0, conditions: [], lastUpdateTime: new Date().toISOString() }] };
      });
    };
    const mark = fake.requests.length;
    fake.update('volumepools', name, (o) => void ((o.spec as { devices: string[] }).devices = [b, c, withFs]));
    const e = await atGeneration(3);
    fake.beforeWrite = undefined;
    assert.ok(injected);
    assert.equal(fake.requests.slice(mark).filter((r) => r.startsWith('PUT') && r.endsWith('/status')).length, 2, 'one 409, then a write on the fresh object');
    assert.ok(entry('node-b'), 'the other node\'s entry survived');
    assert.deepEqual(pvsOf(vg), [a, b, c].sort(), 'a device left out of the spec stays in the pool');
    assert.equal(device(e, a)?.health, 'Retained');
    assert.match(device(e, a)?.message ?? '', /never shrunk/);
    assert.equal((fake.get('volumepools', name) as unknown as VolumePool).status?.ready, '1/2', 'the summary counts both nodes');
  });

  it('takes the device that carries a filesystem only once the spec says wipe: true', async () => {
    const [a, b, c, withFs] = disks.devices;
    fake.update('volumepools', name, (o) => void Object.assign(o.spec as object, { devices: [a, b, c, withFs], wipe: true }));
    const e = await atGeneration(4);
    assert.deepEqual(pvsOf(vg), [a, b, c, withFs].sort());
    assert.equal(device(e, withFs)?.health, 'Healthy');
    assert.equal(e.phase, 'Ready');
    assert.equal(execFileSync('blkid', ['-o', 'value', '-s', 'TYPE', withFs], { encoding: 'utf8' }).trim(), 'LVM2_member');
  });

  it('a spec the schema lets through but the driver cannot use is reported as Failed, and touches nothing', async () => {
    fake.create('volumepools', { apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name: `${name}-bad` }, spec: { backend: 'file', devices: [disks.devices[0]] } } as KObject);
    const e = await eventually('Failed entry', () => (fake.get('volumepools', `${name}-bad`) as unknown as VolumePool | undefined)?.status?.nodes?.[0]);
    assert.equal(e.phase, 'Failed');
    assert.match(e.lastError ?? '', /spec.devices is for the lvm backend/);
    assert.ok(fake.list('events', 'default').some((ev) => ev.reason === 'InvalidSpec' && (ev.involvedObject as { name: string }).name === `${name}-bad`));
    assert.equal(pvsOf(vg).length, 4);
    fake.delete('volumepools', `${name}-bad`);
  });

  it('device groups give their PVs a tier (the status and the PV tags say it); a device moved to another group changes tier; two names of one device in two tiers, and a PV holding a volume of its tier, keep theirs; a device out of every group loses its tier', async () => {
    const [a, b, c, withFs] = disks.devices;
    const generation = () => (fake.get('volumepools', name) as unknown as { metadata: { generation: number } }).metadata.generation;
    fake.update('volumepools', name, (o) => void Object.assign(o.spec as object, { devices: [a, b], deviceGroups: [{ tier: 'fast', devices: [c, withFs] }] }));
    let e = await atGeneration(generation());
    assert.deepEqual([a, b, c, withFs].map((d) => device(e, d)?.tier), [undefined, undefined, 'fast', 'fast']);
    assert.deepEqual([c, withFs].map((d) => execFileSync('pvs', ['--config', 'global{activation=0}', '--noheadings', '-o', 'pv_tags', d], { encoding: 'utf8' }).trim()), ['vpool.tier=fast', 'vpool.tier=fast']);
    assert.equal(events('DeviceTier').length, 1);
    fake.update('volumepools', name, (o) => void Object.assign(o.spec as object, { deviceGroups: [{ tier: 'fast', devices: [c] }, { tier: 'slow', devices: [withFs] }] }));
    e = await atGeneration(generation());
    assert.deepEqual([c, withFs].map((d) => device(e, d)?.tier), ['fast', 'slow']);
    assert.equal(execFileSync('pvs', ['--config', 'global{activation=0}', '--noheadings', '-o', 'pv_tags', withFs!], { encoding: 'utf8' }).trim(), 'vpool.tier=slow', 'one tier tag, the old one gone');
    const tagOf = (d: string) => execFileSync('pvs', ['--config', 'global{activation=0}', '--noheadings', '-o', 'pv_tags', d], { encoding: 'utf8' }).trim();
    // What the devices resolve to decides, not the patterns: c again, through a glob in the slow group, is a conflict, and c keeps fast.
    // (A glob, not a symlink under /dev: lvm would scan the link as a second path of the PV.)
    const glob = `${c!.slice(0, -1)}[${c!.slice(-1)}]`;
    fake.update('volumepools', name, (o) => void Object.assign(o.spec as object, { deviceGroups: [{ tier: 'fast', devices: [c] }, { tier: 'slow', devices: [withFs, glob] }] }));
    e = await atGeneration(generation());
    assert.equal(device(e, c!)?.tier, 'fast', JSON.stringify(e.devices));
    assert.equal(tagOf(c!), 'vpool.tier=fast', 'not re-tagged through its other name');
    assert.match(String(events('DeviceTierConflict')[0]?.message), /is named as (fast and slow|slow and fast)/);
    // A PV holding a volume of its tier is not re-tagged (the volume would be misplaced, and moved at the plugin's next start).
    const pool = await LvmPool.open(new LvmCli({ activation: false, vg }), { vg, reserveBytes: 0, overprovisionRatio: 1 }, { sweep: false });
    const vol = idFor('vol', 'pvc-slow');
    await pool.createVolume({ id: vol, name: 'pvc-slow', capacityBytes: 8 * MiB, parameters: { type: 'thick', tier: 'slow' } });
    fake.update('volumepools', name, (o) => void Object.assign(o.spec as object, { devices: [a, b, withFs], deviceGroups: [{ tier: 'fast', devices: [c] }] }));
    e = await atGeneration(generation());
    assert.equal(tagOf(withFs!), 'vpool.tier=slow', 'kept while it holds a volume of tier slow');
    assert.match(String(events('TierChangeBlocked')[0]?.message), new RegExp(`${vol} of tier slow`));
    // Once the volume is gone: a device named only in spec.devices of a spec with groups has no tier.
    await pool.deleteVolume(vol);
    fake.update('volumepools', name, (o) => void Object.assign(o.spec as object, { devices: [a, withFs, b] }));
    e = await atGeneration(generation());
    assert.equal(tagOf(withFs!), '', 'its tier taken away');
    assert.equal(device(e, withFs!)?.tier, undefined);
    // A device named in two groups is a spec the driver cannot use: Failed, nothing touched.
    fake.update('volumepools', name, (o) => void Object.assign(o.spec as object, { deviceGroups: [{ tier: 'fast', devices: [c] }, { tier: 'slow', devices: [c, withFs] }] }));
    e = await atGeneration(generation());
    assert.match(e.lastError ?? '', /is in tier fast and tier slow/);
    fake.update('volumepools', name, (o) => void Object.assign(o.spec as object, { devices: [a, b, c, withFs], deviceGroups: [] }));
    await atGeneration(generation());
  });

  it('a node that stops matching the selector drops its entry and keeps its pool', async () => {
    fake.update('nodes', 'node-a', (o) => void (o.metadata.labels = {}));
    await eventually('entry removed', () => !entry());
    assert.equal(pvsOf(vg).length, 4);
    assert.equal(events('NodeUnselected').length, 1);
    fake.update('nodes', 'node-a', (o) => void (o.metadata.labels = { 'vpool.dev/pool': 'fast' }));
    const e = await eventually('entry back', () => entry());
    assert.equal(e.devices.filter((d) => d.health === 'Healthy').length, 4);
  });
});
