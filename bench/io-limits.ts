// How closely the kernel holds a file-pool volume to its class's I/O limits, and how much of the
// unlimited figure comes back when the class is changed to unlimited, without unmounting: fio (direct
// I/O, iodepth 16) in a real pod cgroup (test/helpers/pod-cgroup.ts) on a raw block volume and on a
// file in an ext4 volume, before, under and after the limits. Not a test: it prints a table. Root.
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { blockCap, mountCap } from '../test/helpers/csi.js';
import { finish, startDriver, type Driver } from '../test/helpers/driver.js';
import { fioInPod, PodCgroup } from '../test/helpers/pod-cgroup.js';

const SECONDS = Number(process.env.VPOOL_BENCH_FIO_SECONDS ?? 5);
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

async function main(): Promise<void> {
  const pod = new PodCgroup('bench');
  await pod.create();
  const d: Driver = await startDriver({ args: ['--kubepods-cgroup', pod.kubepods, '--log-level', 'warn'] });
  try {
    const kubelet = path.join(d.mntDir, 'kubelet');
    const rows: string[] = [];
    for (const kind of ['raw block', 'ext4 file'] as const) {
      const cap = kind === 'raw block' ? blockCap() : mountCap('ext4');
      const vol = (await d.client.createVolume({ name: `bench-${kind === 'raw block' ? 'block' : 'fs'}`, capacity_range: { required_bytes: String(1024 * MiB) }, volume_capabilities: [cap] })).volume!;
      const staging = path.join(kubelet, 'plugins/kubernetes.io/csi', kind === 'raw block' ? 'volumeDevices/staging/pv-b' : 'vpool.csi.dev/pv-f/globalmount');
      const target = kind === 'raw block' ? path.join(kubelet, 'plugins/kubernetes.io/csi/volumeDevices/publish/pv-b', pod.uid) : path.join(kubelet, 'pods', pod.uid, 'volumes/kubernetes.io~csi/pv-f/mount');
      await mkdir(staging, { recursive: true });
      await mkdir(path.dirname(target), { recursive: true });
      await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: staging, volume_capability: cap });
      await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: staging, target_path: target, volume_capability: cap, readonly: false, volume_context: { 'csi.storage.k8s.io/pod.uid': pod.uid } });
      const file = kind === 'raw block' ? target : path.join(target, 'fio.data');
      // Written once in full, so reads read data, not holes.
      await pod.run('fio', ['--name=fill', `--filename=${file}`, '--size=768M', '--rw=write', '--bs=1M', '--direct=1', '--ioengine=libaio', '--iodepth=16']);
      const before = await measure(pod, file);
      await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: LIMITED });
      const under = await measure(pod, file);
      await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: UNLIMITED });
      const after = await measure(pod, file);
      JOBS.forEach((j, i) => {
        const held = under[i] / j.limit;
        rows.push(`| ${kind} | ${j.label} | ${show(j, before[i])} | ${show(j, j.limit)} | ${show(j, under[i])} (${(held * 100).toFixed(1)}% of the limit) | ${show(j, after[i])} (${((after[i] / before[i]) * 100).toFixed(0)}% of before) |`);
      });
      await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: target });
      await d.client.nodeUnstageVolume({ volume_id: vol.volume_id, staging_target_path: staging });
      await d.client.deleteVolume({ volume_id: vol.volume_id });
    }
    console.log(`file pool, cgroup v${pod.version}, fio ${SECONDS} s a run, direct I/O, iodepth 16; the class changed on the live volume (ControllerModifyVolume), never unmounted`);
    console.log('| volume | job | unlimited | limit | under the limit | limit lifted |');
    console.log('|---|---|---|---|---|---|');
    for (const r of rows) console.log(r);
  } finally {
    const left = await finish(d);
    await pod.remove();
    if (left.length) throw new Error(`left behind: ${left.join(', ')}`);
  }
}

await main();
