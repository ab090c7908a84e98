// The raw block lifecycle (create, stage, publish, unpublish, unstage, delete) as the kubelet and the
// provisioner drive it for a KubeVirt disk, on the file pool; beside it, in the same run, the
// kubernetes-csi host-path driver when VPOOL_BENCH_HOSTPATH names a hostpathplugin binary built by
// hand (never part of this project). host-path attaches its loop device at publish and stages nothing,
// so its stage is a bookkeeping call. Not a test: it asserts nothing and prints a table.
import { mkdir, rm } from 'node:fs/promises';
import path from 'node:path';
import type { CsiClient } from '../src/csi/client.js';
import { blockCap } from '../test/helpers/csi.js';
import { startDriver } from '../test/helpers/driver.js';
import { startHostPath } from './host-path.js';
import { median, timed } from './measure.js';

const VOLUMES = Number(process.env.BENCH_VOLUMES ?? 50);
const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const MiB = 1024 * 1024;
const STEPS = ['CreateVolume', 'NodeStageVolume', 'NodePublishVolume', 'NodeUnpublishVolume', 'NodeUnstageVolume', 'DeleteVolume'] as const;
type Step = (typeof STEPS)[number];

interface Subject {
  name: string;
  client: CsiClient;
  dir: string;
  parameters: Record<string, string>;
  stop(): Promise<void>;
}

async function lifecycle(s: Subject, run: number, out: Record<Step, number[]>): Promise<number> {
  const cap = blockCap();
  const t = performance.now();
  for (let i = 0; i < VOLUMES; i++) {
    const staging = path.join(s.dir, 'mnt', 'staging', `r${run}-${i}`);
    const podDir = path.join(s.dir, 'mnt', 'pods', `r${run}-${i}`);
    await mkdir(staging, { recursive: true });
    await mkdir(podDir, { recursive: true });
    const target = path.join(podDir, 'disk');
    let id = '';
    out.CreateVolume.push(await timed(async () => (id = (await s.client.createVolume({ name: `blk-${run}-${i}`, capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [cap], parameters: s.parameters })).volume!.volume_id)));
    out.NodeStageVolume.push(await timed(() => s.client.nodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap })));
    out.NodePublishVolume.push(await timed(() => s.client.nodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap })));
    out.NodeUnpublishVolume.push(await timed(() => s.client.nodeUnpublishVolume({ volume_id: id, target_path: target })));
    out.NodeUnstageVolume.push(await timed(() => s.client.nodeUnstageVolume({ volume_id: id, staging_target_path: staging })));
    out.DeleteVolume.push(await timed(() => s.client.deleteVolume({ volume_id: id })));
  }
  return (performance.now() - t) / 1000;
}

async function vpool(): Promise<Subject> {
  const d = await startDriver({ args: ['--log-level', 'warn'] });
  return { name: 'vpool file', client: d.client, dir: d.dir, parameters: {}, stop: async () => {
    d.client.close();
    await d.stop();
    await rm(d.dir, { recursive: true, force: true });
  } };
}

async function hostPath(bin: string): Promise<Subject> {
  const hp = await startHostPath(bin);
  return { name: 'host-path', client: hp.client, dir: hp.dir, parameters: {}, stop: hp.stop };
}

async function main(): Promise<void> {
  const peer = process.env.VPOOL_BENCH_HOSTPATH;
  const rows: Array<{ name: string; steps: Record<Step, number>; pairs: { in: number; out: number }; totals: number[] }> = [];
  for (const open of [vpool, ...(peer ? [() => hostPath(peer)] : [])]) {
    const s = await open();
    try {
      const out = Object.fromEntries(STEPS.map((k) => [k, [] as number[]])) as Record<Step, number[]>;
      const totals: number[] = [];
      for (let r = 0; r < RUNS; r++) totals.push(await lifecycle(s, r, out));
      const sum = (a: Step, b: Step) => median(out[a].map((v, i) => v + out[b][i]));
      rows.push({ name: s.name, steps: Object.fromEntries(STEPS.map((k) => [k, median(out[k])])) as Record<Step, number>, pairs: { in: sum('NodeStageVolume', 'NodePublishVolume'), out: sum('NodeUnpublishVolume', 'NodeUnstageVolume') }, totals });
    } finally {
      await s.stop();
    }
  }
  console.log(`\nRaw block lifecycle, ${VOLUMES} volumes of 16 MiB one after another, ${RUNS} runs (p50 ms per step; whole runs in s)${peer ? '' : ' (host-path not measured: set VPOOL_BENCH_HOSTPATH)'}`);
  console.log(['step'.padEnd(22), ...rows.map((r) => r.name.padStart(14))].join(' '));
  for (const k of STEPS) console.log([k.padEnd(22), ...rows.map((r) => r.steps[k].toFixed(2).padStart(14))].join(' '));
  // host-path attaches at publish and detaches at unpublish: the node's whole way in and out compares like for like.
  console.log(['stage + publish'.padEnd(22), ...rows.map((r) => r.pairs.in.toFixed(2).padStart(14))].join(' '));
  console.log(['unpublish + unstage'.padEnd(22), ...rows.map((r) => r.pairs.out.toFixed(2).padStart(14))].join(' '));
  console.log(['whole lifecycle (s)'.padEnd(22), ...rows.map((r) => r.totals.map((t) => t.toFixed(2)).join('/').padStart(14))].join(' '));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
