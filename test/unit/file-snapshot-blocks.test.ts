import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { open, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { SnapshotRecord } from '../../src/pool/backend.js';
import type { ByteRange } from '../../src/pool/block-ranges.js';
import { FileSnapshotBlocks } from '../../src/pool/file/snapshot-blocks.js';
import { MiB, pattern, tempDir } from '../helpers/driver.js';

const K = 4096;
const never = new AbortController().signal;

async function all(ranges: AsyncIterable<ByteRange>): Promise<ByteRange[]> {
  const out: ByteRange[] = [];
  for await (const r of ranges) out.push(r);
  return out;
}

const snap = (id: string, sizeBytes: number, createdAt: number): SnapshotRecord => ({ id, name: id, sourceVolumeId: 'vol-a-0000000000000000', sizeBytes, createdAt, readyToUse: true });

/** Copies `ranges` of `from` onto `onto` (a backup restored range by range). */
async function apply(onto: Buffer, from: string, ranges: readonly ByteRange[]): Promise<void> {
  const bytes = await readFile(from);
  for (const [s, e] of ranges) {
    onto.fill(0, s, e);
    bytes.copy(onto, s, s, Math.min(e, bytes.length));
  }
}

/**
 * Two snapshot images of one volume on the tests' disk (ext4: no reflinks, so the pool's snapshots are
 * sparse copies): the base with data at 0..64 KiB and 1 MiB..1.5 MiB; the target a copy of it (cp, as
 * the pool makes one) with 8 KiB rewritten at 16 KiB, 4 KiB of the same bytes written again at 1 MiB,
 * 64 KiB discarded at 1.25 MiB, and grown from 4 to 6 MiB with data at 5 MiB.
 */
async function withImages(fn: (dir: string, base: SnapshotRecord, target: SnapshotRecord, changed: ByteRange[]) => Promise<void>): Promise<void> {
  const dir = await tempDir('vpool-snapblocks-');
  try {
    const baseFile = path.join(dir, 'snap-base.img');
    const targetFile = path.join(dir, 'snap-target.img');
    const fh = await open(baseFile, 'w');
    await fh.write(pattern('a', 64 * 1024), 0, 64 * 1024, 0);
    await fh.write(pattern('b', 512 * 1024), 0, 512 * 1024, MiB);
    await fh.truncate(4 * MiB);
    await fh.close();
    execFileSync('cp', ['--reflink=auto', '--sparse=always', '--', baseFile, targetFile]);
    const t = await open(targetFile, 'r+');
    await t.write(pattern('c', 8 * 1024), 0, 8 * 1024, 16 * 1024);
    await t.write(pattern('b', 512 * 1024).subarray(0, K), 0, K, MiB);
    // Across a 1 MiB window's edge.
    await t.write(pattern('e', 8 * 1024), 0, 8 * 1024, 2 * MiB - K);
    await t.close();
    execFileSync('fallocate', ['--punch-hole', '--offset', String(1.25 * MiB), '--length', String(64 * 1024), targetFile]);
    await truncate(targetFile, 6 * MiB);
    const g = await open(targetFile, 'r+');
    await g.write(pattern('d', 12 * 1024), 0, 12 * 1024, 5 * MiB);
    await g.close();
    const changed: ByteRange[] = [[16 * 1024, 24 * 1024], [1.25 * MiB, 1.25 * MiB + 64 * 1024], [2 * MiB - K, 2 * MiB + K], [5 * MiB, 5 * MiB + 12 * 1024]];
    await fn(dir, snap('snap-base', 4 * MiB, 1), snap('snap-target', 6 * MiB, 2), changed);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function covers(ranges: readonly ByteRange[], [s, e]: ByteRange): boolean {
  for (let at = s; at < e; at += K) if (!ranges.some(([a, b]) => a <= at && at + K <= b)) return false;
  return true;
}

for (const window of [undefined, MiB]) describe(`file pool snapshot blocks (real files on the tests' disk), ${window ? 'read in 1 MiB windows' : 'one window'}`, () => {
  it('allocated: the image\'s data ranges from SEEK_DATA, clipped at starting_offset, and a backup of them restores the image', async () => {
    await withImages(async (dir, base) => {
      const blocks = new FileSnapshotBlocks((id) => path.join(dir, `${id}.img`), async () => false, window);
      const ranges = await all(blocks.allocated(base, 0, never));
      assert.deepEqual(ranges, [[0, 64 * 1024], [MiB, 1.5 * MiB]]);
      assert.deepEqual(await all(blocks.allocated(base, 32 * 1024, never)), [[32 * 1024, 64 * 1024], [MiB, 1.5 * MiB]]);
      assert.deepEqual(await all(blocks.allocated(base, 4 * MiB, never)), []);
      const restored = Buffer.alloc(base.sizeBytes);
      await apply(restored, path.join(dir, 'snap-base.img'), ranges);
      assert.ok(restored.equals(await readFile(path.join(dir, 'snap-base.img'))));
    });
  });

  it('delta by comparing the data (no reflinks): exactly the changed blocks, not the rewrite of the same bytes; allocated(base) + delta restores the target', async () => {
    await withImages(async (dir, base, target, changed) => {
      const blocks = new FileSnapshotBlocks((id) => path.join(dir, `${id}.img`), async () => false, window);
      const delta = await all(blocks.delta(base, target, 0, never));
      assert.deepEqual(delta, changed);
      const restored = Buffer.alloc(target.sizeBytes);
      await apply(restored, path.join(dir, 'snap-base.img'), await all(blocks.allocated(base, 0, never)));
      await apply(restored, path.join(dir, 'snap-target.img'), delta);
      assert.ok(restored.equals(await readFile(path.join(dir, 'snap-target.img'))));
      // Resumed past the first change: the rest only.
      assert.deepEqual(await all(blocks.delta(base, target, 20 * 1024, never)), [[20 * 1024, 24 * 1024], ...changed.slice(1)]);
    });
  });

  it('delta from the extent maps where nothing is shared (copies on ext4): every changed block is in it, and it still restores the target', async () => {
    await withImages(async (dir, base, target, changed) => {
      const blocks = new FileSnapshotBlocks((id) => path.join(dir, `${id}.img`), async () => true, window);
      const delta = await all(blocks.delta(base, target, 0, never));
      for (const c of changed) assert.ok(covers(delta, c), `the change at ${c[0]} is in the delta ${JSON.stringify(delta)}`);
      // The maps were compared, not the data: the block rewritten with the same bytes lies elsewhere on disk, so it is in.
      assert.ok(covers(delta, [MiB, MiB + K]), `the extent maps were compared: ${JSON.stringify(delta)}`);
      // ...and the holes both have are not.
      assert.ok(!delta.some(([s, e]) => s < 4 * MiB && e > 2.5 * MiB), `no range in the hole both have: ${JSON.stringify(delta)}`);
      const restored = Buffer.alloc(target.sizeBytes);
      await apply(restored, path.join(dir, 'snap-base.img'), await all(blocks.allocated(base, 0, never)));
      await apply(restored, path.join(dir, 'snap-target.img'), delta);
      assert.ok(restored.equals(await readFile(path.join(dir, 'snap-target.img'))));
    });
  });

  it('a cancelled comparison stops with CANCELLED', async () => {
    await withImages(async (dir, base, target) => {
      const blocks = new FileSnapshotBlocks((id) => path.join(dir, `${id}.img`), async () => false, window);
      const ac = new AbortController();
      ac.abort();
      await assert.rejects(all(blocks.delta(base, target, 0, ac.signal)), (e: Error & { kind?: string }) => e.kind === 'cancelled');
    });
  });

  it('a missing image (deleted before the stream began) is NOT_FOUND, never an empty answer', async () => {
    const dir = await tempDir('vpool-snapblocks-');
    try {
      await writeFile(path.join(dir, 'present.img'), '');
      const blocks = new FileSnapshotBlocks((id) => path.join(dir, `${id}.img`), async () => false, window);
      await assert.rejects(all(blocks.allocated(snap('absent', MiB, 1), 0, never)), (e: Error & { kind?: string }) => e.kind === 'not-found' && /snapshot absent was deleted/.test(e.message));
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
