// Runs INSIDE the QEMU VM (test/vm/vm-run.sh), whose kernel has device-mapper: what the host cannot
// show of VolumePools, thin pools made and grown by the node agent. The API server is the FAKE
// one, in this process. Started by test/e2e/volume-pool-vm.test.ts.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { PoolAgent } from '../../src/cluster/pool-agent.js';
import type { VolumePool } from '../../src/cluster/volume-pool.js';
import { LvmCli } from '../../src/pool/lvm/lvm-cli.js';
import { BIN, MiB } from '../helpers/driver.js';
import type { FakeApiServer, KObject } from '../helpers/fake-apiserver.js';
import { eventually, startFakeCluster } from '../helpers/kube.js';

const VG = 'clusterpool';
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const lvBytes = (lv: string) => Number(sh('lvs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'lv_size', `${VG}/${lv}`]).trim());
const vgBytes = () => Number(sh('vgs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'vg_size', VG]).trim());

describe('VolumePools on real device-mapper', { timeout: 840_000 }, () => {
  let fake: FakeApiServer;
  let agent: PoolAgent;
  const entry = () => (fake.get('volumepools', 'fast') as unknown as VolumePool).status?.nodes?.find((n) => n.node === 'vm-node');
  const atGeneration = (g: number) => eventually(`generation ${g}`, () => { const e = entry(); return e && e.observedGeneration >= g ? e : undefined; }, 120_000);
  const events = (reason: string) => fake.list('events', 'default').filter((e) => e.reason === reason);

  before(async () => {
    execFileSync('modprobe', ['-a', 'dm_thin_pool']);
    let kube;
    ({ fake, kube } = await startFakeCluster());
    fake.create('nodes', { metadata: { name: 'vm-node', labels: { disks: 'virtio' } } });
    agent = new PoolAgent(kube, { node: 'vm-node', lvm: new LvmCli({ activation: true }), resyncMs: 3_600_000 });
    await agent.start();
  });
  after(async () => {
    await agent?.stop();
    await fake?.stop();
    sh(BIN, ['pool', 'destroy', '--vg', VG, '--force']);
  });

  it('makes a VG with a thin pool of half its size, and reports the thin pool', async () => {
    fake.create('volumepools', { apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name: 'fast' }, spec: { backend: 'lvm', volumeGroup: VG, nodeSelector: { matchLabels: { disks: 'virtio' } }, devices: ['/dev/disk/by-id/virtio-data0', '/dev/disk/by-id/virtio-data1'], thinPool: { size: '50%' } } } as KObject);
    const e = await atGeneration(1);
    assert.equal(e.phase, 'Ready', JSON.stringify(e));
    assert.equal(e.thinPool?.name, 'thin');
    const half = vgBytes() / 2;
    assert.ok(Math.abs(lvBytes('thin') - half) < 8 * MiB, `${lvBytes('thin')} ≈ ${half}`);
    assert.equal(e.thinPool?.sizeBytes, lvBytes('thin'));
    assert.equal(e.thinPool?.dataPercent, 0);
    assert.equal(e.devices.map((x) => x.device).join(), '/dev/vda,/dev/vdb');
    assert.equal(events('PoolCreated').length, 1);
  });

  it('a glob that matches a new disk extends the VG, and the thin pool grows to half of the larger VG', async () => {
    const before = lvBytes('thin');
    fake.update('volumepools', 'fast', (o) => void ((o.spec as { devices: string[] }).devices = ['/dev/disk/by-id/virtio-data[0-2]']));
    const e = await atGeneration(2);
    assert.equal(e.devices.length, 3, JSON.stringify(e.devices));
    assert.ok(e.devices.every((x) => x.health === 'Healthy' && x.path === '/dev/disk/by-id/virtio-data[0-2]'));
    assert.ok(lvBytes('thin') > before);
    assert.ok(Math.abs(lvBytes('thin') - vgBytes() / 2) < 8 * MiB);
    assert.equal(events('PoolExtended').length, 1);
    assert.equal(events('ThinPoolExtended').length, 1);
  });
});
