import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap, mountCap, paths } from '../helpers/csi.js';
import { type Driver, finish, MiB, needsRoot, startDriver, useDriver } from '../helpers/driver.js';

const execFileP = promisify(execFile);

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
});

// Its own 256 MiB filesystem under the pool: the free space GetCapacity reports stays put while the test
// runs, whatever else writes to the machine's disk meanwhile.
describe('concurrent creates on a pool of a fixed size', needsRoot(), () => {
  let d: Driver;
  let scratch: string;
  let dir: string;
  before(async () => {
    scratch = await mkdtemp('/var/tmp/vpool-fixed-fs-');
    dir = await mkdtemp('/var/tmp/vpool-fixed-');
    const img = path.join(scratch, 'fs.img');
    await execFileP('truncate', ['-s', '256M', img]);
    await execFileP('mkfs.ext4', ['-q', '-m', '0', '-F', img]);
    await mkdir(path.join(dir, 'pool'), { recursive: true });
    await execFileP('mount', ['-o', 'loop', img, path.join(dir, 'pool')]);
    d = await startDriver({ dir });
  });
  after(async () => {
    // The pool's own filesystem is the one mount expected under the driver's directory (finish unmounts it).
    const left = (d ? await finish(d) : []).filter((l) => l !== `mount ${path.join(dir, 'pool')}`);
    await execFileP('umount', [path.join(dir, 'pool')]).catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
    await rm(dir, { recursive: true, force: true });
    assert.deepEqual(left, []);
  });

  it('concurrent creates cannot together overcommit the pool', async () => {
    const avail = Number((await d.client.getCapacity({})).available_capacity);
    const each = Math.floor(avail / 3 / MiB) * MiB;
    // Four volumes of a third of the free space each: at most three may succeed.
    const settled = await Promise.allSettled(Array.from({ length: 4 }, (_, i) => d.client.createVolume({ name: `third-${i}`, capacity_range: { required_bytes: String(each) }, volume_capabilities: [blockCap()] })));
    const ok = settled.filter((s) => s.status === 'fulfilled');
    assert.equal(ok.length, 3, `${ok.length} of 4 succeeded`);
    for (const s of settled) if (s.status === 'rejected') assert.equal((s.reason as { code: number }).code, 8 /* RESOURCE_EXHAUSTED */);
    for (const s of ok) if (s.status === 'fulfilled') await d.client.deleteVolume({ volume_id: s.value.volume!.volume_id });
  });
});
