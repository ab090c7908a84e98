// Start time and memory of the driver: `vpool-csi --version` beside a bare `node`, and the resident
// size of `serve` on the file pool idle and after 100 lifecycles, alone and with each optional part
// (metrics, a Kubernetes API for VolumePools). Not a test: it prints a table. `make bench` (root).
import { execFile } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { mountCap } from '../test/helpers/csi.js';
import { BIN, finish, startDriver, type Driver } from '../test/helpers/driver.js';
import { startFakeCluster } from '../test/helpers/kube.js';
import { PLUGIN_READ_TYPES } from '../test/helpers/fake-apiserver.js';
import { median, timed } from './measure.js';
import { PROJECT_ROOT } from '../src/project.js';

const execFileP = promisify(execFile);
const RUNS = 10;

async function rssMiB(pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
}

async function lifecycle(d: Driver, i: number): Promise<void> {
  const cap = mountCap('ext4');
  const staging = path.join(d.mntDir, 'staging', `f${i}`);
  const target = path.join(d.mntDir, 'pods', `f${i}`, 'v');
  await mkdir(staging, { recursive: true });
  await mkdir(path.dirname(target), { recursive: true });
  const id = (await d.client.createVolume({ name: `fp-${i}`, capacity_range: { required_bytes: String(16 * 1024 * 1024) }, volume_capabilities: [cap] })).volume!.volume_id;
  await d.client.nodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
  await d.client.nodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
  await d.client.nodeGetVolumeStats({ volume_id: id, volume_path: target });
  await d.client.nodeUnpublishVolume({ volume_id: id, target_path: target });
  await d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: staging });
  await d.client.deleteVolume({ volume_id: id });
}

async function serveRow(what: string, args: string[]): Promise<string> {
  let d: Driver | undefined;
  const startMs = await timed(async () => (d = await startDriver({ args: ['--log-level', 'warn', ...args] })));
  await new Promise((r) => setTimeout(r, 3000));
  const idle = await rssMiB(d!.proc.pid!);
  for (let i = 0; i < 100; i++) await lifecycle(d!, i);
  await new Promise((r) => setTimeout(r, 1000));
  const after = await rssMiB(d!.proc.pid!);
  await finish(d!);
  return `${what.padEnd(44)} ${startMs.toFixed(0).padStart(6)} ms ${idle.toFixed(1).padStart(8)} MiB ${after.toFixed(1).padStart(8)} MiB`;
}

