import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { beforeEach, describe, it } from 'node:test';
import { blockCap, createVolume, paths, stageAndPublish, unpublishAndUnstage } from '../helpers/csi.js';
import { readAt, writeAt } from '../helpers/data.js';
import { codeOf, MiB, needsRoot, pattern, type Driver } from '../helpers/driver.js';
import { useOwnPool } from '../helpers/own-pool.js';
import { bytesIn, covered, rangesOf, type Range } from '../helpers/snapshot-metadata.js';

const execFileP = promisify(execFile);
const K = 4096;

/**
 * What a backup tool does with the service (the changed-block-tracking flow of KEP-3314), through
 * CSI over the driver's socket: a full backup of snapshot 1 from its allocated blocks, an increment
 * to snapshot 2 from the delta, each read from a volume restored from its snapshot (the spec leaves
 * reading the data to the existing paths), then restored onto a blank volume and compared.
 */
function suite(fs: 'xfs' | 'ext4') {
  const title = fs === 'xfs' ? 'a file pool on XFS (reflinked snapshots: the delta from the extent maps)' : 'a file pool on ext4 (copied snapshots: the delta from comparing the data)';
  describe(`SnapshotMetadata on ${title}`, needsRoot(), () => {
    const pool = useOwnPool(fs);
    let d: Driver;
    beforeEach(() => {
      d = pool.d;
    });

    /** A volume restored from a snapshot, read whole through a raw block publish, then deleted. */
    async function restoredBytes(snapshotId: string, size: number): Promise<Buffer> {
      const cap = blockCap();
      const vol = await createVolume(d, `restore-${snapshotId.slice(5, 20)}-${Date.now()}`, size, cap, { source: { snapshot: snapshotId } });
      const p = await paths(d, vol.volume_id);
      await stageAndPublish(d, vol.volume_id, p, cap);
      try {
        // A restore shares the snapshot's extents (a reflink on XFS): its device keeps 512-byte sectors all the same.
        assert.equal((await execFileP('blockdev', ['--getss', p.target])).stdout.trim(), '512');
        return await readAt(p.target, 0, size);
      } finally {
        await unpublishAndUnstage(d, vol.volume_id, p);
        await d.client.deleteVolume({ volume_id: vol.volume_id });
      }
    }

    it('allocated(snap1) + delta(snap1→snap2) restores snap2 byte for byte; every changed block is in the delta; resumption, paging and refusals as the spec says', async (t) => {
      const caps = await d.client.getPluginCapabilities({});
      assert.ok(caps.capabilities.some((c) => c.service?.type === 'SNAPSHOT_METADATA_SERVICE'), 'advertised');

      const cap = blockCap();
      const size1 = 16 * MiB;
      const vol = await createVolume(d, `cbt-${fs}`, size1, cap);
      const p = await paths(d, vol.volume_id);
      await stageAndPublish(d, vol.volume_id, p, cap);
      const snaps: string[] = [];
      try {
        // Snapshot 1: data at 0..256 KiB, 4..5 MiB and 12 MiB..12 MiB+64 KiB.
        await writeAt(p.target, 0, pattern('one-a', 256 * 1024));
        await writeAt(p.target, 4 * MiB, pattern('one-b', MiB));
        await writeAt(p.target, 12 * MiB, pattern('one-c', 64 * 1024));
        const s1 = (await d.client.createSnapshot({ name: `cbt-${fs}-1`, source_volume_id: vol.volume_id })).snapshot!;
        snaps.push(s1.snapshot_id);

        // Between: overwrite 8 KiB at 64 KiB and 4 KiB at 4.5 MiB, write into a hole at 8 MiB, discard 64 KiB at 4 MiB
        // (the loop device punches the hole in the image), grow to 24 MiB and write at 20 MiB.
        const changes: Range[] = [];
        const write = async (at: number, n: number, seed: string) => {
          await writeAt(p.target, at, pattern(seed, n));
          changes.push([at, at + n]);
        };
        await write(64 * 1024, 8 * 1024, 'two-a');
        await write(4.5 * MiB, K, 'two-b');
        await write(8 * MiB, 128 * 1024, 'two-c');
        await execFileP('blkdiscard', ['--offset', String(4 * MiB), '--length', String(64 * 1024), p.target]);
        changes.push([4 * MiB, 4 * MiB + 64 * 1024]);
        const size2 = 24 * MiB;
        await d.client.nodeExpandVolume({ volume_id: vol.volume_id, volume_path: p.target, capacity_range: { required_bytes: String(size2) } });
        await write(20 * MiB, 32 * 1024, 'two-d');
        const s2 = (await d.client.createSnapshot({ name: `cbt-${fs}-2`, source_volume_id: vol.volume_id })).snapshot!;
        snaps.push(s2.snapshot_id);

        const allocated = rangesOf(await d.client.getMetadataAllocated({ snapshot_id: s1.snapshot_id, starting_offset: '0', max_results: 0 }), size1);
        for (const [s, e] of [[0, 256 * 1024], [4 * MiB, 5 * MiB], [12 * MiB, 12 * MiB + 64 * 1024]] as Range[]) {
          for (let at = s; at < e; at += K) assert.ok(covered(allocated, at), `written byte ${at} is allocated in snap1`);
        }
        const delta = rangesOf(await d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: '0', max_results: 0 }), size2);
        for (const [s, e] of changes) for (let at = s; at < e; at += K) assert.ok(covered(delta, at), `changed block at ${at} is in the delta ${JSON.stringify(delta)}`);
        const changedBytes = bytesIn(changes);
        t.diagnostic(`${fs}: allocated(snap1) ${bytesIn(allocated)} bytes in ${allocated.length} ranges of ${size1}; delta ${bytesIn(delta)} bytes in ${delta.length} ranges for ${changedBytes} bytes changed (ratio ${(bytesIn(delta) / changedBytes).toFixed(2)})`);

        // The backup restored: snap1's allocated blocks onto a blank volume of snap2's size, then the delta's from snap2.
        const one = await restoredBytes(s1.snapshot_id, size1);
        const two = await restoredBytes(s2.snapshot_id, size2);
        const rebuilt = Buffer.alloc(size2);
        for (const [s, e] of allocated) one.copy(rebuilt, s, s, e);
        for (const [s, e] of delta) two.copy(rebuilt, s, s, e);
        assert.ok(rebuilt.equals(two), 'allocated(snap1) + delta(snap1→snap2) is snap2, byte for byte');
        // And the full backup alone is snap1.
        const full = Buffer.alloc(size1);
        for (const [s, e] of allocated) one.copy(full, s, s, e);
        assert.ok(full.equals(one), 'allocated(snap1) is snap1, byte for byte');

        // Paging and resumption: one tuple a message; resuming at the end of the first tuple gives the rest.
        const paged = await d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: '0', max_results: 1 });
        assert.deepEqual(rangesOf(paged, size2, 1), delta);
        const resumed = rangesOf(await d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: String(delta[0]![1]), max_results: 0 }), size2);
        assert.deepEqual(resumed, delta.slice(1));
        const mid = delta[0]![0] + K;
        if (mid < delta[0]![1]) {
          const fromMid = rangesOf(await d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: String(mid), max_results: 0 }), size2);
          assert.ok(mid < fromMid[0]![1], 'the first tuple does not end before starting_offset');
        }
        // At the very end: one message with the capacity and nothing in it.
        assert.deepEqual(rangesOf(await d.client.getMetadataAllocated({ snapshot_id: s1.snapshot_id, starting_offset: String(size1), max_results: 0 }), size1), []);

        // Refusals, each with the spec's code.
        const refused = {
          unknownSnapshot: await codeOf(d.client.getMetadataAllocated({ snapshot_id: 'snap-nope-0123456789abcdef', starting_offset: '0', max_results: 0 })),
          hostileId: await codeOf(d.client.getMetadataAllocated({ snapshot_id: '../../etc/passwd', starting_offset: '0', max_results: 0 })),
          noId: await codeOf(d.client.getMetadataAllocated({ snapshot_id: '', starting_offset: '0', max_results: 0 })),
          negativeOffset: await codeOf(d.client.getMetadataAllocated({ snapshot_id: s1.snapshot_id, starting_offset: '-1', max_results: 0 })),
          offsetPastEnd: await codeOf(d.client.getMetadataAllocated({ snapshot_id: s1.snapshot_id, starting_offset: String(size1 + 1), max_results: 0 })),
          negativeMax: await codeOf(d.client.getMetadataAllocated({ snapshot_id: s1.snapshot_id, starting_offset: '0', max_results: -1 })),
          backwards: await codeOf(d.client.getMetadataDelta({ base_snapshot_id: s2.snapshot_id, target_snapshot_id: s1.snapshot_id, starting_offset: '0', max_results: 0 })),
          unknownBase: await codeOf(d.client.getMetadataDelta({ base_snapshot_id: 'snap-nope-0123456789abcdef', target_snapshot_id: s2.snapshot_id, starting_offset: '0', max_results: 0 })),
          deltaPastEnd: await codeOf(d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: String(size2 + K), max_results: 0 })),
        };
        assert.deepEqual(refused, {
          unknownSnapshot: 'NOT_FOUND',
          hostileId: 'INVALID_ARGUMENT',
          noId: 'INVALID_ARGUMENT',
          negativeOffset: 'OUT_OF_RANGE',
          offsetPastEnd: 'OUT_OF_RANGE',
          negativeMax: 'INVALID_ARGUMENT',
          backwards: 'INVALID_ARGUMENT',
          unknownBase: 'NOT_FOUND',
          deltaPastEnd: 'OUT_OF_RANGE',
        });
        // Snapshots of two volumes: no delta between them.
        const other = await createVolume(d, `cbt-${fs}-other`, MiB, cap);
        const s3 = (await d.client.createSnapshot({ name: `cbt-${fs}-3`, source_volume_id: other.volume_id })).snapshot!;
        snaps.push(s3.snapshot_id);
        const across = await d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s3.snapshot_id, starting_offset: '0', max_results: 0 }).catch((e: Error & { code?: number }) => e);
        assert.ok(across instanceof Error && /a delta is between snapshots of one volume/.test(across.message), String(across));
        await d.client.deleteVolume({ volume_id: other.volume_id });
      } finally {
        await unpublishAndUnstage(d, vol.volume_id, p);
        for (const s of snaps) await d.client.deleteSnapshot({ snapshot_id: s });
        await d.client.deleteVolume({ volume_id: vol.volume_id });
      }
    });
  });
}

suite('xfs');
suite('ext4');
