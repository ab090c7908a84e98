import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { cowCopiedChunks, segmentsOf } from '../../src/pool/lvm/cow-exceptions.js';
import { toRanges } from '../../src/pool/lvm/thin-metadata.js';

const K = 4096;

/**
 * A copy-on-write store laid out as the kernel writes it (drivers/md/dm-snap-persistent.c): chunk 0
 * the header, then per area one chunk of {old_chunk, new_chunk} u64 pairs followed by its data chunks.
 */
function cowStore(chunkSectors: number, exceptions: number[], valid = 1, areasToFill?: number): Buffer {
  const chunk = chunkSectors * 512;
  const perArea = chunk / 16;
  const areas = Math.max(areasToFill ?? 0, Math.ceil((exceptions.length + 1) / perArea));
  const b = Buffer.alloc(chunk * (1 + areas * (perArea + 1)));
  b.writeUInt32LE(0x70416e53, 0);
  b.writeUInt32LE(valid, 4);
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(chunkSectors, 12);
  exceptions.forEach((old, i) => {
    const area = Math.floor(i / perArea);
    const at = (1 + area * (perArea + 1)) * chunk + (i % perArea) * 16;
    b.writeBigUInt64LE(BigInt(old), at);
    b.writeBigUInt64LE(BigInt(2 + area * (perArea + 1) + (i % perArea)), at + 8);
  });
  return b;
}

describe('lvm snapshot metadata parsing', () => {
  it('thin block runs become byte ranges: sorted, touching runs merged, clipped to the size', () => {
    assert.deepEqual(toRanges([[8, 2], [0, 5], [5, 3], [100, 2]], 64 * 1024, 101 * 64 * 1024), [[0, 10 * 64 * 1024], [100 * 64 * 1024, 101 * 64 * 1024]]);
    assert.deepEqual(toRanges([], 64 * 1024, 1 << 30), []);
  });

  it('seg_pe_ranges name PVs and extents; an unknown PV or a malformed range is an error', () => {
    assert.deepEqual(segmentsOf('/dev/vda:64-79 /dev/vdb:0-9', (pv) => (pv === '/dev/vda' ? 1 << 20 : 2 << 20)), [
      { pv: '/dev/vda', peStart: 1 << 20, firstPe: 64, count: 16 },
      { pv: '/dev/vdb', peStart: 2 << 20, firstPe: 0, count: 10 },
    ]);
    assert.throws(() => segmentsOf('/dev/vdc:0-1', () => undefined), /no PV/);
    assert.throws(() => segmentsOf('junk', () => 0), /cannot read/);
  });

  it('reads the copied-aside chunks of a copy-on-write store across areas and segments; refuses an invalid or foreign one', async () => {
    const dir = await mkdtemp(path.join(process.env.VPOOL_TEST_DIR ?? '/var/tmp', 'cow-'));
    try {
      // 4 KiB chunks: 256 exceptions an area. 300 exceptions fill area 0 and spill into area 1.
      const chunks = Array.from({ length: 300 }, (_, i) => (i * 7) % 1000);
      const store = cowStore(8, chunks);
      // The LV's first extent on one PV, the rest on another, each after 1 MiB of PV header.
      const extent = 256 * K;
      const pvA = path.join(dir, 'a');
      const pvB = path.join(dir, 'b');
      await writeFile(pvA, Buffer.concat([Buffer.alloc(1 << 20), store.subarray(0, extent)]));
      const rest = Buffer.alloc(Math.ceil((store.length - extent) / extent) * extent);
      store.copy(rest, 0, extent);
      await writeFile(pvB, Buffer.concat([Buffer.alloc(1 << 20), Buffer.alloc(3 * extent), rest]));
      const segs = [
        { pv: pvA, peStart: 1 << 20, firstPe: 0, count: 1 },
        { pv: pvB, peStart: 1 << 20, firstPe: 3, count: rest.length / extent },
      ];
      const ranges = await cowCopiedChunks(segs, extent, 1000 * K);
      const want = toRanges([...new Set(chunks)].map((c) => [c, 1] as [number, number]), K, 1000 * K);
      assert.deepEqual(ranges, want);
      // Past the origin's size: left out.
      assert.deepEqual(await cowCopiedChunks(segs, extent, 100 * K), toRanges([...new Set(chunks)].filter((c) => c < 100).map((c) => [c, 1] as [number, number]), K, 100 * K));

      // Exactly one full area (256 exceptions): the table ends at the first entry of the next, zeroed by the kernel before it commits.
      const full = Array.from({ length: 256 }, (_, i) => 2 * i);
      await writeFile(pvA, Buffer.concat([Buffer.alloc(1 << 20), cowStore(8, full)]));
      assert.deepEqual(await cowCopiedChunks([{ pv: pvA, peStart: 1 << 20, firstPe: 0, count: 2 }], extent, 1000 * K), full.map((c) => [c * K, (c + 1) * K]));

      await writeFile(pvA, Buffer.concat([Buffer.alloc(1 << 20), cowStore(8, [1, 2], 0)]));
      await assert.rejects(cowCopiedChunks([{ pv: pvA, peStart: 1 << 20, firstPe: 0, count: 1 }], extent, 1000 * K), /invalid/);
      await writeFile(pvA, Buffer.alloc(2 << 20));
      await assert.rejects(cowCopiedChunks([{ pv: pvA, peStart: 1 << 20, firstPe: 0, count: 1 }], extent, 1000 * K), /no copy-on-write header/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
