import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { clipped, EXTENT_UNWRITTEN, merged, physicalDelta, toBlocks, union, type MappedExtent } from '../../src/pool/block-ranges.js';

const K = 4096;
const x = (logical: number, physical: number, length: number, flags = 0): MappedExtent => ({ logical: logical * K, physical: physical * K, length: length * K, flags });
const blocks = (ranges: Iterable<readonly [number, number]>) => [...ranges].map(([s, e]) => [s / K, e / K]);

describe('block ranges', () => {
  it('merges touching and overlapping ranges, drops empty ones', () => {
    assert.deepEqual([...merged([[0, 4], [4, 8], [6, 7], [10, 10], [12, 20]])], [[0, 8], [12, 20]]);
  });

  it('clips to [from, end): a range across `from` starts there, one before it is left out', () => {
    assert.deepEqual([...clipped([[0, 10], [20, 30], [40, 50]], 25, 45)], [[25, 30], [40, 45]]);
    assert.deepEqual([...clipped([[0, 10]], 10, 100)], []);
  });

  it('widens to whole blocks, merging what then touches, never past the end', () => {
    assert.deepEqual([...toBlocks([[1, 2], [K + 5, K + 6], [3 * K, 3 * K + 1]], K, 3 * K + 100)], [[0, 2 * K], [3 * K, 3 * K + 100]]);
  });

  it('unites two lists', () => {
    assert.deepEqual(union([[0, 4], [10, 12]], [[2, 6], [20, 22]]), [[0, 6], [10, 12], [20, 22]]);
  });

  describe('physicalDelta (two extent maps of one volume history)', () => {
    const size = 64 * K;
    it('a reflink copy untouched since: nothing changed', () => {
      const map = [x(0, 1000, 8), x(16, 2000, 4)];
      assert.deepEqual(physicalDelta(map, map, size, 0, size), []);
    });

    it('blocks written since (moved by copy-on-write), newly written where the base had a hole, and discarded: each reported, nothing else', () => {
      const base = [x(0, 1000, 8), x(16, 2000, 4), x(30, 3000, 2)];
      // Block 2..3 rewritten (COW: new physical), 40..41 written into a hole, 30..31 discarded (hole now).
      const target = [x(0, 1000, 2), x(2, 5000, 2), x(4, 1004, 4), x(16, 2000, 4), x(40, 6000, 2)];
      assert.deepEqual(blocks(physicalDelta(base, target, size, 0, size)), [[2, 4], [30, 32], [40, 42]]);
    });

    it('extents split differently but at the same addresses are the same data', () => {
      const base = [x(0, 1000, 8)];
      const target = [x(0, 1000, 3), x(3, 1003, 5)];
      assert.deepEqual(physicalDelta(base, target, size, 0, size), []);
    });

    it('an unwritten extent reads zeros: same as a hole, different from data', () => {
      const base = [x(0, 1000, 4, EXTENT_UNWRITTEN), x(8, 1100, 4)];
      const target = [x(8, 1200, 4, EXTENT_UNWRITTEN)];
      assert.deepEqual(blocks(physicalDelta(base, target, size, 0, size)), [[8, 12]]);
    });

    it('an address FIEMAP does not vouch for (delayed allocation, inline, encoded) is never taken as unchanged', () => {
      for (const flag of [0x4, 0x8, 0x200, 0x100]) {
        const map = [x(0, 1000, 4, flag)];
        assert.deepEqual(blocks(physicalDelta(map, map, size, 0, size)), [[0, 4]], `flag 0x${flag.toString(16)}`);
      }
    });

    it('a volume grown between the snapshots: data past the base\'s end is changed, holes there are not', () => {
      const base = [x(0, 1000, 4)];
      const target = [x(0, 1000, 4), x(70, 7000, 2)];
      assert.deepEqual(blocks(physicalDelta(base, target, size, 0, 128 * K)), [[70, 72]]);
    });

    it('a window of the maps: extents reaching outside it are cut at its edges', () => {
      const base = [x(0, 1000, 32)];
      const target = [x(0, 1000, 10), x(10, 5000, 2), x(12, 1012, 20)];
      assert.deepEqual(blocks(physicalDelta(base, target, size, 8 * K, 11 * K)), [[10, 11]]);
      assert.deepEqual(blocks(physicalDelta(base, target, size, 11 * K, 16 * K)), [[11, 12]]);
      assert.deepEqual(physicalDelta(base, target, size, 16 * K, 16 * K), []);
    });

    it('the base\'s extents past its own end are not read (a file longer than the snapshot)', () => {
      const base = [x(0, 1000, 4), x(60, 9000, 10)];
      const target = [x(0, 1000, 4)];
      // The base is 64 blocks: 60..63 it holds data the target does not; 64..69 lies past its end.
      assert.deepEqual(blocks(physicalDelta(base, target, size, 0, 128 * K)), [[60, 64]]);
    });
  });
});
