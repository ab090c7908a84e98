// Runs INSIDE the QEMU VM (test/vm/vm-run.sh): Debian's kernel with device-mapper and cgroup v2's io
// controller. Started by test/e2e/io-limits-vm.test.ts; not picked up on the host directly.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { blockCap } from '../helpers/csi.js';
import { BIN, finish, MiB, startDriver, type Driver } from '../helpers/driver.js';
import { limitsHeldLive } from '../helpers/io-limits-checks.js';
import { kubeletPaths, makeKubeletDirs, PodCgroup } from '../helpers/pod-cgroup.js';

const VG = 'iopool';
const DISKS = ['/dev/disk/by-id/virtio-data0', '/dev/disk/by-id/virtio-data1'];
const FILE_DISK = '/dev/disk/by-id/virtio-data2';
const FILE_MNT = '/mnt/vpool-file';
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const report = (line: string) => console.log(line);

describe('I/O limits held by cgroup v2 io.max on the pods\' containers (pod cgroups laid out as the kubelet\'s cgroupfs driver makes them)', { timeout: 1_440_000 }, () => {
  let pod: PodCgroup;
  before(async () => {
    // The VM's init mounts no cgroup filesystem: v2, as a kubelet on v2 has it.
    if (!existsSync('/sys/fs/cgroup/cgroup.controllers')) {
      await mkdir('/sys/fs/cgroup', { recursive: true });
      sh('mount', ['-t', 'cgroup2', 'none', '/sys/fs/cgroup']);
    }
    pod = new PodCgroup('vm');
    await pod.create();
  });
  after(async () => {
    await pod?.remove();
  });

  describe('the file pool', () => {
    let d: Driver;
    before(async () => {
      // The pool on a real filesystem of its own (loop devices with direct I/O cannot sit on the VM's tmpfs overlay).
      sh('mkfs.ext4', ['-q', '-F', FILE_DISK]);
      await mkdir(FILE_MNT, { recursive: true });
      sh('mount', [FILE_DISK, FILE_MNT]);
      process.env.VPOOL_TEST_DIR = FILE_MNT;
      d = await startDriver({ args: ['--kubepods-cgroup', pod.kubepods] });
    });
    after(async () => {
      if (d) assert.deepEqual(await finish(d), []);
      delete process.env.VPOOL_TEST_DIR;
      sh('umount', [FILE_MNT]);
    });

    it('raw block: limits set at publish, held, changed live, set again by a restarted plugin, lifted', async () => {
      d = await limitsHeldLive(d, pod, { name: 'file-block', access: 'block', restart: true, report });
    });

    it('ext4: the same on the loop device under the pod\'s mount', async () => {
      d = await limitsHeldLive(d, pod, { name: 'file-fs', access: 'mount', report });
    });

    it('refuses a publish it cannot hold to its limits, and leaves nothing mounted: a pod without a cgroup, a context naming another pod than the path', async () => {
      const vol = (await d.client.createVolume({ name: 'refused', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], mutable_parameters: { readIOPS: '500' } })).volume!;
      const ghost = '0a0a0a0a-0000-4000-8000-000000000001';
      for (const [target, context, why] of [
        [ghost, ghost, /has I\/O limits, and pod 0a0a0a0a-.* has no cgroup/],
        [pod.uid, ghost, /the volume context names pod 0a0a0a0a-.*, and the target path pod/],
      ] as const) {
        const p = kubeletPaths(d.mntDir, 'pv-refused', target, 'block');
        await makeKubeletDirs(p);
        await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, volume_capability: blockCap() });
        const call = d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: p.target, volume_capability: blockCap(), readonly: false, volume_context: { 'csi.storage.k8s.io/pod.uid': context } });
        await assert.rejects(call, (e: { code?: number; details?: string }) => e.code === 9 && why.test(e.details ?? ''));
        assert.ok(!sh('cat', ['/proc/self/mountinfo']).includes(p.target), 'the refused publish left no mount');
        await d.client.nodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging });
      }
      await d.client.deleteVolume({ volume_id: vol.volume_id });
    });
  });

  describe('the lvm pool', () => {
    let d: Driver;
    before(async () => {
      execFileSync('modprobe', ['-a', 'dm_thin_pool']);
      sh(BIN, ['pool', 'init', '--vg', VG, '--thin-pool', 'thin', '--thin-size', '40%', ...DISKS]);
      d = await startDriver({ args: ['--backend', 'lvm', '--vg', VG, '--kubepods-cgroup', pod.kubepods] });
    });
    after(async () => {
      if (d) assert.deepEqual(await finish(d), []);
      sh(BIN, ['pool', 'destroy', '--vg', VG]);
    });

    it('thick, raw block', async () => {
      d = await limitsHeldLive(d, pod, { name: 'lvm-thick', access: 'block', parameters: { type: 'thick' }, report });
    });

    it('thin, ext4, and set again by a restarted plugin', async () => {
      d = await limitsHeldLive(d, pod, { name: 'lvm-thin', access: 'mount', parameters: { type: 'thin' }, restart: true, report });
    });
  });
});
