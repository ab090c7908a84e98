// What each controller RPC costs as the pool fills: 0, 100 and 1,000 volumes plus 100 snapshots,
// filled by 8 clients at once, one CSI client probing each level. Beside it, in the same run, the
// kubernetes-csi host-path driver when VPOOL_BENCH_HOSTPATH names a hostpathplugin binary built by
// hand (never part of this project). Not a test: it asserts nothing and prints tables.
// Run with `make bench` (root) or `node dist/bench/scale.js [file|lvm|libvirt ...]`.
import { execFile } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import type { CsiClient } from '../src/csi/client.js';
import { blockCap } from '../test/helpers/csi.js';
import { startDriver } from '../test/helpers/driver.js';
import { dirPool, startLibvirt } from '../test/helpers/libvirt.js';
import { forgetVg, loopDisks, poolCmd, uniqueVg } from '../test/helpers/lvm.js';
import { deviceMapperAvailable } from '../src/pool/lvm/lvm-cli.js';
import { startHostPath } from './host-path.js';
import { median, timed } from './measure.js';
import { FloorDir } from './durable-floor.js';

const LEVELS = (process.env.BENCH_LEVELS ?? '0,100,1000').split(',').map(Number);
const SNAPSHOTS = Number(process.env.BENCH_SNAPSHOTS ?? 100);
const CLIENTS = 8;
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 30);
const MiB = 1024 * 1024;
const execFileP = promisify(execFile);

interface Subject {
  name: string;
  client: CsiClient;
  pid: number;
  /** StorageClass parameters the subject needs (host-path's capacity kind). */
  parameters: Record<string, string>;
  volumeBytes: number;
  /** False where the pool cannot take snapshots here (lvm without device-mapper). */
  snapshots: boolean;
  /** The bare commands the pool's create and delete wrap, run on the same pool at each level (lvm). */
  bare?: { create(name: string): Promise<unknown>; remove(name: string): Promise<unknown> };
  /** A directory on the disk the pool is on, where the durable-create floor is measured beside the driver. */
  floorDir?: string;
  stop(): Promise<void>;
}

type Probe = 'CreateVolume' | 'durable create floor (bare)' | 'DeleteVolume' | 'ControllerGetVolume' | 'ValidateVolumeCapabilities' | 'GetCapacity' | 'ListVolumes first page of 100' | 'ListVolumes all pages of 100' | 'ListVolumes slowest page of 100' | 'ListVolumes unpaged' | 'ListSnapshots all pages of 100' | 'CreateSnapshot' | 'DeleteSnapshot' | 'bare create (same LV, --devices)' | 'bare remove (same LV, --devices)';
const PROBES: Probe[] = ['CreateVolume', 'durable create floor (bare)', 'DeleteVolume', 'ControllerGetVolume', 'ValidateVolumeCapabilities', 'GetCapacity', 'ListVolumes first page of 100', 'ListVolumes all pages of 100', 'ListVolumes slowest page of 100', 'ListVolumes unpaged', 'ListSnapshots all pages of 100', 'CreateSnapshot', 'DeleteSnapshot', 'bare create (same LV, --devices)', 'bare remove (same LV, --devices)'];
const TARGET: Partial<Record<Probe, string>> = { 'ListVolumes all pages of 100': '≤ 100 ms', GetCapacity: '≤ 2 ms', 'ListVolumes slowest page of 100': '≤ 50 ms', 'durable create floor (bare)': '' };