async function main(): Promise<void> {
  const version: number[] = [];
  const bare: number[] = [];
  for (let i = 0; i < RUNS; i++) {
    version.push(await timed(() => execFileP(BIN, ['--version'])));
    bare.push(await timed(() => execFileP(process.execPath, ['-e', ''])));
  }
  console.log(`vpool-csi --version ${median(version).toFixed(0)} ms, bare node -e '' ${median(bare).toFixed(0)} ms (median of ${RUNS}), ratio ${(median(version) / median(bare)).toFixed(2)}`);
  // A person's commands against a running driver (two volumes and a snapshot), each beside --version.
  const d = await startDriver({ args: ['--log-level', 'warn'] });
  try {
    const v = (await d.client.createVolume({ name: 'fp-cli', capacity_range: { required_bytes: String(16 * 1024 * 1024) }, volume_capabilities: [mountCap('ext4')] })).volume!;
    await d.client.createVolume({ name: 'fp-cli-2', capacity_range: { required_bytes: String(16 * 1024 * 1024) }, volume_capabilities: [mountCap('ext4')] });
    await d.client.createSnapshot({ name: 'fp-cli-snap', source_volume_id: v.volume_id });
    const commands: Array<[string, string[]]> = [
      ['client info', ['client', '--endpoint', d.endpoint, '-o', 'table', 'info']],
      ['client list-volumes', ['client', '--endpoint', d.endpoint, '-o', 'table', 'list-volumes']],
      ['client list-snapshots', ['client', '--endpoint', d.endpoint, '-o', 'table', 'list-snapshots']],
      ['status', ['status', '--endpoint', d.endpoint, '-o', 'table']],
    ];
    for (const [what, args] of commands) {
      const t: number[] = [];
      for (let i = 0; i < RUNS; i++) t.push(await timed(() => execFileP(BIN, args)));
      console.log(`vpool-csi ${what} -o table`.padEnd(44), `${median(t).toFixed(0).padStart(6)} ms, ratio to --version ${(median(t) / median(version)).toFixed(2)}, to bare node ${(median(t) / median(bare)).toFixed(2)}`);
    }
    // A page of 1,000 volumes on a node with 30 loop devices attached: the table's mounts are found from one
    // listing of the loop devices, not one per volume (2.4 s before, on this machine).
    const block = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' as const } };
    for (let i = 0; i < 1000; i += 8) await Promise.all(Array.from({ length: 8 }, (_, j) => d.client.createVolume({ name: `fp-many-${i + j}`, capacity_range: { required_bytes: String(1024 * 1024) }, volume_capabilities: [block] })));
    const loops: string[] = [];
    try {
      for (let i = 0; i < 30; i++) {
        const file = path.join(d.mntDir, `loop-${i}.img`);
        await execFileP('truncate', ['-s', '1M', file]);
        loops.push((await execFileP('losetup', ['--find', '--show', file])).stdout.trim());
      }
      for (const [what, args] of [['client list-volumes -o table, 1,002 volumes, 30 loops', ['client', '--endpoint', d.endpoint, '-o', 'table', 'list-volumes']], ['status, 1,002 volumes, 30 loops', ['status', '--endpoint', d.endpoint, '-o', 'table']]] as Array<[string, string[]]>) {
        const t: number[] = [];
        for (let i = 0; i < RUNS; i++) t.push(await timed(() => execFileP(BIN, args, { maxBuffer: 64 * 1024 * 1024 }).catch((e: { code?: number }) => {
          // status exits 5 when something needs attention: still a whole answer.
          if (e.code !== 5) throw e;
        })));
        console.log(`vpool-csi ${what}`.padEnd(44), `${median(t).toFixed(0).padStart(6)} ms, ratio to --version ${(median(t) / median(version)).toFixed(2)}`);
      }
    } finally {
      for (const l of loops) await execFileP('losetup', ['-d', l]).catch(() => undefined);
    }
  } finally {
    // The bench's volumes go with the driver's directory.
    await finish(d);
  }
  const { fake, kubeconfig } = await startFakeCluster();
  try {
    // The kubectl plugin: its own start (one bundled file), and a whole `kubectl vpool pools` through kubectl against the FAKE API server.
    for (const t of PLUGIN_READ_TYPES) fake.addType(t);
    const plugin = path.join(PROJECT_ROOT, 'dist', 'kubectl-plugin', 'kubectl-vpool');
    const env = { ...process.env, KUBECONFIG: kubeconfig, PATH: `${path.dirname(plugin)}:${path.join(PROJECT_ROOT, '.tools', 'bin')}:${process.env.PATH}` };
    const helpT: number[] = [];
    const poolsT: number[] = [];
    for (let i = 0; i < RUNS; i++) {
      helpT.push(await timed(() => execFileP(plugin, ['--help'])));
      poolsT.push(await timed(() => execFileP('kubectl', ['vpool', 'pools'], { env })));
    }
    console.log(`${'kubectl-vpool --help (its start)'.padEnd(44)} ${median(helpT).toFixed(0).padStart(6)} ms, ratio to bare node ${(median(helpT) / median(bare)).toFixed(2)}`);
    console.log(`${'kubectl vpool pools (3 reads through kubectl)'.padEnd(44)} ${median(poolsT).toFixed(0).padStart(6)} ms, ratio to bare node ${(median(poolsT) / median(bare)).toFixed(2)}`);
    console.log(`${'serve --backend file'.padEnd(44)} ${'socket'.padStart(9)} ${'idle RSS'.padStart(12)} ${'after 100'.padStart(12)}`);
    console.log(await serveRow('no cluster, no metrics (make run)', []));
    console.log(await serveRow('with --metrics-address', ['--metrics-address', '127.0.0.1:0']));
    console.log(await serveRow('with a Kubernetes API (VolumePools, orphans)', ['--kubeconfig', kubeconfig, '--orphan-check-interval', '10m']));
  } finally {
    await fake.stop();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
