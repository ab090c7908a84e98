// Runs INSIDE the QEMU VM (make bench-vm): the lvm pool's SnapshotMetadata on a 10 GiB thin volume
// with 1% changed between two snapshots, against reading the whole volume as a backup without
// changed-block tracking must. TCG emulation makes every figure slow; the ratios are what to read.
// Not a test: it prints a table.
import { execFile, execFileSync } from 'node:child_process';
import { open } from 'node:fs/promises';
import { promisify } from 'node:util';
import { blockCap } from '../test/helpers/csi.js';
import { BIN, finish, startDriver } from '../test/helpers/driver.js';
import { timed } from './measure.js';

const execFileP = promisify(execFile);
const VG = 'cbtbench';
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const SIZE = 10 * GiB;

async function main(): Promise<void> {
  execFileSync('modprobe', ['-a', 'dm_thin_pool', 'dm_snapshot']);
  execFileSync(BIN, ['pool', 'init', '--vg', VG, '--thin-pool', 'thin', '--thin-size', '80%', '/dev/disk/by-id/virtio-data0', '/dev/disk/by-id/virtio-data1']);
  const d = await startDriver({ args: ['--backend', 'lvm', '--vg', VG, '--overprovision-ratio', '10', '--log-level', 'warn'] });
  try {
    const id = (await d.client.createVolume({ name: 'cbt', capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: { type: 'thin' } })).volume!.volume_id;
    const dev = `/dev/${VG}/${id}`;
    execFileSync('lvchange', ['-ay', `${VG}/${id}`]);
    // 1 GiB of data: 1 MiB at every 10 MiB.
    const fh = await open(dev, 'r+');
    const buf = Buffer.alloc(MiB, 0xa5);
    for (let at = 0; at < SIZE; at += 10 * MiB) await fh.write(buf, 0, MiB, at);
    await fh.sync();
    const s1 = (await d.client.createSnapshot({ name: 'cbt-1', source_volume_id: id })).snapshot!;
    // 1% changed: 1,638 scattered 64 KiB writes (102 MiB), a fixed stride so every run is the same.
    const small = Buffer.alloc(64 * 1024, 0x5a);
    let changed = 0;
    for (let i = 0; i < 1638; i++) {
      const at = ((i * 6_553_733) % (SIZE / (64 * 1024))) * 64 * 1024;
      await fh.write(small, 0, small.length, at);
      changed += small.length;
    }
    await fh.sync();
    await fh.close();
    const s2 = (await d.client.createSnapshot({ name: 'cbt-2', source_volume_id: id })).snapshot!;

    let deltaBytes = 0;
    let deltaRanges = 0;
    const deltaMs = await timed(async () => {
      const msgs = await d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: '0', max_results: 0 });
      for (const m of msgs) for (const b of m.block_metadata) (deltaBytes += Number(b.size_bytes)), deltaRanges++;
    });
    let allocBytes = 0;
    let allocRanges = 0;
    const allocMs = await timed(async () => {
      const msgs = await d.client.getMetadataAllocated({ snapshot_id: s1.snapshot_id, starting_offset: '0', max_results: 0 });
      for (const m of msgs) for (const b of m.block_metadata) (allocBytes += Number(b.size_bytes)), allocRanges++;
    });
    // What the tools read: the pool's metadata, at most its used blocks (4 KiB each).
    const status = execFileSync('dmsetup', ['status', `${VG}-thin-tpool`], { encoding: 'utf8' }).split(' ');
    const metaUsed = Number(status[4]!.split('/')[0]) * 4096;

    // Without changed-block tracking: both snapshots read whole (activated for it, as thin snapshots skip activation).
    let readMs = 0;
    for (const s of [s1, s2]) {
      execFileSync('lvchange', ['-ay', '-K', `${VG}/${s.snapshot_id}`]);
      readMs += await timed(() => execFileP('dd', [`if=/dev/${VG}/${s.snapshot_id}`, 'of=/dev/null', 'bs=4M', 'iflag=direct', 'status=none']));
      execFileSync('lvchange', ['-an', `${VG}/${s.snapshot_id}`]);
    }
    const f = (n: number) => `${(n / MiB).toFixed(1)} MiB`;
    console.log(`lvm thin, 10 GiB volume, 1 GiB written, ${f(changed)} changed between two snapshots (in the TCG VM):`);
    console.log(`  GetMetadataDelta     ${deltaMs.toFixed(0)} ms, ${deltaRanges} ranges, ${f(deltaBytes)} (x${(deltaBytes / changed).toFixed(2)} the bytes changed); reads at most the pool metadata in use, ${f(metaUsed)}`);
    console.log(`  GetMetadataAllocated ${allocMs.toFixed(0)} ms, ${allocRanges} ranges, ${f(allocBytes)} of ${f(SIZE)}`);
    console.log(`  reading both snapshots whole (dd, O_DIRECT): ${readMs.toFixed(0)} ms, ${f(2 * SIZE)}`);
    console.log(`  delta / whole read: ${(deltaMs / readMs).toFixed(4)} of the time, ${(metaUsed / (2 * SIZE)).toFixed(5)} of the bytes`);
    await d.client.deleteSnapshot({ snapshot_id: s2.snapshot_id });
    await d.client.deleteSnapshot({ snapshot_id: s1.snapshot_id });
    execFileSync('lvchange', ['-an', `${VG}/${id}`]);
    await d.client.deleteVolume({ volume_id: id });
  } finally {
    await finish(d);
    execFileSync(BIN, ['pool', 'destroy', '--vg', VG]);
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
