// Controller side of the lvm backend beside bare lvcreate/lvremove, on loop-device PVs of this host
// (activation disabled where the kernel has no device-mapper). Not a test: it prints a table.
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { deviceMapperAvailable } from '../src/pool/lvm/lvm-cli.js';
import { blockCap } from '../test/helpers/csi.js';
import { finish, startDriver } from '../test/helpers/driver.js';
import { forgetVg, loopDisks, poolCmd, uniqueVg } from '../test/helpers/lvm.js';
import { median, timed } from './measure.js';

const execFileP = promisify(execFile);
const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 30);
const SIZE = 64 * 1024 * 1024;


async function main(): Promise<void> {
  const disks = await loopDisks(2, 2 * 1024 ** 3);
  const vg = uniqueVg('vpbench');
  try {
    const init = await poolCmd('init', '--vg', vg, ...disks.devices);
    if (init.code !== 0) throw new Error(init.stderr);
    const d = await startDriver({ args: ['--backend', 'lvm', '--vg', vg, '--log-level', 'warn'] });
    const act = deviceMapperAvailable() ? [] : ['--config', 'global{activation=0}'];
    const rawCreate = deviceMapperAvailable() ? [] : ['-an', '-Zn'];
    const res = { create: [] as number[], del: [] as number[], lvcreate: [] as number[], lvremove: [] as number[], scopedCreate: [] as number[], scopedRemove: [] as number[], createAfter: [] as number[], delAfter: [] as number[] };
    // The bare command as an operator types it scans every block device of the host; with --devices
    // it scans the VG's PVs only, as the driver does: the floor no wrapper can beat.
    const scoped = ['--devices', disks.devices.join(',')];
    const ours = async (i: number, into: { create: number[]; del: number[] }) => {
      let id = '';
      into.create.push(await timed(async () => (id = (await d.client.createVolume({ name: `b-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()] })).volume!.volume_id)));
      into.del.push(await timed(() => d.client.deleteVolume({ volume_id: id })));
    };
    // Each series on its own, as a node runs: the driver the only one changing its VG.
    for (let i = 0; i < ITERATIONS; i++) await ours(i, res);
    for (let i = 0; i < ITERATIONS; i++) {
      res.lvcreate.push(await timed(() => execFileP('lvcreate', [...act, '-y', ...rawCreate, '-L', `${SIZE}b`, '-n', `raw${i}`, '--addtag', 'vpool.kind=raw', vg])));
      res.lvremove.push(await timed(() => execFileP('lvremove', [...act, '-y', `${vg}/raw${i}`])));
    }
    for (let i = 0; i < ITERATIONS; i++) {
      res.scopedCreate.push(await timed(() => execFileP('lvcreate', [...act, ...scoped, '-y', ...rawCreate, '-L', `${SIZE}b`, '-n', `raw${i}`, '--addtag', 'vpool.kind=raw', vg])));
      res.scopedRemove.push(await timed(() => execFileP('lvremove', [...act, ...scoped, '-y', `${vg}/raw${i}`])));
    }
    // And the worst case: another process changed the VG just before each call, so the held metadata is read again.
    for (let i = 0; i < ITERATIONS; i++) {
      await execFileP('lvcreate', [...act, ...scoped, '-y', ...rawCreate, '-L', `${SIZE}b`, '-n', `other${i}`, vg]);
      await execFileP('lvremove', [...act, ...scoped, '-y', `${vg}/other${i}`]);
      await ours(ITERATIONS + i, { create: res.createAfter, del: res.delAfter });
    }
    const line = (what: string, mine: number[], bare: string, theirs: number[], target = '') =>
      console.log(`${what.padEnd(44)} ${median(mine).toFixed(1).padStart(7)}   ${bare.padEnd(24)} ${median(theirs).toFixed(1).padStart(7)}   ratio ${(median(mine) / median(theirs)).toFixed(2)}${target}`);
    console.log(`lvm backend (thick, ${SIZE >> 20} MiB, ${ITERATIONS} iterations, activation ${deviceMapperAvailable() ? 'on' : 'off'}), medians in ms`);
    line('CreateVolume', res.create, 'bare lvcreate', res.lvcreate);
    line('DeleteVolume', res.del, 'bare lvremove', res.lvremove);
    line('CreateVolume', res.create, 'lvcreate --devices PVs', res.scopedCreate, '   (target 1.3)');
    line('DeleteVolume', res.del, 'lvremove --devices PVs', res.scopedRemove, '   (target 1.3)');
    line('CreateVolume, VG just changed by another', res.createAfter, 'lvcreate --devices PVs', res.scopedCreate);
    line('DeleteVolume, VG just changed by another', res.delAfter, 'lvremove --devices PVs', res.scopedRemove);
    await finish(d);
    await poolCmd('destroy', '--vg', vg, '--force');
  } finally {
    await forgetVg(vg, disks.devices);
    await disks.release();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
