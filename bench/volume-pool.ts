// VolumePools and orphan checks beside what they wrap: the node agent building and extending a pool
// (VolumePool written → status written, through the FAKE API server's watch) against bare
// pvcreate+vgcreate / pvcreate+vgextend; a reconcile pass with nothing to do against the three lvm
// reports it must read; an orphan check against listing the pool alone. Loop-device PVs on this
// host (activation disabled where the kernel has no device-mapper). Not a test: it prints a table.
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import { reconcileOrphans } from '../src/cluster/orphans.js';
import { PoolAgent } from '../src/cluster/pool-agent.js';
import { reconcileLvmPool } from '../src/cluster/pool-reconcile.js';
import { poolSettings, type VolumePool } from '../src/cluster/volume-pool.js';
import { TOPOLOGY_KEY } from '../src/driver/context.js';
import { idFor } from '../src/ids.js';
import { FilePool } from '../src/pool/file/file-pool.js';
import { deviceMapperAvailable, LvmCli } from '../src/pool/lvm/lvm-cli.js';
import type { KObject } from '../test/helpers/fake-apiserver.js';
import { startFakeCluster } from '../test/helpers/kube.js';
import { forgetVg, loopDisks, uniqueVg } from '../test/helpers/lvm.js';
import { ratioRow, timed } from './measure.js';

const execFileP = promisify(execFile);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 10);
const ORPHAN_VOLUMES = 200;
const act = deviceMapperAvailable() ? [] : ['--config', 'global{activation=0}'];

async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setTimeout(r, 1));
}

async function main(): Promise<void> {
  const { fake, kube } = await startFakeCluster();
  const disks = await loopDisks(3, 256 * 1024 * 1024);
  const lvm = new LvmCli({ activation: deviceMapperAvailable() });
  const agent = new PoolAgent(kube, { node: 'bench', lvm, resyncMs: 3_600_000 });
  fake.create('nodes', { metadata: { name: 'bench' } });
  await agent.start();
  const [a, b, c] = disks.devices;
  const r = { build: [] as number[], vgcreate: [] as number[], extend: [] as number[], vgextend: [] as number[], pass: [] as number[], reports: [] as number[] };
  try {
    for (let i = 0; i < ITERATIONS; i++) {
      const vg = uniqueVg('vpb');
      const generation = (g: number) => () => ((fake.get('volumepools', vg) as unknown as VolumePool | undefined)?.status?.nodes?.[0]?.observedGeneration ?? 0) >= g;
      r.build.push(await timed(async () => {
        fake.create('volumepools', { apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name: vg }, spec: { backend: 'lvm', devices: [a, b] } } as KObject);
        await until(generation(1));
      }));
      r.extend.push(await timed(async () => {
        fake.update('volumepools', vg, (o) => void ((o.spec as { devices: string[] }).devices = [a, b, c]));
        await until(generation(2));
      }));
      const settings = poolSettings(fake.get('volumepools', vg) as unknown as VolumePool);
      r.pass.push(await timed(() => reconcileLvmPool(lvm, settings)));
      r.reports.push(await timed(() => Promise.all([execFileP('vgs', [...act, '--reportformat', 'json']), execFileP('pvs', [...act, '--reportformat', 'json']), execFileP('lvs', [...act, '--reportformat', 'json', vg])])));
      fake.delete('volumepools', vg);
      await forgetVg(vg, disks.devices);
      const raw = uniqueVg('vpr');
      r.vgcreate.push(await timed(async () => {
        await execFileP('pvcreate', [...act, '-y', a, b]);
        await execFileP('vgcreate', [...act, '-y', '--addtag', 'vpool.pool', raw, a, b]);
      }));
      r.vgextend.push(await timed(async () => {
        await execFileP('pvcreate', [...act, '-y', c]);
        await execFileP('vgextend', [...act, '-y', raw, c]);
      }));
      await forgetVg(raw, disks.devices);
    }
  } finally {
    await agent.stop();
    await disks.release();
  }

  // Orphans: a file pool of ORPHAN_VOLUMES volumes, all but one named by a PV.
  const dir = await mkdtemp('/var/tmp/vpool-bench-orphans-');
  const pool = await FilePool.open(dir, 0, { sweep: false });
  for (let i = 0; i < ORPHAN_VOLUMES; i++) {
    const v = await pool.createVolume({ id: idFor('vol', `pvc-${i}`), name: `pvc-${i}`, capacityBytes: 1024 * 1024, parameters: {} });
    if (i) fake.create('persistentvolumes', { metadata: { name: `pv-${i}` }, spec: { csi: { driver: 'vpool.csi.dev', volumeHandle: v.id }, nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: TOPOLOGY_KEY, operator: 'In', values: ['bench'] }] }] } } } });
  }
  const o = { check: [] as number[], list: [] as number[] };
  for (let i = 0; i < ITERATIONS; i++) {
    o.check.push(await timed(async () => {
      const rep = await reconcileOrphans(pool, kube, { driver: 'vpool.csi.dev', node: 'bench', topologyKey: TOPOLOGY_KEY, topologyValue: 'bench', dryRun: true, gracePeriodMs: 0 });
      if (rep.volumes.length !== 1) throw new Error(`expected one orphan, found ${rep.volumes.length}`);
    }));
    o.list.push(await timed(() => Promise.all([pool.listVolumes(), pool.listSnapshots()])));
  }
  await rm(dir, { recursive: true, force: true });
  await fake.stop();

  console.log(`VolumePool agent and orphan check (${ITERATIONS} iterations, 256 MiB loop PVs, activation ${deviceMapperAvailable() ? 'on' : 'off'}), medians in ms`);
  console.log(ratioRow('build (2 devices)', r.build, 'pvcreate + vgcreate', r.vgcreate));
  console.log(ratioRow('extend (+1 device)', r.extend, 'pvcreate + vgextend', r.vgextend));
  console.log(ratioRow('reconcile, nothing to do', r.pass, 'vgs + pvs + lvs (parallel)', r.reports));
  console.log(ratioRow(`orphan check, ${ORPHAN_VOLUMES} vols`, o.check, 'list the pool alone', o.list));
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
