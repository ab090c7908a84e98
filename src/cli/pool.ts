import type { Command } from 'commander';
import type { LvmCli } from '../pool/lvm/lvm-cli.js';
import type { PoolStatus } from '../pool/lvm/pool-admin.js';
import { chooseFormat, printList } from './view/output.js';
import { lvmPoolView } from './view/admin-views.js';

/** The lvm code, loaded by the pool commands only. */
async function lvm(): Promise<{ cli: LvmCli; admin: typeof import('../pool/lvm/pool-admin.js') }> {
  const [{ deviceMapperAvailable, LvmCli }, admin] = await Promise.all([import('../pool/lvm/lvm-cli.js'), import('../pool/lvm/pool-admin.js')]);
  return { cli: new LvmCli({ activation: deviceMapperAvailable() }), admin };
}


/** `vpool-csi pool init|extend|status|destroy`: the LVM pool the lvm backend serves volumes from. */
export function addPoolCommands(program: Command): void {
  const pool = program.command('pool').description('build, grow, inspect and remove an LVM pool');
  pool
    .command('init')
    .description('make DEVICEs into a tagged volume group (and a thin pool)')
    .requiredOption('--vg <name>', 'volume group name')
    .option('--thin-pool <name>', 'create a thin pool of this name')
    .option('--thin-size <size>', 'thin pool size: a share of the VG (90%) or a size (100Gi)', '90%')
    .option('--wipe', 'erase existing signatures on the devices (destroys their data)')
    .option('--tier <name>', 'the devices\' tier (fast, slow, ...): a StorageClass with tier: <name> places its volumes on them')
    .argument('<device...>')
    .action(async (devices: string[], o: { vg: string; thinPool?: string; thinSize: string; wipe?: boolean; tier?: string }) => {
      const { cli, admin } = await lvm();
      console.log(await admin.initPool(cli, { vg: o.vg, devices, thinPool: o.thinPool, thinSize: o.thinSize, wipe: !!o.wipe, tier: o.tier }));
    });
  pool
    .command('extend')
    .description('add DEVICEs to the pool')
    .requiredOption('--vg <name>', 'volume group name')
    .option('--grow-thin-pool', 'then give the thin pool all the free space of the VG')
    .option('--wipe', 'erase existing signatures on the new devices')
    .option('--tier <name>', 'the devices\' tier (devices already in the pool may be named to change theirs)')
    .argument('<device...>')
    .action(async (devices: string[], o: { vg: string; growThinPool?: boolean; wipe?: boolean; tier?: string }) => {
      const { cli, admin } = await lvm();
      console.log(await admin.extendPool(cli, { vg: o.vg, devices, wipe: !!o.wipe, growThinPool: !!o.growThinPool, tier: o.tier }));
    });
  pool
    .command('status')
    .description('devices, size, free space, thin pool fill, volumes')
    .option('--vg <name>', 'one pool (default: every vpool pool on this host)')
    .option('-o, --output <format>', 'table, wide, json, yaml or name (default: table on a terminal, json otherwise)')
    .option('--no-headers', 'a table without its header line')
    .action(async (o: { vg?: string; output?: string; headers: boolean }) => {
      const format = chooseFormat(o.output, !!process.stdout.isTTY);
      const { cli, admin } = await lvm();
      const vgs = o.vg ? [o.vg] : await admin.listPools(cli);
      const all: PoolStatus[] = await Promise.all(vgs.map((vg) => admin.poolStatus(cli, vg)));
      const printed = await printList(lvmPoolView(), all, o.vg ? all[0] : all, { format, headers: o.headers, width: process.stdout.isTTY ? process.stdout.columns : undefined, now: Date.now() }, false);
      process.stdout.write(printed.stdout);
      process.stderr.write(printed.stderr);
    });
  pool
    .command('destroy')
    .description('remove the pool and release its devices')
    .requiredOption('--vg <name>', 'volume group name')
    .option('--force', 'also destroy the volumes and snapshots it still holds')
    .action(async (o: { vg: string; force?: boolean }) => {
      const { cli, admin } = await lvm();
      console.log(await admin.destroyPool(cli, { vg: o.vg, force: !!o.force }));
    });
}
