import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap } from '../helpers/csi.js';
import { BIN, codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { httpBase, samples } from '../helpers/metrics.js';
import { hostCgroupVersion, PodCgroup } from '../helpers/pod-cgroup.js';
import { limitsHeldLive } from '../helpers/io-limits-checks.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);

/**
 * The file pool's I/O limits on this host: what a class records and refuses, what status, the volume
 * table and Prometheus show (a controller, --mode controller, which records and holds nothing), and what
 * a node plugin does on this host's cgroup version (v1 here: the rules in the pod's cgroup and in each
 * container's, a container made later included; v2 in the VM: test/vm/io-limits.vm-test.ts).
 */
describe('I/O limits on a file-pool volume (VolumeAttributesClass, ControllerModifyVolume)', needsRoot(), () => {
  const pod = new PodCgroup('iolimits');
  let d: Driver;

  before(async () => {
    await pod.create();
    d = await startDriver({ args: ['--mode', 'controller', '--metrics-address', '127.0.0.1:0'] });
  });
  after(async () => {
    try {
      if (d) assert.deepEqual(await finish(d), [], 'nothing may be left behind');
    } finally {
      await pod.remove();
    }
  });

  it('advertises MODIFY_VOLUME and refuses what it cannot change, changing nothing', async () => {
    const caps = (await d.client.controllerGetCapabilities({})).capabilities.map((c) => c.rpc?.type);
    assert.ok(caps.includes('MODIFY_VOLUME'));
    const vol = (await d.client.createVolume({ name: 'refusals', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], mutable_parameters: { readIOPS: '700' } })).volume!;
    const record = () => readFile(path.join(d.poolDir, 'volumes', `${vol.volume_id}.json`), 'utf8');
    const before = await record();
    assert.match(before, /"readIOPS":"700"/);
    const refused = async (mutable: Record<string, string>, why: RegExp) => {
      const call = d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: mutable });
      await assert.rejects(call, (e: { code?: number; details?: string }) => e.code === 3 && why.test(e.details ?? ''));
      assert.equal(await record(), before, `${JSON.stringify(mutable)} changed nothing`);
    };
    await refused({ XXX_FakeKey: 'XXX_FakeValue' }, /"XXX_FakeKey" is not a parameter this pool can change/);
    // One wrong key among right ones: nothing half-applied.
    await refused({ readIOPS: '100', writeIOPS: '-5' }, /writeIOPS="-5"/);
    await refused({ readIOPSBurst: '1000' }, /bursts are applied by QEMU/);
    await refused({ readBytesPerSecond: '1k' }, /from 4Ki to 1P \(10\^15\)/);
    await refused({ tier: 'fast' }, /tiers are the lvm pool's/);
    assert.equal(await codeOf(d.client.controllerModifyVolume({ volume_id: '', mutable_parameters: { readIOPS: '2' } })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.controllerModifyVolume({ volume_id: 'vol-gone-0123456789abcdef', mutable_parameters: { readIOPS: '2' } })), 'NOT_FOUND');
    assert.equal(await codeOf(d.client.controllerModifyVolume({ volume_id: 'non-existing-volume-id', mutable_parameters: { readIOPS: '2' } })), 'NOT_FOUND');
    // The resizer's --extra-modify-metadata keys change nothing and are not refused.
    await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { 'csi.storage.k8s.io/pvc/name': 'x', readIOPS: '700' } });
    assert.equal(await record(), before);
    // A StorageClass may set limits too; the class's mutable_parameters win over it.
    const create = (readIOPS: string) => d.client.createVolume({ name: 'both', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: { readIOPS: '100', writeIOPS: '200' }, mutable_parameters: { readIOPS } });
    const both = (await create('300')).volume!;
    const rec = JSON.parse(await readFile(path.join(d.poolDir, 'volumes', `${both.volume_id}.json`), 'utf8'));
    assert.deepEqual({ r: rec.parameters.readIOPS, w: rec.parameters.writeIOPS }, { r: '300', w: '200' });
    // A CreateVolume retry is compatible only with the same figures (the spec); other ones are ALREADY_EXISTS, and change nothing.
    assert.equal((await create('300')).volume!.volume_id, both.volume_id);
    await assert.rejects(create('400'), (e: { code?: number; details?: string }) => e.code === 6 && /exists with other mutable parameters than readIOPS=400/.test(e.details ?? ''));
    assert.match(await readFile(path.join(d.poolDir, 'volumes', `${both.volume_id}.json`), 'utf8'), /"readIOPS":"300"/);
    await d.client.deleteVolume({ volume_id: both.volume_id });
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  });

  it('the recorded limits are seen by a person (the volume table, status) and by Prometheus', async () => {
    const vol = (await d.client.createVolume({ name: 'seen', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], mutable_parameters: { readIOPS: '500', writeBytesPerSecond: '20Mi' } })).volume!;
    const row = (await execFileP(BIN, ['client', '--endpoint', d.endpoint, '-o', 'wide', 'list-volumes'])).stdout.split('\n').find((l) => l.startsWith(vol.volume_id))!;
    assert.match(row, / read 500 IO\/s,write 20Mi\/s /);
    const status = await execFileP(BIN, ['status', '--endpoint', d.endpoint, '-o', 'table']).then((r) => r.stdout, (e: { stdout: string }) => e.stdout);
    assert.match(status, /Volumes: +1 \(.*, 1 with I\/O limits\)/);
    const metrics = samples(await (await fetch(`${httpBase(d)}/metrics`)).text(), 'vpool_csi_volume_io_limit');
    assert.deepEqual([...metrics].sort(), [[`{volume="${vol.volume_id}",limit="readIOPS"}`, 500], [`{volume="${vol.volume_id}",limit="writeBytesPerSecond"}`, 20 * MiB]]);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
    assert.equal(samples(await (await fetch(`${httpBase(d)}/metrics`)).text(), 'vpool_csi_volume_io_limit').size, 0, 'a deleted volume leaves no series');
  });

  it(`a node plugin on this host's cgroup v${hostCgroupVersion()} holds the limits on the pod's containers (raw block and ext4), one made after the publish and across a kill -9 included`, async () => {
    const limited = (await d.client.createVolume({ name: 'made-by-controller', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], mutable_parameters: { readIOPS: '500' } })).volume!;
    // The same pool, now served by a node plugin (mode all, as the chart runs it).
    await d.stop();
    d = await startDriver({ dir: d.dir, args: ['--kubepods-cgroup', pod.kubepods] });
    await d.client.deleteVolume({ volume_id: limited.volume_id });
    d = await limitsHeldLive(d, pod, { name: 'host-block', access: 'block', restart: true, report: (l) => console.log(l) });
    d = await limitsHeldLive(d, pod, { name: 'host-fs', access: 'mount', report: (l) => console.log(l) });
  });
});
