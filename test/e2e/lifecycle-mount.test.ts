import assert from 'node:assert/strict';
import { open, readFile, stat, statfs } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { codeOf, type Driver, MiB, needsRoot, pattern, sha256File, useDriver } from '../helpers/driver.js';
import { createVolume, mountCap, paths, stageAndPublish, unpublishAndUnstage, cloneOfStaged } from '../helpers/csi.js';
import { listLoopDevices } from '../../src/host/loop.js';

async function writeSynced(file: string, data: Buffer): Promise<void> {
  const fh = await open(file, 'w');
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function fsBytes(dir: string): Promise<number> {
  const s = await statfs(dir);
  return s.blocks * s.bsize;
}

for (const fsType of ['ext4', 'xfs'] as const) {
  describe(`mount lifecycle on ${fsType}`, needsRoot(), () => {
    let d: Driver;
    useDriver((x) => (d = x));

    it('creates, stages, publishes, restages, snapshots, restores, clones, expands and deletes', async () => {
      const size = fsType === 'xfs' ? 320 * MiB : 64 * MiB;
      const cap = mountCap(fsType);
      const vol = await createVolume(d, `data-${fsType}`, size, cap, { parameters: { fsType } });
      assert.equal(vol.capacity_bytes, String(size));
      assert.deepEqual(vol.volume_context, { fsType });
      const p = await paths(d, 'data');

      // Write a known pattern, unstage everything, restage, and read it back.
      await stageAndPublish(d, vol.volume_id, p, cap);
      const file = path.join(p.target, 'pattern.bin');
      const original = pattern(`first-${fsType}`, 4 * MiB);
      await writeSynced(file, original);
      const sum = await sha256File(file);
      await unpublishAndUnstage(d, vol.volume_id, p);
      await assert.rejects(stat(p.target), { code: 'ENOENT' }, 'NodeUnpublishVolume removes the target it created');
      assert.equal((await listLoopDevices()).filter((l) => l.backingFile.startsWith(d.dir)).length, 0, 'unstage detaches the loop device');
      await stageAndPublish(d, vol.volume_id, p, cap);
      assert.equal(await sha256File(file), sum, 'data survives unstage and restage');

      // Snapshot, then change the volume: the snapshot keeps the moment it was taken.
      const snap = (await d.client.createSnapshot({ name: `snap-${fsType}`, source_volume_id: vol.volume_id })).snapshot!;
      assert.equal(snap.ready_to_use, true);
      assert.equal(snap.size_bytes, String(size));
      await writeSynced(file, pattern(`second-${fsType}`, 4 * MiB));
      const changedSum = await sha256File(file);
      assert.notEqual(changedSum, sum);

      const restored = await createVolume(d, `restored-${fsType}`, size, cap, { parameters: { fsType }, source: { snapshot: snap.snapshot_id } });
      assert.equal(restored.content_source?.snapshot?.snapshot_id, snap.snapshot_id);
      const rp = await paths(d, 'restored');
      await stageAndPublish(d, restored.volume_id, rp, cap);
      assert.equal(await sha256File(path.join(rp.target, 'pattern.bin')), sum, 'the restore holds the snapshot-time data');
      await unpublishAndUnstage(d, restored.volume_id, rp);

      // The source is staged: on a pool that cannot reflink the clone is refused until it is detached.
      const clone = await cloneOfStaged(d, () => createVolume(d, `clone-${fsType}`, size, cap, { parameters: { fsType }, source: { volume: vol.volume_id } }), { id: vol.volume_id, p, cap });
      const cp = await paths(d, 'clone');
      await stageAndPublish(d, clone.volume_id, cp, cap);
      assert.equal(await sha256File(path.join(cp.target, 'pattern.bin')), changedSum, 'the clone holds the source as it is now');
      await unpublishAndUnstage(d, clone.volume_id, cp);

      // Expansion: xfs grows online; ext4 online growth needs CAP_SYS_RESOURCE, else it grows at the next stage.
      const before = await fsBytes(p.target);
      const bigger = size + 64 * MiB;
      const expand = d.client.nodeExpandVolume({ volume_id: vol.volume_id, volume_path: p.target, capacity_range: { required_bytes: String(bigger) } });
      const code = await codeOf(expand);
      if (fsType === 'xfs') assert.equal(code, 'OK');
      else {
        assert.ok(code === 'OK' || code === 'FAILED_PRECONDITION', `ext4 online expansion: ${code}`);
        if (code === 'FAILED_PRECONDITION') {
          await assert.rejects(d.client.nodeExpandVolume({ volume_id: vol.volume_id, volume_path: p.target, capacity_range: { required_bytes: String(bigger) } }), /CAP_SYS_RESOURCE/);
          await unpublishAndUnstage(d, vol.volume_id, p);
          await stageAndPublish(d, vol.volume_id, p, cap);
        }
      }
      const grown = await fsBytes(p.target);
      assert.ok(grown >= before + 48 * MiB, `filesystem grew from ${before} to ${grown}`);
      assert.equal((await d.client.controllerGetVolume({ volume_id: vol.volume_id })).volume?.capacity_bytes, String(bigger));
      assert.equal(await sha256File(file), changedSum, 'data survives expansion');
      const stats = await d.client.nodeGetVolumeStats({ volume_id: vol.volume_id, volume_path: p.target });
      assert.equal(stats.usage.find((u) => u.unit === 'BYTES')?.total, String(grown));
      assert.ok(Number(stats.usage.find((u) => u.unit === 'INODES')?.total) > 0);
      assert.equal(stats.volume_condition?.abnormal, false);

      // Read-only publish of the same staged volume refuses writes.
      const ro = path.join(d.mntDir, 'pods', 'data', 'readonly');
      await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: ro, volume_capability: cap, readonly: true });
      await assert.rejects(writeSynced(path.join(ro, 'nope'), Buffer.from('x')), { code: 'EROFS' });
      assert.deepEqual(await readFile(path.join(ro, 'pattern.bin')), pattern(`second-${fsType}`, 4 * MiB));
      await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: ro });

      await unpublishAndUnstage(d, vol.volume_id, p);
      // Deleting a volume that has snapshots works: snapshots are independent copies.
      for (const id of [vol.volume_id, restored.volume_id, clone.volume_id]) await d.client.deleteVolume({ volume_id: id });
      assert.equal((await d.client.listSnapshots({ snapshot_id: snap.snapshot_id })).entries.length, 1);
      await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
      assert.equal((await d.client.listVolumes({})).entries.length, 0);
    });
  });
}
