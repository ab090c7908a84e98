// How closely the kernel holds a volume to its class's I/O limits, and how much of the unlimited figure
// comes back when the class is changed to unlimited, without unmounting: fio (direct I/O, iodepth 16)
// in a pod's container cgroup (test/helpers/pod-cgroup.ts), raw block and a file in ext4, before, under
// and after the limits. Inside the QEMU VM (make bench-vm: cgroup v2, the file pool and the lvm pool;
// TCG makes the unlimited figures slow), or on the host (make bench: the file pool, in the host's cgroup
// version, v1 here). Not a test: it prints a table.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { blockCap, mountCap } from '../test/helpers/csi.js';
import { BIN, finish, startDriver, type Driver } from '../test/helpers/driver.js';
import { fioInPod, kubeletPaths, makeKubeletDirs, PodCgroup } from '../test/helpers/pod-cgroup.js';

const SECONDS = Number(process.env.VPOOL_BENCH_FIO_SECONDS ?? 3);
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const MiB = 1024 * 1024;
const LIMITED = { readIOPS: '500', writeIOPS: '500', readBytesPerSecond: '20Mi', writeBytesPerSecond: '20Mi' };
const UNLIMITED = { readIOPS: 'unlimited', writeIOPS: 'unlimited', readBytesPerSecond: 'unlimited', writeBytesPerSecond: 'unlimited' };

type Job = { label: string; rw: 'randread' | 'randwrite' | 'read' | 'write'; bs: string; figure: 'iops' | 'bytesPerSecond'; limit: number };
const JOBS: Job[] = [
  { label: 'random read 4k, IOPS', rw: 'randread', bs: '4k', figure: 'iops', limit: 500 },
  { label: 'random write 4k, IOPS', rw: 'randwrite', bs: '4k', figure: 'iops', limit: 500 },
  { label: 'read 1M, MiB/s', rw: 'read', bs: '1M', figure: 'bytesPerSecond', limit: 20 * MiB },
  { label: 'write 1M, MiB/s', rw: 'write', bs: '1M', figure: 'bytesPerSecond', limit: 20 * MiB },
];

const show = (j: Job, v: number) => (j.figure === 'iops' ? v.toFixed(0) : (v / MiB).toFixed(1));

async function measure(pod: PodCgroup, target: string): Promise<number[]> {
  const out: number[] = [];
  for (const j of JOBS) out.push((await fioInPod(pod, target, { rw: j.rw, bs: j.bs, seconds: SECONDS }))[j.figure]);
  return out;
}

async function pool(label: string, pod: PodCgroup, d: Driver, kinds: Array<{ access: 'block' | 'mount'; parameters: Record<string, string> }>, rows: string[]): Promise<void> {
  try {
    for (const k of kinds) {
      const cap = k.access === 'block' ? blockCap() : mountCap('ext4');
      const name = `bench-${k.access}`;
      const vol = (await d.client.createVolume({ name, capacity_range: { required_bytes: String(512 * MiB) }, volume_capabilities: [cap], parameters: k.parameters })).volume!;
      const p = kubeletPaths(d.mntDir, `pv-${name}`, pod.uid, k.access);
      await makeKubeletDirs(p);
      await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, volume_capability: cap });
      await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: p.target, volume_capability: cap, readonly: false, volume_context: { 'csi.storage.k8s.io/pod.uid': pod.uid } });
      const file = k.access === 'block' ? p.target : path.join(p.target, 'fio.data');
      // Written once in full, so reads read data, not holes.
      await pod.run('fio', ['--name=fill', `--filename=${file}`, '--size=384M', '--rw=write', '--bs=1M', '--direct=1', '--ioengine=libaio', '--iodepth=16']);
      const before = await measure(pod, file);
      await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: LIMITED });
      const under = await measure(pod, file);
      await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: UNLIMITED });
      const after = await measure(pod, file);
      JOBS.forEach((j, i) => {
        rows.push(`| ${label} ${k.access === 'block' ? 'raw block' : 'ext4 file'} | ${j.label} | ${show(j, before[i])} | ${show(j, j.limit)} | ${show(j, under[i])} (${((under[i] / j.limit) * 100).toFixed(1)}%) | ${show(j, after[i])} (${((after[i] / before[i]) * 100).toFixed(0)}% of before) |`);
      });
      await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: p.target });
      await d.client.nodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging });
      await d.client.deleteVolume({ volume_id: vol.volume_id });
    }
  } finally {
    const left = await finish(d);
    if (left.length) throw new Error(`left behind: ${left.join(', ')}`);
  }
}

async function main(): Promise<void> {
  const inVm = existsSync('/dev/disk/by-id/virtio-data2');
  if (inVm && !existsSync('/sys/fs/cgroup/cgroup.controllers')) {
    await mkdir('/sys/fs/cgroup', { recursive: true });
    sh('mount', ['-t', 'cgroup2', 'none', '/sys/fs/cgroup']);
  }
  const pod = new PodCgroup('bench');
  await pod.create();
  const rows: string[] = [];
  try {
    if (inVm) {
      // The file pool on an ext4 filesystem of its own (data2), the lvm pool on data0 and data1.
      sh('mkfs.ext4', ['-q', '-F', '/dev/disk/by-id/virtio-data2']);
      await mkdir('/mnt/vpool-file', { recursive: true });
      sh('mount', ['/dev/disk/by-id/virtio-data2', '/mnt/vpool-file']);
      process.env.VPOOL_TEST_DIR = '/mnt/vpool-file';
    }
    await pool('file', pod, await startDriver({ args: ['--kubepods-cgroup', pod.kubepods, '--log-level', 'warn'] }), [{ access: 'block', parameters: {} }, { access: 'mount', parameters: {} }], rows);
    if (inVm) {
      execFileSync('modprobe', ['-a', 'dm_thin_pool']);
      sh(BIN, ['pool', 'init', '--vg', 'benchio', '--thin-pool', 'thin', '--thin-size', '45%', '/dev/disk/by-id/virtio-data0', '/dev/disk/by-id/virtio-data1']);
      await pool('lvm', pod, await startDriver({ args: ['--backend', 'lvm', '--vg', 'benchio', '--kubepods-cgroup', pod.kubepods, '--log-level', 'warn'] }), [{ access: 'block', parameters: { type: 'thick' } }, { access: 'mount', parameters: { type: 'thin' } }], rows);
      sh(BIN, ['pool', 'destroy', '--vg', 'benchio']);
    }
    const where = pod.version === 2 ? 'cgroup v2 io.max' : 'cgroup v1 blkio.throttle (the pod\'s cgroup and each container\'s)';
    console.log(`${where} ${inVm ? 'in the QEMU VM (TCG)' : 'on the host'}, fio ${SECONDS} s a run, direct I/O, iodepth 16, in the pod's container; the class changed on the live volume (ControllerModifyVolume), never unmounted`);
    console.log('| volume | job | unlimited | limit | under the limit | limit lifted |');
    console.log('|---|---|---|---|---|---|');
    for (const r of rows) console.log(r);
  } finally {
    await pod.remove();
  }
}

await main();
