import assert from 'node:assert/strict';
import { readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { blockCap, mountCap } from './csi.js';
import { MiB, type Driver } from './driver.js';
import { fioInPod, kubeletPaths, makeKubeletDirs, type PodCgroup } from './pod-cgroup.js';
import { majorMinor } from '../../src/host/devices.js';

async function waitFor(what: string, probe: () => Promise<boolean>, ms = 180_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe().catch(() => false))) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** The device number a publish path shows the pod: the device node bound there, or the filesystem mounted there. */
export function deviceAt(target: string, access: 'block' | 'mount'): string {
  if (access === 'block') return majorMinor(statSync(target).rdev);
  return readFileSync('/proc/self/mountinfo', 'utf8').split('\n').find((l) => l.split(' ')[4] === target)!.split(' ')[2]!;
}

/**
 * One volume through a pod's life on this machine's cgroup version, as the kubelet drives it: made with a class's limits,
 * staged and published for the pod (its UID from podInfoOnMount), the limits in the pod's cgroup on the
 * device (v1: in each container's cgroup too) and the kernel holding fio in the pod's containers under them,
 * one made after the publish included (an upper bound: a slow machine only
 * does less), a class change applied live, optionally a kill -9 and restart that sets lifted limits
 * again, "unlimited" lifting them without unmounting, unpublish leaving none. Returns the driver (a new
 * one after a restart).
 */
export async function limitsHeldLive(d: Driver, pod: PodCgroup, o: { name: string; access: 'block' | 'mount'; parameters?: Record<string, string>; restart?: boolean; report?: (line: string) => void }): Promise<Driver> {
  const cap = o.access === 'block' ? blockCap() : mountCap('ext4');
  const vol = (await d.client.createVolume({ name: o.name, capacity_range: { required_bytes: String(256 * MiB) }, volume_capabilities: [cap], parameters: o.parameters ?? {}, mutable_parameters: { readIOPS: '500', writeBytesPerSecond: '20Mi' } })).volume!;
  const p = kubeletPaths(d.mntDir, `pv-${o.name}`, pod.uid, o.access);
  await makeKubeletDirs(p);
  await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, volume_capability: cap });
  await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: p.target, volume_capability: cap, readonly: false, volume_context: { 'csi.storage.k8s.io/pod.uid': pod.uid } });
  const dev = deviceAt(p.target, o.access);
  const held = async (dir?: string) => (await pod.lines(dir)).filter((l) => l.startsWith(`${dev} `));
  const line = (riops: string, wbps: string) => [`${dev} rbps=max wbps=${wbps} riops=${riops} wiops=max`];
  assert.deepEqual(await held(), line('500', String(20 * MiB)), 'the class\'s limits in the pod\'s cgroup');
  // v1's rules hold only the tasks of their own cgroup: the container's must have them too.
  if (pod.version === 1) assert.deepEqual(await held(pod.container), line('500', String(20 * MiB)), 'and in its container\'s (cgroup v1)');

  const file = o.access === 'block' ? p.target : path.join(p.target, 'fio.data');
  const fill = await pod.run('fio', ['--name=fill', `--filename=${file}`, '--size=128M', '--rw=write', '--bs=1M', '--direct=1', '--ioengine=libaio', '--iodepth=8']);
  assert.equal(fill.code, 0, fill.stderr);
  const reads = await fioInPod(pod, file, { rw: 'randread', bs: '4k', seconds: 3 });
  const writes = await fioInPod(pod, file, { rw: 'write', bs: '1M', seconds: 3 });
  o.report?.(`${o.name}: under the class, random read ${reads.iops.toFixed(0)} IOPS (limit 500), write ${(writes.bytesPerSecond / MiB).toFixed(1)} MiB/s (limit 20)`);
  assert.ok(reads.iops <= 550, `${reads.iops} read IOPS in the pod's container under a 500 limit`);
  assert.ok(writes.bytesPerSecond <= 22 * MiB, `${writes.bytesPerSecond} B/s written under a 20Mi limit`);
  // A container the runtime makes after the publish (a restart, a sidecar) is held too: v2 by the pod's
  // io.max above it, v1 by the rule the plugin writes into the new cgroup once it sees it appear.
  const late = await pod.addContainer();
  if (pod.version === 1) await waitFor('the new container\'s cgroup to get the pod\'s rules (cgroup v1)', async () => JSON.stringify(await held(late)) === JSON.stringify(line('500', String(20 * MiB))), 10_000);
  const lateReads = await fioInPod(pod, file, { rw: 'randread', bs: '4k', seconds: 2 }, late);
  o.report?.(`${o.name}: a container made after the publish, random read ${lateReads.iops.toFixed(0)} IOPS (limit 500)`);
  assert.ok(lateReads.iops <= 550, `${lateReads.iops} read IOPS in a container made after the publish, under a 500 limit`);

  await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { readIOPS: '250' } });
  assert.deepEqual(await held(), line('250', String(20 * MiB)), 'a class change is set live, and keys it does not name stay');
  if (o.restart) {
    // A plugin killed and started again (an upgrade, an OOM kill) sets what the record says on the pods it finds.
    await d.stop('SIGKILL');
    await pod.liftByHand(dev);
    assert.deepEqual(await held(), [], 'lifted by hand while the plugin was down');
    d = await d.restart();
    const restarted = d;
    // v1: in every container's cgroup too (the plugin writes the pod's first, then the ones under it).
    const cgroups = pod.version === 1 ? [pod.dir, pod.container, late] : [pod.dir];
    const all = async () => (await Promise.all(cgroups.map((c) => held(c)))).every((h) => JSON.stringify(h) === JSON.stringify(line('250', String(20 * MiB))));
    await waitFor('the restarted plugin to set the limits again', all).catch(async (err: Error) => {
      throw new Error(`${err.message}; the pod's cgroup holds ${JSON.stringify(await pod.lines())}; the plugin's last lines:\n${restarted.logs.slice(-40).join('\n')}`);
    });
  }
  await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { readIOPS: 'unlimited', writeBytesPerSecond: 'unlimited' } });
  assert.deepEqual(await held(), [], '"unlimited" lifts them, the volume still mounted');
  if (pod.version === 1) for (const c of [pod.container, late]) assert.deepEqual(await held(c), [], 'from every container\'s cgroup (cgroup v1)');
  const free = await fioInPod(pod, file, { rw: 'randread', bs: '4k', seconds: 2 });
  o.report?.(`${o.name}: lifted, random read ${free.iops.toFixed(0)} IOPS`);
  await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { readIOPS: '300' } });
  await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: p.target });
  assert.deepEqual(await held(), [], 'the pod\'s limits on the device go with its publish');
  if (pod.version === 1) for (const c of [pod.container, late]) assert.deepEqual(await held(c), [], 'from every container\'s cgroup (cgroup v1)');
  await d.client.nodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging });
  await d.client.deleteVolume({ volume_id: vol.volume_id });
  return d;
}
