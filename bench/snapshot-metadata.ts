// Changed-block tracking on the file pool: GetMetadataDelta between two snapshots of a large volume with
// 1% of it changed, beside reading both snapshots whole (what a backup without the service compares),
// and GetMetadataAllocated of a sparse volume beside its size. On XFS (reflinks: the delta from the
// extent maps) and on ext4 (the delta from comparing the data). Not a test: it prints a table.
// BENCH_GIB sets the volume's size (10 by default).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import type { GetMetadataAllocatedResponse__Output } from '../gen/csi/v1/GetMetadataAllocatedResponse.js';
import { blockCap, createVolume, paths, stageAndPublish, unpublishAndUnstage } from '../test/helpers/csi.js';
import { writeAt } from '../test/helpers/data.js';
import { finish, pattern, startDriver, type Driver } from '../test/helpers/driver.js';
import { timed } from './measure.js';

const execFileP = promisify(execFile);
const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const SIZE = Number(process.env.BENCH_GIB ?? 10) * GiB;

async function readBytes(pid: number): Promise<number> {
  return Number(/^read_bytes: (\d+)$/m.exec(await readFile(`/proc/${pid}/io`, 'utf8'))![1]);
}

const tuples = (ms: GetMetadataAllocatedResponse__Output[]) => ms.reduce((n, m) => n + m.block_metadata.length, 0);
const bytesIn = (ms: GetMetadataAllocatedResponse__Output[]) => ms.reduce((n, m) => n + m.block_metadata.reduce((k, b) => k + Number(b.size_bytes), 0), 0);

/** A fixed pseudo-random sequence, the same in every run. */
function* offsets(seed: number, count: number, span: number, align: number): Generator<number> {
  let x = seed;
  for (let i = 0; i < count; i++) {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    yield Math.floor((x / 2 ** 31) * (span / align)) * align;
  }
}

async function row(fs: 'xfs' | 'ext4'): Promise<string[]> {
  const dir = await mkdtemp(`/var/tmp/vpool-bench-${fs}-`);
  const mnt = path.join(dir, 'mnt');
  const img = path.join(dir, 'fs.img');
  await execFileP('truncate', ['-s', String(3 * SIZE), img]);
  await execFileP(`mkfs.${fs}`, fs === 'xfs' ? ['-q', '-m', 'reflink=1', img] : ['-q', '-F', img]);
  await execFileP('mkdir', ['-p', mnt]);
  await execFileP('mount', ['-o', 'loop', img, mnt]);
  let d: Driver | undefined;
  try {
    d = await startDriver({ args: ['--log-level', 'warn'], dir: await mkdtemp(path.join(mnt, 'drv-')) });
    const cap = blockCap();
    const vol = await createVolume(d, `bench-${fs}`, SIZE, cap);
    const p = await paths(d, vol.volume_id);
    await stageAndPublish(d, vol.volume_id, p, cap);
    // 10% of the volume holds data (1 MiB writes), then 1% of it changes (64 KiB writes) between the snapshots.
    for (const at of offsets(1, Math.floor((SIZE * 0.1) / MiB), SIZE, MiB)) await writeAt(p.target, at, pattern(`a${at}`, MiB));
    const s1 = (await d.client.createSnapshot({ name: `b-${fs}-1`, source_volume_id: vol.volume_id })).snapshot!;
    let changed = 0;
    for (const at of offsets(2, Math.floor((SIZE * 0.01) / (64 * 1024)), SIZE, 64 * 1024)) {
      await writeAt(p.target, at, pattern(`b${at}`, 64 * 1024));
      changed += 64 * 1024;
    }
    const s2 = (await d.client.createSnapshot({ name: `b-${fs}-2`, source_volume_id: vol.volume_id })).snapshot!;
    await unpublishAndUnstage(d, vol.volume_id, p);
    await execFileP('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);

    const pid = d.proc.pid!;
    let delta: GetMetadataAllocatedResponse__Output[] = [];
    const r0 = await readBytes(pid);
    const deltaMs = await timed(async () => (delta = await d!.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: '0', max_results: 0 })));
    const deltaRead = (await readBytes(pid)) - r0;
    let allocated: GetMetadataAllocatedResponse__Output[] = [];
    const allocMs = await timed(async () => (allocated = await d!.client.getMetadataAllocated({ snapshot_id: s1.snapshot_id, starting_offset: '0', max_results: 0 })));

    // The bare alternative: both snapshots read whole, around the page cache.
    await execFileP('sh', ['-c', 'sync; echo 3 > /proc/sys/vm/drop_caches']);
    const images = [s1, s2].map((s) => path.join(d!.poolDir, 'snapshots', `${s.snapshot_id}.img`));
    const fullMs = await timed(async () => {
      for (const i of images) await execFileP('dd', [`if=${i}`, 'of=/dev/null', 'bs=4M', 'iflag=direct'], { maxBuffer: 1 << 20 });
    });

    for (const s of [s1, s2]) await d.client.deleteSnapshot({ snapshot_id: s.snapshot_id });
    await d.client.deleteVolume({ volume_id: vol.volume_id });
    const gib = (b: number) => (b / GiB).toFixed(2);
    return [
      `${fs.padEnd(5)} GetMetadataDelta        ${deltaMs.toFixed(0).padStart(8)} ms  read ${gib(deltaRead).padStart(6)} GiB  ${tuples(delta)} ranges, ${gib(bytesIn(delta))} GiB for ${gib(changed)} GiB changed (x${(bytesIn(delta) / changed).toFixed(2)})`,
      `${fs.padEnd(5)} both snapshots read     ${fullMs.toFixed(0).padStart(8)} ms  read ${gib(2 * SIZE).padStart(6)} GiB  (dd iflag=direct)   ratio ${(deltaMs / fullMs).toFixed(3)}`,
      `${fs.padEnd(5)} GetMetadataAllocated    ${allocMs.toFixed(0).padStart(8)} ms  ${tuples(allocated)} ranges, ${gib(bytesIn(allocated))} GiB of ${gib(SIZE)} GiB`,
    ];
  } finally {
    if (d) await finish(d);
    await execFileP('umount', [mnt]).catch(() => undefined);
    await rm(dir, { recursive: true, force: true });
  }
}

for (const fs of ['xfs', 'ext4'] as const) for (const line of await row(fs)) console.log(line);
