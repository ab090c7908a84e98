// Runs INSIDE the QEMU VM (make bench-vm): the node path of the lvm backend beside the raw commands
// it wraps, on thin LVs with real device-mapper. TCG emulation makes every figure slow; the ratios
// are what to read. Not a test: it prints a table.
import { execFile, execFileSync } from 'node:child_process';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { mountCap } from '../test/helpers/csi.js';
import { median, timed } from './measure.js';
import { BIN, finish, startDriver } from '../test/helpers/driver.js';

const execFileP = promisify(execFile);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 10);
const VG = 'benchvg';
const SIZE = 64 * 1024 * 1024;
type Step = 'NodeStageVolume' | 'NodePublishVolume' | 'NodeUnpublishVolume' | 'NodeUnstageVolume';
const RAW: Record<Step, string> = {
  NodeStageVolume: 'lvchange -ay + mkfs.ext4 + mount',
  NodePublishVolume: 'mount --bind',
  NodeUnpublishVolume: 'umount',
  NodeUnstageVolume: 'umount + lvchange -an',
};
const empty = (): Record<Step, number[]> => ({ NodeStageVolume: [], NodePublishVolume: [], NodeUnpublishVolume: [], NodeUnstageVolume: [] });

async function main(): Promise<void> {
  execFileSync('modprobe', ['-a', 'dm_thin_pool', 'dm_snapshot']);
  execFileSync(BIN, ['pool', 'init', '--vg', VG, '--thin-pool', 'thin', '--thin-size', '80%', '/dev/disk/by-id/virtio-data0', '/dev/disk/by-id/virtio-data1']);
  // Start-up under TCG: what a liveness probe and the registrar wait for.
  const versionMs = await timed(() => execFileP(BIN, ['--version']));
  let d!: Awaited<ReturnType<typeof startDriver>>;
  const startMs = await timed(async () => (d = await startDriver({ args: ['--backend', 'lvm', '--vg', VG, '--log-level', 'warn'] })));
  console.log(`in the VM: vpool-csi --version ${versionMs.toFixed(0)} ms; serve --backend lvm answers Probe ${startMs.toFixed(0)} ms after it is started`);
  const drv = empty();
  const raw = empty();
  const cap = mountCap('ext4');
  for (let i = 0; i < ITERATIONS; i++) {
    const staging = path.join(d.mntDir, `s${i}`);
    const target = path.join(d.mntDir, `p${i}`, 'v');
    await mkdir(staging, { recursive: true });
    await mkdir(path.dirname(target), { recursive: true });
    const id = (await d.client.createVolume({ name: `b${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [cap], parameters: { type: 'thin' } })).volume!.volume_id;
    // The driver made the LV active at creation; start both sides from an inactive LV.
    execFileSync('lvchange', ['-an', `${VG}/${id}`]);
    drv.NodeStageVolume.push(await timed(() => d.client.nodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap })));
    drv.NodePublishVolume.push(await timed(() => d.client.nodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap })));
    drv.NodeUnpublishVolume.push(await timed(() => d.client.nodeUnpublishVolume({ volume_id: id, target_path: target })));
    drv.NodeUnstageVolume.push(await timed(() => d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: staging })));
    await d.client.deleteVolume({ volume_id: id });

    const lv = `raw${i}`;
    const rs = path.join(d.mntDir, `rs${i}`);
    const rt = path.join(d.mntDir, `rt${i}`);
    await mkdir(rs);
    await mkdir(rt);
    execFileSync('lvcreate', ['-y', '-an', '-V', `${SIZE}b`, '--thinpool', `${VG}/thin`, '-n', lv]);
    raw.NodeStageVolume.push(
      await timed(async () => {
        await execFileP('lvchange', ['-ay', `${VG}/${lv}`]);
        await execFileP('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', 'nodiscard', `/dev/${VG}/${lv}`]);
        await execFileP('mount', [`/dev/${VG}/${lv}`, rs]);
      }),
    );
    raw.NodePublishVolume.push(await timed(() => execFileP('mount', ['--bind', rs, rt])));
    raw.NodeUnpublishVolume.push(await timed(() => execFileP('umount', [rt])));
    raw.NodeUnstageVolume.push(
      await timed(async () => {
        await execFileP('umount', [rs]);
        await execFileP('lvchange', ['-an', `${VG}/${lv}`]);
      }),
    );
    execFileSync('lvremove', ['-y', `${VG}/${lv}`]);
  }
  console.log(`lvm node path in the QEMU TCG VM (thin, ${SIZE >> 20} MiB ext4, ${ITERATIONS} iterations), medians in ms`);
  for (const step of Object.keys(RAW) as Step[]) {
    const a = median(drv[step]);
    const b = median(raw[step]);
    console.log(`${step.padEnd(20)} ${a.toFixed(1).padStart(8)} ${b.toFixed(1).padStart(8)}  ratio ${(a / b).toFixed(2)}   ${RAW[step]}`);
  }
  await finish(d);
  execFileSync(BIN, ['pool', 'destroy', '--vg', VG, '--force']);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
