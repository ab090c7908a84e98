import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import { statSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap, mountCap } from '../helpers/csi.js';
import { BIN, codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { httpBase, samples } from '../helpers/metrics.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
import { fioInPod, PodCgroup } from '../helpers/pod-cgroup.js';
import { majorMinor } from '../../src/host/devices.js';

/** What the kubelet's volume manager does (k8s-contracts.md): a staging path per volume, and publish paths that carry the pod's UID. */
function kubeletPaths(d: Driver, pv: string, podUid: string) {
  const kubelet = path.join(d.mntDir, 'kubelet');
  return {
    staging: path.join(kubelet, 'plugins/kubernetes.io/csi/volumeDevices/staging', pv),
    blockTarget: path.join(kubelet, 'plugins/kubernetes.io/csi/volumeDevices/publish', pv, podUid),
    fsStaging: path.join(kubelet, 'plugins/kubernetes.io/csi/vpool.csi.dev', pv, 'globalmount'),
    fsTarget: path.join(kubelet, 'pods', podUid, 'volumes/kubernetes.io~csi', pv, 'mount'),
  };
}

const rdev = (p: string) => majorMinor(statSync(p).rdev);

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, ms = 20_000): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await probe().catch(() => undefined);
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/**
 * The file pool's I/O limits held by the kernel in the pod's cgroup, against the host's real cgroup
 * filesystem (v1 blkio here, v2 io.max where the host runs it), real loop devices and fio. The pod's
 * cgroup is made where the kubelet's cgroupfs driver makes it, under a kubepods cgroup of the test's own.
 */
