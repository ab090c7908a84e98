// Runs INSIDE the QEMU VM (test/vm/vm-run.sh): Debian's kernel with device-mapper and cgroup v2's io
// controller. Started by test/e2e/io-limits-vm.test.ts; not picked up on the host directly.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap, mountCap } from '../helpers/csi.js';
import { BIN, finish, MiB, startDriver, type Driver } from '../helpers/driver.js';
import { fioInPod, PodCgroup } from '../helpers/pod-cgroup.js';
import { majorMinor } from '../../src/host/devices.js';

const VG = 'iopool';
const DISKS = ['/dev/disk/by-id/virtio-data0', '/dev/disk/by-id/virtio-data1'];
const LIMITED = { readIOPS: '500', writeIOPS: '500', readBytesPerSecond: '20Mi', writeBytesPerSecond: '20Mi' };
const UNLIMITED = { readIOPS: 'unlimited', writeIOPS: 'unlimited', readBytesPerSecond: 'unlimited', writeBytesPerSecond: 'unlimited' };
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

describe('lvm volumes held to their class by cgroup v2 io.max (a pod cgroup laid out as the kubelet\'s cgroupfs driver makes it)', { timeout: 420_000 }, () => {
  let d: Driver;
  let pod: PodCgroup;
  before(async () => {
    // The VM's init mounts no cgroup filesystem: v2, as a kubelet on v2 has it.
    if (!existsSync('/sys/fs/cgroup/cgroup.controllers')) {
      await mkdir('/sys/fs/cgroup', { recursive: true });
      sh('mount', ['-t', 'cgroup2', 'none', '/sys/fs/cgroup']);
    }
    pod = new PodCgroup('vm');
    assert.equal(pod.version, 2);
    await pod.create();
    execFileSync('modprobe', ['-a', 'dm_thin_pool']);
    sh(BIN, ['pool', 'init', '--vg', VG, '--thin-pool', 'thin', '--thin-size', '40%', ...DISKS]);
    d = await startDriver({ args: ['--backend', 'lvm', '--vg', VG, '--kubepods-cgroup', pod.kubepods] });
  });
  after(async () => {
    if (d) assert.deepEqual(await finish(d), []);
    sh(BIN, ['pool', 'destroy', '--vg', VG]);
    await pod?.remove();
  });

  for (const type of ['thick', 'thin'] as const) {
    it(`${type}: the class's limits in the pod's io.max on the LV, fio held under them, lifted live by another class`, async () => {
      const cap = type === 'thick' ? blockCap() : mountCap('ext4');
      const vol = (await d.client.createVolume({ name: `io-${type}`, capacity_range: { required_bytes: String(256 * MiB) }, volume_capabilities: [cap], parameters: { type }, mutable_parameters: LIMITED })).volume!;
      const kubelet = path.join(d.mntDir, 'kubelet');
      const staging = path.join(kubelet, 'plugins/kubernetes.io/csi', type === 'thick' ? 'volumeDevices/staging/pv-k' : 'vpool.csi.dev/pv-n/globalmount');
      const target = type === 'thick' ? path.join(kubelet, 'plugins/kubernetes.io/csi/volumeDevices/publish/pv-k', pod.uid) : path.join(kubelet, 'pods', pod.uid, 'volumes/kubernetes.io~csi/pv-n/mount');
      await mkdir(staging, { recursive: true });
      await mkdir(path.dirname(target), { recursive: true });
      await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: staging, volume_capability: cap });
      await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap, readonly: false, volume_context: { 'csi.storage.k8s.io/pod.uid': pod.uid } });
      const dev = majorMinor(statSync(`/dev/${VG}/${vol.volume_id}`).rdev);
      assert.deepEqual((await pod.lines()).filter((l) => l.startsWith(`${dev} `)), [`${dev} rbps=${20 * MiB} wbps=${20 * MiB} riops=500 wiops=500`]);
      const file = type === 'thick' ? target : path.join(target, 'fio.data');
      await pod.run('fio', ['--name=fill', `--filename=${file}`, '--size=128M', '--rw=write', '--bs=1M', '--direct=1', '--ioengine=libaio', '--iodepth=8']);
      const iops = await fioInPod(pod, file, { rw: 'randread', bs: '4k', seconds: 4 });
      const bps = await fioInPod(pod, file, { rw: 'write', bs: '1M', seconds: 4 });
      // An upper bound: a slow (TCG) machine only does less. The figures go to the report.
      console.log(`${type}: under the class, random read ${iops.iops.toFixed(0)} IOPS (limit 500), write ${(bps.bytesPerSecond / MiB).toFixed(1)} MiB/s (limit 20)`);
      assert.ok(iops.iops <= 550, `${iops.iops} IOPS`);
      assert.ok(bps.bytesPerSecond <= 22 * MiB, `${bps.bytesPerSecond} B/s`);
      await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: UNLIMITED });
      assert.deepEqual((await pod.lines()).filter((l) => l.startsWith(`${dev} `)), [], 'every limit lifted, nothing unmounted');
      const free = await fioInPod(pod, file, { rw: 'randread', bs: '4k', seconds: 4 });
      const freeBps = await fioInPod(pod, file, { rw: 'write', bs: '1M', seconds: 4 });
      console.log(`${type}: lifted, random read ${free.iops.toFixed(0)} IOPS, write ${(freeBps.bytesPerSecond / MiB).toFixed(1)} MiB/s`);
      await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { writeIOPS: '100' } });
      assert.deepEqual((await pod.lines()).filter((l) => l.startsWith(`${dev} `)), [`${dev} rbps=max wbps=max riops=max wiops=100`]);
      await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: target });
      assert.deepEqual((await pod.lines()).filter((l) => l.startsWith(`${dev} `)), []);
      await d.client.nodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: staging });
      await d.client.deleteVolume({ volume_id: vol.volume_id });
    });
  }
});