async function rssMiB(pid: number): Promise<number> {
  return Number(/VmRSS:\s+(\d+)/.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024;
}

const cap = blockCap();

async function createNamed(s: Subject, name: string): Promise<string> {
  const res = await s.client.createVolume({ name, capacity_range: { required_bytes: String(s.volumeBytes) }, volume_capabilities: [cap], parameters: s.parameters });
  return res.volume!.volume_id;
}

/** Waits until the page cache's dirty data is on disk (sync(1)). */
async function settle(): Promise<void> {
  await execFileP('sync', []);
}

/** Fills the pool from `from` to `to` volumes with CLIENTS callers at once; returns creates per second. */
async function fill(s: Subject, ids: string[], to: number): Promise<number> {
  const from = ids.length;
  if (to <= from) return NaN;
  let next = from;
  const t = performance.now();
  await Promise.all(
    Array.from({ length: CLIENTS }, async () => {
      while (next < to) {
        const i = next++;
        ids[i] = await createNamed(s, `fill-${i}`);
      }
    }),
  );
  return ((to - from) * 1000) / (performance.now() - t);
}

/** Walks every page; returns the slowest page's ms. */
async function allPages(list: (token: string) => Promise<{ next_token: string }>): Promise<number> {
  let token = '';
  let slowest = 0;
  do {
    const t = performance.now();
    token = (await list(token)).next_token;
    slowest = Math.max(slowest, performance.now() - t);
  } while (token);
  return slowest;
}

async function probe(s: Subject, ids: string[], snapshots: string[], level: number, floor?: FloorDir): Promise<Record<Probe, number>> {
  const out = Object.fromEntries(PROBES.map((p) => [p, [] as number[]])) as Record<Probe, number[]>;
  const some = ids[Math.floor(ids.length / 2)];
  for (let r = 0; r < ROUNDS; r++) {
    let id = '';
    out.CreateVolume.push(await timed(async () => (id = await createNamed(s, `probe-${level}-${r}`))));
    // The same durable create made with bare calls, right after, on the same disk in the same state.
    if (floor) out['durable create floor (bare)'].push(await timed(() => floor.create()));
    out.DeleteVolume.push(await timed(() => s.client.deleteVolume({ volume_id: id })));
    if (some) {
      out.ControllerGetVolume.push(await timed(() => s.client.controllerGetVolume({ volume_id: some })));
      out.ValidateVolumeCapabilities.push(await timed(() => s.client.validateVolumeCapabilities({ volume_id: some, volume_capabilities: [cap], parameters: s.parameters })));
    }
    out.GetCapacity.push(await timed(() => s.client.getCapacity({ volume_capabilities: [cap], parameters: s.parameters })));
    out['ListVolumes first page of 100'].push(await timed(() => s.client.listVolumes({ max_entries: 100 })));
  }
  for (let r = 0; r < Math.max(3, ROUNDS / 6); r++) {
    let slowest = 0;
    out['ListVolumes all pages of 100'].push(await timed(async () => (slowest = await allPages((t) => s.client.listVolumes({ max_entries: 100, starting_token: t })))));
    out['ListVolumes slowest page of 100'].push(slowest);
    out['ListVolumes unpaged'].push(await timed(() => s.client.listVolumes({})));
    out['ListSnapshots all pages of 100'].push(await timed(() => allPages((t) => s.client.listSnapshots({ max_entries: 100, starting_token: t }))));
  }
  if (some && s.snapshots) {
    for (let r = 0; r < Math.max(3, ROUNDS / 3); r++) {
      let snap = '';
      out.CreateSnapshot.push(await timed(async () => (snap = (await s.client.createSnapshot({ name: `probe-snap-${level}-${r}`, source_volume_id: some })).snapshot!.snapshot_id)));
      out.DeleteSnapshot.push(await timed(() => s.client.deleteSnapshot({ snapshot_id: snap })));
    }
  }
  // Last, as they change the pool behind the driver's back (its next read goes to the pool).
  for (let r = 0; s.bare && r < Math.max(3, ROUNDS / 3); r++) {
    const name = `bare-${level}-${r}`;
    out['bare create (same LV, --devices)'].push(await timed(() => s.bare!.create(name)));
    out['bare remove (same LV, --devices)'].push(await timed(() => s.bare!.remove(name)));
  }
  void snapshots;
  return Object.fromEntries(PROBES.map((p) => [p, out[p].length ? median(out[p]) : NaN])) as Record<Probe, number>;
}

interface Run {
  byLevel: Map<number, Record<Probe, number>>;
  fillRate: number;
  rss: Map<number, number>;
  floor?: { recordMs: number; sparseMs: number; createMs: number; createsPerSecond: number };
  cleanup(): Promise<void>;
}

/**
 * Steady state, as a controller that has served a while: each subject first answers WARMUP rounds of
 * the calls the probes make (on an empty pool, all removed again). A JIT-compiled server (and this
 * client) is several times slower on its first hundred calls of a kind than on later ones.
 */
const WARMUP = Number(process.env.BENCH_WARMUP ?? 200);
async function warmUp(s: Subject): Promise<void> {
  for (let r = 0; r < WARMUP; r++) {
    const id = await createNamed(s, `warm-${r}`);
    await s.client.controllerGetVolume({ volume_id: id });
    await s.client.getCapacity({ volume_capabilities: [cap], parameters: s.parameters });
    await s.client.listVolumes({ max_entries: 100 });
    await s.client.deleteVolume({ volume_id: id });
  }
}

async function measure(s: Subject): Promise<Run> {
  await warmUp(s);
  const ids: string[] = [];
  const snapshots: string[] = [];
  const byLevel = new Map<number, Record<Probe, number>>();
  const rss = new Map<number, number>();
  let fillRate = NaN;
  const floorDir = s.floorDir ? await FloorDir.make(s.floorDir) : undefined;
  let floor: Run['floor'];
  for (const level of LEVELS) {
    if (floorDir && level === Math.max(...LEVELS)) {
      // Just before the fill to N, as many bare durable creates with as many callers: the rate's floor.
      const parts = await floorDir.parts(ROUNDS);
      await settle();
      floor = { ...parts, createsPerSecond: await floorDir.rate(level - ids.length, CLIENTS) };
    }
    // Each fill starts from a disk with nothing dirty: the writeback of what ran before is not counted against it.
    await settle();
    const rate = await fill(s, ids, level);
    if (level === Math.max(...LEVELS)) fillRate = rate;
    while (s.snapshots && ids.length && snapshots.length < Math.min(SNAPSHOTS, ids.length)) {
      const i = snapshots.length;
      snapshots.push((await s.client.createSnapshot({ name: `keep-snap-${i}`, source_volume_id: ids[i % ids.length] })).snapshot!.snapshot_id);
    }
    byLevel.set(level, await probe(s, ids, snapshots, level, floorDir));
    rss.set(level, await rssMiB(s.pid));
    process.stderr.write(`${s.name}: ${level} volumes measured\n`);
  }
  // Emptying the pool one call at a time takes minutes on lvm; the figures are printed first.
  await floorDir?.remove();
  const cleanup = async () => {
    for (const snap of snapshots) await s.client.deleteSnapshot({ snapshot_id: snap });
    for (const id of ids) await s.client.deleteVolume({ volume_id: id });
  };
  return { byLevel, fillRate, rss, floor, cleanup };
}

function table(title: string, runs: Array<{ s: string; run: Run }>): string {
  const top = Math.max(...LEVELS);
  const lines = [`\n${title} (p50 ms; ${CLIENTS} clients filling, one probing; ${ROUNDS} rounds, after ${WARMUP} rounds of warm-up)`];
  const head = ['RPC'.padEnd(32), ...runs.flatMap(({ s }) => [...LEVELS.map((l) => `${s} N=${l}`.padStart(16)), `${s} ${top}/0`.padStart(14)]), 'target'.padStart(10)];
  lines.push(head.join(' '));
  for (const p of PROBES) {
    const cells = runs.flatMap(({ run }) => {
      const vals = LEVELS.map((l) => run.byLevel.get(l)?.[p] ?? NaN);
      const base = run.byLevel.get(LEVELS[0])?.[p] ?? NaN;
      const last = run.byLevel.get(top)?.[p] ?? NaN;
      return [...vals.map((v) => (Number.isNaN(v) ? '—' : v.toFixed(2)).padStart(16)), (Number.isNaN(base) || Number.isNaN(last) ? '—' : `${(last / base).toFixed(2)}x`).padStart(14)];
    });
    if (cells.every((c) => c.trim() === '—')) continue;
    lines.push([p.padEnd(32), ...cells, (TARGET[p] ?? (p.startsWith('bare') ? '' : '≤ 1.2x')).padStart(10)].join(' '));
  }
  lines.push(['fill rate to N (creates/s)'.padEnd(32), ...runs.flatMap(({ run }) => [...LEVELS.map((l) => (l === top ? run.fillRate.toFixed(0) : '').padStart(16)), ''.padStart(14)]), '≥ 400'.padStart(10)].join(' '));
  for (const { s, run } of runs) {
    const f = run.floor;
    if (!f) continue;
    const create = run.byLevel.get(top)?.CreateVolume ?? NaN;
    const bare = run.byLevel.get(top)?.['durable create floor (bare)'] ?? NaN;
    lines.push(`${s}: the disk's floor (bare calls, bench/durable-floor.ts), just before the fill to N=${top}: durable record ${f.recordMs.toFixed(2)} ms, sparse image ${f.sparseMs.toFixed(2)} ms, durable create ${f.createMs.toFixed(2)} ms p50; ${f.createsPerSecond.toFixed(0)} durable creates/s with ${CLIENTS} callers`);
    lines.push(`${s}: at N=${top}, CreateVolume p50 is ${(create / bare).toFixed(2)}x the bare durable create made beside it (target ≤ 2x); the fill's rate is ${((100 * run.fillRate) / f.createsPerSecond).toFixed(0)}% of the bare rate (target ≥ 50%)`);
  }
  lines.push(['driver RSS (MiB)'.padEnd(32), ...runs.flatMap(({ run }) => [...LEVELS.map((l) => (run.rss.get(l)?.toFixed(1) ?? '—').padStart(16)), ''.padStart(14)]), '≤ 80'.padStart(10)].join(' '));
  return lines.join('\n');
}

async function vpoolFile(): Promise<Subject> {
  const d = await startDriver({ args: ['--log-level', 'warn'] });
  return { name: 'vpool file', client: d.client, pid: d.proc.pid!, parameters: {}, volumeBytes: MiB, snapshots: true, floorDir: d.dir, stop: async () => {
    d.client.close();
    await d.stop();
    await rm(d.dir, { recursive: true, force: true });
  } };
}

async function vpoolLvm(): Promise<Subject> {
  const disks = await loopDisks(1, 8 * 1024 * MiB);
  const vg = uniqueVg('vbs');
  const init = await poolCmd('init', '--vg', vg, disks.devices[0]);
  if (init.code !== 0) throw new Error(`pool init: ${init.stderr}`);
  const d = await startDriver({ args: ['--log-level', 'warn', '--backend', 'lvm', '--vg', vg] });
  const lvm = (cmd: string, args: string[]) => execFileP(cmd, [...(deviceMapperAvailable() ? [] : ['--config', 'global{activation=0}']), '--devices', disks.devices.join(','), '-y', ...args]);
  const bare = {
    create: (name: string) => lvm('lvcreate', [...(deviceMapperAvailable() ? [] : ['-an', '-Zn']), '-L', `${4 * MiB}b`, '-n', name, '--addtag', 'vpool.kind=bare', vg]),
    remove: (name: string) => lvm('lvremove', [`${vg}/${name}`]),
  };
  return { name: 'vpool lvm', client: d.client, pid: d.proc.pid!, parameters: {}, volumeBytes: 4 * MiB, snapshots: deviceMapperAvailable(), bare, stop: async () => {
    d.client.close();
    await d.stop();
    await poolCmd('destroy', '--vg', vg, '--force');
    await forgetVg(vg, disks.devices);
    await disks.release();
    await rm(d.dir, { recursive: true, force: true });
  } };
}

async function vpoolLibvirt(): Promise<Subject> {
  await startLibvirt();
  const pool = await dirPool('vpool-scale');
  const d = await startDriver({ args: ['--log-level', 'warn', '--backend', 'libvirt', '--libvirt-pool', pool.name, '--hypervisor', 'bench'] });
  return { name: 'vpool libvirt', client: d.client, pid: d.proc.pid!, parameters: {}, volumeBytes: MiB, snapshots: true, stop: async () => {
    d.client.close();
    await d.stop();
    await pool.remove();
    await rm(d.dir, { recursive: true, force: true });
  } };
}

/** host-path v1.15.0 with simulated capacity, so that GetCapacity counts its volumes. */
async function hostPath(bin: string): Promise<Subject> {
  const hp = await startHostPath(bin, ['--capacity', 'fast=10Ti']);
  return { name: 'host-path', client: hp.client, pid: hp.pid, parameters: { kind: 'fast' }, volumeBytes: MiB, snapshots: true, stop: hp.stop };
}

async function main(): Promise<void> {
  const which = process.argv.slice(2).length ? process.argv.slice(2) : ['file'];
  const peerBin = process.env.VPOOL_BENCH_HOSTPATH;
  for (const backend of which) {
    const runs: Array<{ s: string; run: Run }> = [];
    const ours = { file: vpoolFile, lvm: vpoolLvm, libvirt: vpoolLibvirt }[backend];
    if (!ours) throw new Error(`no backend ${backend} (file, lvm, libvirt)`);
    const subjects: Array<() => Promise<Subject>> = [ours, ...(peerBin && backend === 'file' ? [() => hostPath(peerBin)] : [])];
    const opened: Subject[] = [];
    try {
      // One subject at a time, each left full until the table is printed.
      for (const open of subjects) {
        const s = await open();
        opened.push(s);
        runs.push({ s: s.name, run: await measure(s) });
      }
      const notes = [
        ...(backend === 'file' && !peerBin ? ['host-path not measured: set VPOOL_BENCH_HOSTPATH to a hostpathplugin binary'] : []),
        ...(backend === 'lvm' && !deviceMapperAvailable() ? ['metadata only: no device-mapper here, so no snapshots'] : []),
      ];
      console.log(table(`Controller RPCs as the ${backend} pool fills${notes.length ? ` (${notes.join('; ')})` : ''}`, runs));
      for (const { run } of runs) await run.cleanup();
    } finally {
      for (const s of opened) await s.stop();
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
