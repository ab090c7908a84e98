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
    const res = { create: [] as number[], del: [] as number[], lvcreate: [] as number[], lvremove: [] as number[], scopedCreate: [] as number[], scopedRemove: [] as number[] };
    // The bare command as an operator types it scans every block device of the host; with --devices
    // it scans the VG's PVs only, as the driver does: the floor no wrapper can beat.
    const scoped = ['--devices', disks.devices.join(',')];
    for (let i = 0; i < ITERATIONS; i++) {
      let id = '';
      res.create.push(await timed(async () => (id = (await d.client.createVolume({ name: `b-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()] })).volume!.volume_id)));
      res.del.push(await timed(() => d.client.deleteVolume({ volume_id: id })));
      res.lvcreate.push(await timed(() => execFileP('lvcreate', [...act, '-y', ...rawCreate, '-L', `${SIZE}b`, '-n', `raw${i}`, '--addtag', 'vpool.kind=raw', vg])));
      res.lvremove.push(await timed(() => execFileP('lvremove', [...act, '-y', `${vg}/raw${i}`])));
      res.scopedCreate.push(await timed(() => execFileP('lvcreate', [...act, ...scoped, '-y', ...rawCreate, '-L', `${SIZE}b`, '-n', `raw${i}`, '--addtag', 'vpool.kind=raw', vg])));
      res.scopedRemove.push(await timed(() => execFileP('lvremove', [...act, ...scoped, '-y', `${vg}/raw${i}`])));
    }
    console.log(`lvm backend (thick, ${SIZE >> 20} MiB, ${ITERATIONS} iterations, activation ${deviceMapperAvailable() ? 'on' : 'off'}), medians in ms`);
    console.log(`CreateVolume  ${median(res.create).toFixed(1).padStart(7)}   bare lvcreate ${median(res.lvcreate).toFixed(1).padStart(7)}   ratio ${(median(res.create) / median(res.lvcreate)).toFixed(2)}`);
    console.log(`DeleteVolume  ${median(res.del).toFixed(1).padStart(7)}   bare lvremove ${median(res.lvremove).toFixed(1).padStart(7)}   ratio ${(median(res.del) / median(res.lvremove)).toFixed(2)}`);
    console.log(`CreateVolume  ${median(res.create).toFixed(1).padStart(7)}   lvcreate --devices PVs ${median(res.scopedCreate).toFixed(1).padStart(7)}   ratio ${(median(res.create) / median(res.scopedCreate)).toFixed(2)}   (target 1.3)`);
    console.log(`DeleteVolume  ${median(res.del).toFixed(1).padStart(7)}   lvremove --devices PVs ${median(res.scopedRemove).toFixed(1).padStart(7)}   ratio ${(median(res.del) / median(res.scopedRemove)).toFixed(2)}   (target 1.3)`);
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