describe('I/O limits on a file-pool volume, in a pod cgroup laid out as the kubelet makes it', needsRoot(), () => {
  const pod = new PodCgroup('iolimits');
  let d: Driver;
  const args = () => ['--kubepods-cgroup', pod.kubepods, '--metrics-address', '127.0.0.1:0'];

  before(async () => {
    await pod.create();
    d = await startDriver({ args: args() });
  });
  after(async () => {
    if (d) assert.deepEqual(await finish(d), [], 'nothing may be left behind');
    await pod.remove();
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
    await refused({ readBytesPerSecond: '1k' }, /from 4Ki to 1Pi/);
    await refused({ tier: 'fast' }, /lvm pool/);
    assert.equal(await codeOf(d.client.controllerModifyVolume({ volume_id: '', mutable_parameters: { readIOPS: '1' } })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.controllerModifyVolume({ volume_id: 'vol-gone-0123456789abcdef', mutable_parameters: { readIOPS: '1' } })), 'NOT_FOUND');
    assert.equal(await codeOf(d.client.controllerModifyVolume({ volume_id: 'non-existing-volume-id', mutable_parameters: { readIOPS: '1' } })), 'NOT_FOUND');
    // A StorageClass may set limits too; the class's mutable_parameters win over it.
    const both = (await d.client.createVolume({ name: 'both', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: { readIOPS: '100', writeIOPS: '200' }, mutable_parameters: { readIOPS: '300' } })).volume!;
    const rec = JSON.parse(await readFile(path.join(d.poolDir, 'volumes', `${both.volume_id}.json`), 'utf8'));
    assert.deepEqual({ r: rec.parameters.readIOPS, w: rec.parameters.writeIOPS }, { r: '300', w: '200' });
    // A CreateVolume retry is the same volume whatever its mutable parameters say (they are set, as a modify would).
    const again = (await d.client.createVolume({ name: 'both', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: { readIOPS: '100', writeIOPS: '200' }, mutable_parameters: { readIOPS: '400' } })).volume!;
    assert.equal(again.volume_id, both.volume_id);
    assert.match(await readFile(path.join(d.poolDir, 'volumes', `${both.volume_id}.json`), 'utf8'), /"readIOPS":"400"/);
    await d.client.deleteVolume({ volume_id: both.volume_id });
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  });

  it('a raw block volume: the pod\'s cgroup holds the class\'s limits, the kernel holds fio to them, a modify changes them live, a restart sets them again', async () => {
    const vol = (await d.client.createVolume({ name: 'limited-block', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [blockCap()], mutable_parameters: { readIOPS: '500', writeBytesPerSecond: '20Mi' } })).volume!;
    const p = kubeletPaths(d, 'pv-limited-block', pod.uid);
    await mkdir(p.staging, { recursive: true });
    await mkdir(path.dirname(p.blockTarget), { recursive: true });
    await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, volume_capability: blockCap() });
    // podInfoOnMount's volume context, as the kubelet sends it.
    const ctx = { 'csi.storage.k8s.io/pod.uid': pod.uid, 'csi.storage.k8s.io/pod.name': 'vm-1', 'csi.storage.k8s.io/pod.namespace': 'default' };
    await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: p.blockTarget, volume_capability: blockCap(), volume_context: ctx, readonly: false });
    const dev = rdev(p.blockTarget);
    const held = async () => (await pod.lines()).filter((l) => l.includes(`${dev} `)).sort();
    const expected = (riops: string | null, wbps: string | null) =>
      pod.version === 2
        ? [`${dev} rbps=max wbps=${wbps ?? 'max'} riops=${riops ?? 'max'} wiops=max`]
        : [...(riops ? [`read_iops ${dev} ${riops}`] : []), ...(wbps ? [`write_bps ${dev} ${wbps}`] : [])].sort();
    assert.deepEqual(await held(), expected('500', String(20 * MiB)));
    // Seen by a person (the volume table, status) and by Prometheus.
    const row = (await execFileP(BIN, ['client', '--endpoint', d.endpoint, '-o', 'wide', 'list-volumes'])).stdout.split('\n').find((l) => l.startsWith(vol.volume_id))!;
    assert.match(row, / read 500 IO\/s,write 20Mi\/s /);
    const status = await execFileP(BIN, ['status', '--endpoint', d.endpoint, '-o', 'table']).then((r) => r.stdout, (e: { stdout: string }) => e.stdout);
    assert.match(status, /Volumes: +1 \(.*, 1 with I\/O limits\)/);
    const metrics = samples(await (await fetch(`${httpBase(d)}/metrics`)).text(), 'vpool_csi_volume_io_limit');
    assert.deepEqual([...metrics].sort(), [[`{volume="${vol.volume_id}",limit="readIOPS"}`, 500], [`{volume="${vol.volume_id}",limit="writeBytesPerSecond"}`, 20 * MiB]]);

    // The kernel holds a pod's fio to the limit (an upper bound: a slow machine only does less).
    const limited = await fioInPod(pod, p.blockTarget, { rw: 'randread', bs: '4k', seconds: 2 });
    assert.ok(limited.iops <= 550, `${limited.iops} read IOPS under a 500 limit`);

    await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { readIOPS: '250' } });
    assert.deepEqual(await held(), expected('250', String(20 * MiB)), 'a modify changes the live pod\'s limit and leaves the keys it does not name');
    // The same call again is done (idempotent) and sets the same.
    await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { readIOPS: '250' } });
    assert.deepEqual(await held(), expected('250', String(20 * MiB)));

    // A plugin killed and started again (an upgrade, an OOM kill) sets what the record says on the pods it finds.
    await d.stop('SIGKILL');
    if (pod.version === 2) await pod.run('sh', ['-c', `echo "${dev} riops=max wbps=max" > ${path.join(pod.dir, 'io.max')}`]);
    else for (const f of ['read_iops', 'write_bps']) await pod.run('sh', ['-c', `echo "${dev} 0" > ${path.join(pod.dir, `blkio.throttle.${f}_device`)}`]);
    assert.deepEqual(await held(), pod.version === 2 ? [] : [], 'the limits were lifted by hand while the plugin was down');
    d = await d.restart();
    await waitFor('the restarted plugin to set the limits again', async () => (JSON.stringify(await held()) === JSON.stringify(expected('250', String(20 * MiB))) ? true : undefined));

    // "unlimited" lifts a limit; nothing else is touched.
    await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { readIOPS: 'unlimited' } });
    assert.deepEqual(await held(), expected(null, String(20 * MiB)));
    const free = await fioInPod(pod, p.blockTarget, { rw: 'randread', bs: '4k', seconds: 1 });
    assert.ok(free.iops > 550, `${free.iops} read IOPS with the limit lifted`);

    await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: p.blockTarget });
    assert.deepEqual(await held(), pod.version === 2 ? [] : [], 'the pod\'s limits on the device go with its publish');
    await d.client.nodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging });
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  });

  it('a filesystem volume: the limits are set on the loop device under the pod\'s mount, the pod found from the kubelet\'s path alone', async () => {
    const vol = (await d.client.createVolume({ name: 'limited-fs', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [mountCap('ext4')], mutable_parameters: { writeIOPS: '300' } })).volume!;
    const p = kubeletPaths(d, 'pv-limited-fs', pod.uid);
    await mkdir(p.fsStaging, { recursive: true });
    await mkdir(path.dirname(p.fsTarget), { recursive: true });
    await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: p.fsStaging, volume_capability: mountCap('ext4') });
    // No podInfoOnMount context: the path the kubelet gives names the pod.
    await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.fsStaging, target_path: p.fsTarget, volume_capability: mountCap('ext4'), readonly: false });
    const dev = (await readFile('/proc/self/mountinfo', 'utf8')).split('\n').find((l) => l.split(' ')[4] === p.fsTarget)!.split(' ')[2];
    const lines = (await pod.lines()).filter((l) => l.includes(`${dev} `));
    assert.deepEqual(lines, pod.version === 2 ? [`${dev} rbps=max wbps=max riops=max wiops=300`] : [`write_iops ${dev} 300`]);
    await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: p.fsTarget });
    await d.client.nodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: p.fsStaging });
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  });

  it('a pod the kubelet made no cgroup for is refused its publish, and nothing is left mounted', async () => {
    const vol = (await d.client.createVolume({ name: 'no-cgroup', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], mutable_parameters: { readIOPS: '500' } })).volume!;
    const ghost = '0a0a0a0a-0000-4000-8000-000000000001';
    const p = kubeletPaths(d, 'pv-no-cgroup', ghost);
    await mkdir(p.staging, { recursive: true });
    await mkdir(path.dirname(p.blockTarget), { recursive: true });
    await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, volume_capability: blockCap() });
    const call = d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: p.blockTarget, volume_capability: blockCap(), readonly: false });
    await assert.rejects(call, (e: { code?: number; details?: string }) => e.code === 9 && /has I\/O limits, and pod 0a0a0a0a-.* has no cgroup/.test(e.details ?? ''));
    assert.ok(!(await readFile('/proc/self/mountinfo', 'utf8')).includes(p.blockTarget), 'the refused publish left no mount');
    // A volume without limits publishes there: the cgroups are not looked at.
    const plain = (await d.client.createVolume({ name: 'no-limits', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()] })).volume!;
    const q = kubeletPaths(d, 'pv-no-limits', ghost);
    await mkdir(q.staging, { recursive: true });
    await mkdir(path.dirname(q.blockTarget), { recursive: true });
    await d.client.nodeStageVolume({ volume_id: plain.volume_id, staging_target_path: q.staging, volume_capability: blockCap() });
    await d.client.nodePublishVolume({ volume_id: plain.volume_id, staging_target_path: q.staging, target_path: q.blockTarget, volume_capability: blockCap(), readonly: false });
    await d.client.nodeUnpublishVolume({ volume_id: plain.volume_id, target_path: q.blockTarget });
    for (const [v, s] of [[vol, p.staging], [plain, q.staging]] as const) {
      await d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: s });
      await d.client.deleteVolume({ volume_id: v.volume_id });
    }
  });
});
