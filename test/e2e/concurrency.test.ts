import assert from 'node:assert/strict';
import { readdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { blockCap, mountCap, paths } from '../helpers/csi.js';
import { type Driver, MiB, needsRoot, useDriver } from '../helpers/driver.js';

describe('concurrency', needsRoot(), () => {
  let d: Driver;
  useDriver((x) => (d = x));

  it('20 concurrent CreateVolume calls with one name make exactly one volume', async () => {
    const calls = Array.from({ length: 20 }, () => d.client.createVolume({ name: 'same', capacity_range: { required_bytes: String(4 * MiB) }, volume_capabilities: [mountCap()] }));
    const results = await Promise.all(calls);
    const ids = new Set(results.map((r) => r.volume!.volume_id));
    assert.equal(ids.size, 1);
    assert.equal((await d.client.listVolumes({})).entries.length, 1);
    // .changes is the pool's count of commits (src/pool/file/record-index.ts), not a volume's file.
    assert.deepEqual((await readdir(path.join(d.poolDir, 'volumes'))).filter((f) => f !== '.changes').length, 2, 'one image and one metadata file');
    await d.client.deleteVolume({ volume_id: [...ids][0] });
  });

  it('20 different names in parallel all succeed, and delete in parallel', async () => {
    const results = await Promise.all(Array.from({ length: 20 }, (_, i) => d.client.createVolume({ name: `par-${i}`, capacity_range: { required_bytes: String(2 * MiB) }, volume_capabilities: [blockCap()] })));
    assert.equal(new Set(results.map((r) => r.volume!.volume_id)).size, 20);
    assert.equal((await d.client.listVolumes({})).entries.length, 20);
    await Promise.all(results.map((r) => d.client.deleteVolume({ volume_id: r.volume!.volume_id })));
    assert.equal((await d.client.listVolumes({})).entries.length, 0);
  });

  it('concurrent stages and unstages of one volume leave exactly one loop device and one mount', async () => {
    const v = (await d.client.createVolume({ name: 'racy', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [mountCap()] })).volume!;
    const p = await paths(d, 'racy');
    await Promise.all(Array.from({ length: 8 }, () => d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: mountCap('ext4') })));
    const { listLoopDevices } = await import('../../src/host/loop.js');
    const { readMounts } = await import('../../src/host/mounts.js');
    assert.equal((await listLoopDevices()).filter((l) => l.backingFile.startsWith(d.dir)).length, 1);
    assert.equal((await readMounts()).filter((m) => m.mountPoint === p.staging).length, 1);
    await Promise.all(Array.from({ length: 8 }, () => d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging })));
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('concurrent creates cannot together overcommit the pool', async () => {
    const avail = Number((await d.client.getCapacity({})).available_capacity);
    const each = Math.floor(avail / 3 / MiB) * MiB;
    // Four volumes of a third of the free space each: at most three may succeed.
    const settled = await Promise.allSettled(Array.from({ length: 4 }, (_, i) => d.client.createVolume({ name: `third-${i}`, capacity_range: { required_bytes: String(each) }, volume_capabilities: [blockCap()] })));
    const ok = settled.filter((s) => s.status === 'fulfilled');
    assert.ok(ok.length <= 3 && ok.length >= 2, `${ok.length} of 4 succeeded`);
    for (const s of settled) if (s.status === 'rejected') assert.equal((s.reason as { code: number }).code, 8 /* RESOURCE_EXHAUSTED */);
    for (const s of ok) if (s.status === 'fulfilled') await d.client.deleteVolume({ volume_id: s.value.volume!.volume_id });
  });
});
