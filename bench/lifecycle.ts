// Latency of the driver's RPCs beside the raw commands each one wraps, on the embedded file pool.
// Not a test: it asserts nothing and prints a table. Run with `make bench` (root: loop devices, mount).
import { execFile } from 'node:child_process';
import { mkdir, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { startDriver, type Driver } from '../test/helpers/driver.js';
import { mountCap } from '../test/helpers/csi.js';
import { median, timed } from './measure.js';

const execFileP = promisify(execFile);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 50);
const SIZE = 64 * 1024 * 1024;
const MKFS = ['-q', '-F', '-m', '0', '-E', 'nodiscard'];

type Step = 'CreateVolume' | 'NodeStageVolume' | 'NodePublishVolume' | 'NodeUnpublishVolume' | 'NodeUnstageVolume' | 'DeleteVolume';
const RAW: Record<Step, string> = {
  CreateVolume: 'truncate',
  NodeStageVolume: 'losetup + mkfs.ext4 + mount',
  NodePublishVolume: 'mount --bind',
  NodeUnpublishVolume: 'umount',
  NodeUnstageVolume: 'umount + losetup -d',
  DeleteVolume: 'rm',
};


async function driverRound(d: Driver, i: number, out: Record<Step, number[]>): Promise<void> {
  const cap = mountCap('ext4');
  const staging = path.join(d.mntDir, 'staging', `b${i}`);
  const podDir = path.join(d.mntDir, 'pods', `b${i}`);
  await mkdir(staging, { recursive: true });
  await mkdir(podDir, { recursive: true });
  const target = path.join(podDir, 'v');
  let id = '';
  out.CreateVolume.push(await timed(async () => (id = (await d.client.createVolume({ name: `bench-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [cap] })).volume!.volume_id)));
  out.NodeStageVolume.push(await timed(() => d.client.nodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap })));
  out.NodePublishVolume.push(await timed(() => d.client.nodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap })));
  out.NodeUnpublishVolume.push(await timed(() => d.client.nodeUnpublishVolume({ volume_id: id, target_path: target })));
  out.NodeUnstageVolume.push(await timed(() => d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: staging })));
  out.DeleteVolume.push(await timed(() => d.client.deleteVolume({ volume_id: id })));
}

async function rawRound(dir: string, i: number, out: Record<Step, number[]>): Promise<void> {
  const file = path.join(dir, `raw-${i}.img`);
  const staging = path.join(dir, `raw-stage-${i}`);
  const target = path.join(dir, `raw-target-${i}`);
  await mkdir(staging, { recursive: true });
  await mkdir(target, { recursive: true });
  let dev = '';
  out.CreateVolume.push(await timed(() => execFileP('truncate', ['-s', String(SIZE), file])));
  out.NodeStageVolume.push(
    await timed(async () => {
      dev = (await execFileP('losetup', ['--direct-io=on', '--find', '--show', file])).stdout.trim();
      await execFileP('mkfs.ext4', [...MKFS, dev]);
      await execFileP('mount', ['-t', 'ext4', dev, staging]);
    }),
  );
  out.NodePublishVolume.push(await timed(() => execFileP('mount', ['--bind', staging, target])));
  out.NodeUnpublishVolume.push(await timed(() => execFileP('umount', [target])));
  out.NodeUnstageVolume.push(
    await timed(async () => {
      await execFileP('umount', [staging]);
      await execFileP('losetup', ['-d', dev]);
    }),
  );
  out.DeleteVolume.push(await timed(() => execFileP('rm', ['-f', file])));
}

const empty = (): Record<Step, number[]> => ({ CreateVolume: [], NodeStageVolume: [], NodePublishVolume: [], NodeUnpublishVolume: [], NodeUnstageVolume: [], DeleteVolume: [] });

async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

async function main(): Promise<void> {
  const d = await startDriver({ args: ['--log-level', 'warn'] });
  const rawDir = path.join(d.dir, 'raw');
  await mkdir(rawDir);
  const drv = empty();
  const raw = empty();
  // Interleave, so that both sides see the same machine load.
  for (let i = 0; i < ITERATIONS; i++) {
    await driverRound(d, i, drv);
    await rawRound(rawDir, i, raw);
  }
  console.log(`vpool-csi file pool, ${ITERATIONS} iterations, ${SIZE / 1024 / 1024} MiB ext4 volumes, medians in ms`);
  console.log('RPC                   driver   raw     delta   raw commands');
  for (const step of Object.keys(RAW) as Step[]) {
    const a = median(drv[step]);
    const b = median(raw[step]);
    console.log(`${step.padEnd(20)} ${a.toFixed(2).padStart(7)} ${b.toFixed(2).padStart(7)} ${(a - b >= 0 ? '+' : '') + (a - b).toFixed(2).padStart(6)}   ${RAW[step]}`);
  }

  // Control-plane throughput: create+delete pairs, one after the other, as a provisioner would issue them.
  const pairs = 300;
  const started = process.hrtime.bigint();
  for (let i = 0; i < pairs; i++) {
    const v = await d.client.createVolume({ name: `pair-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [mountCap()] });
    await d.client.deleteVolume({ volume_id: v.volume!.volume_id });
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(`create+delete pairs per second, one at a time: ${(pairs / seconds).toFixed(0)}`);
  // external-provisioner runs many workers; 8 clients in flight is still modest.
  const workers = 8;
  const startedPar = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: workers }, async (_, w) => {
      for (let i = 0; i < pairs / workers; i++) {
        const v = await d.client.createVolume({ name: `par-${w}-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [mountCap()] });
        await d.client.deleteVolume({ volume_id: v.volume!.volume_id });
      }
    }),
  );
  const parSeconds = Number(process.hrtime.bigint() - startedPar) / 1e9;
  console.log(`create+delete pairs per second, ${workers} clients in flight: ${(pairs / parSeconds).toFixed(0)}`);

  for (let i = ITERATIONS; i < 100; i++) await driverRound(d, i, empty());
  console.log(`driver RSS after 100 full lifecycles and ${2 * pairs} create/delete pairs: ${(await rssMiB(d.proc.pid!)).toFixed(1)} MiB`);
  await d.stop();
  await rm(d.dir, { recursive: true, force: true });
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
