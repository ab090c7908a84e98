import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { CommandError } from '../../src/exec.js';
import { blockDeviceSize } from '../../src/host/loop.js';
import { bindMount } from '../../src/host/mounts.js';
import { blockCap, createVolume, mountCap, paths, stageAndPublish, unpublishAndUnstage, cloneOfStaged } from '../helpers/csi.js';
import { type Driver, MiB, needsRoot, pattern, useDriver } from '../helpers/driver.js';

async function writeAt(dev: string, offset: number, data: Buffer): Promise<void> {
  const fh = await open(dev, 'r+');
  try {
    await fh.write(data, 0, data.length, offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function sumAt(dev: string, offset: number, length: number): Promise<string> {
  const fh = await open(dev, 'r');
  const buf = Buffer.alloc(length);
  await fh.read(buf, 0, length, offset);
  await fh.close();
  return createHash('sha256').update(buf).digest('hex');
}

/** The commands the driver logged (debug level) since `from`. */
function commandsSince(d: Driver, from: number): string[] {
  return d.logs.slice(from).flatMap((l) => {
    try {
      const e = JSON.parse(l) as { message?: string; command?: string };
      return e.message === 'command' || e.message === 'command failed' ? [e.command ?? ''] : [];
    } catch {
      return [];
    }
  });
}

describe('raw block lifecycle', needsRoot(), () => {
  let d: Driver;
  useDriver((x) => (d = x), { args: ['--log-level', 'debug'] });

  it('publishes the device node as a file, keeps data across restage, snapshots, restores, clones and grows', async () => {
    await blockLifecycle(d);
  });

  it('attaches, binds, unbinds and detaches with system calls made in the driver: no losetup, mount or umount process', async () => {
    const cap = blockCap();
    const vol = await createVolume(d, 'no-subprocess', 16 * MiB, cap);
    const p = await paths(d, 'no-subprocess');
    const from = d.logs.length;
    await stageAndPublish(d, vol.volume_id, p, cap);
    const ro = path.join(d.mntDir, 'pods', 'no-subprocess', 'ro');
    await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: ro, volume_capability: cap, readonly: true });
    await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: ro });
    await unpublishAndUnstage(d, vol.volume_id, p);
    assert.deepEqual(commandsSince(d, from), []);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
    // The control: this driver does log the commands it runs, and commandsSince reads them (staging a
    // blank filesystem volume runs mkfs), so the empty list above is no accident of the log's format.
    const fsCap = mountCap('ext4');
    const fsVol = await createVolume(d, 'with-mkfs', 16 * MiB, fsCap);
    const q = await paths(d, 'with-mkfs');
    const before = d.logs.length;
    await stageAndPublish(d, fsVol.volume_id, q, fsCap);
    await unpublishAndUnstage(d, fsVol.volume_id, q);
    assert.ok(commandsSince(d, before).includes('mkfs.ext4'), `mkfs.ext4 among ${JSON.stringify(commandsSince(d, before))}`);
    await d.client.deleteVolume({ volume_id: fsVol.volume_id });
  });
});

describe('a bind the kernel refuses', needsRoot(), () => {
  it('reaches the caller as the mount command\'s failure, with its stderr, not as an unmapped error', async () => {
    const missing = `/nonexistent-vpool-${process.pid}`;
    await assert.rejects(bindMount(`${missing}/source`, `${missing}/target`, false), (err: unknown) => err instanceof CommandError && err.command === 'mount' && /No such file|does not exist|special device/i.test(err.stderr));
  });
});

// Where koffi cannot load, the same path runs the commands (VPOOL_NO_SYSCALLS=1 makes it so).
describe('raw block lifecycle through losetup, mount and umount', needsRoot(), () => {
  let d: Driver;
  useDriver((x) => (d = x), { args: ['--log-level', 'debug'], env: { VPOOL_NO_SYSCALLS: '1' } });

  it('publishes the device node as a file, keeps data across restage, snapshots, restores, clones and grows', async () => {
    const from = d.logs.length;
    await blockLifecycle(d);
    const used = new Set(commandsSince(d, from));
    for (const c of ['losetup', 'mount', 'umount']) assert.ok(used.has(c), `${c} ran`);
  });
});

async function blockLifecycle(d: Driver): Promise<void> {
  {
    const cap = blockCap();
    const vol = await createVolume(d, 'vm-disk', 32 * MiB, cap);
    const p = await paths(d, 'vm-disk');
    await stageAndPublish(d, vol.volume_id, p, cap);
    const st = await stat(p.target);
    assert.ok(st.isBlockDevice(), 'target_path is a block device node, as KubeVirt expects');
    assert.equal(await blockDeviceSize(`/dev/${path.basename(await realDevice(p.target))}`), 32 * MiB);

    const data = pattern('disk', 2 * MiB);
    await writeAt(p.target, 5 * MiB, data);
    const sum = createHash('sha256').update(data).digest('hex');
    await unpublishAndUnstage(d, vol.volume_id, p);
    await assert.rejects(stat(p.target), { code: 'ENOENT' });
    await stageAndPublish(d, vol.volume_id, p, cap);
    assert.equal(await sumAt(p.target, 5 * MiB, 2 * MiB), sum, 'data survives unstage and restage');

    const snap = (await d.client.createSnapshot({ name: 'disk-snap', source_volume_id: vol.volume_id })).snapshot!;
    await writeAt(p.target, 5 * MiB, pattern('changed', 2 * MiB));
    const restored = await createVolume(d, 'vm-disk-restored', 32 * MiB, cap, { source: { snapshot: snap.snapshot_id } });
    const rp = await paths(d, 'restored');
    await stageAndPublish(d, restored.volume_id, rp, cap);
    assert.equal(await sumAt(rp.target, 5 * MiB, 2 * MiB), sum, 'restore holds the snapshot-time data');
    await unpublishAndUnstage(d, restored.volume_id, rp);

    // The source is staged: on a pool that cannot reflink the clone is refused until it is detached.
    const clone = await cloneOfStaged(d, () => createVolume(d, 'vm-disk-clone', 48 * MiB, cap, { source: { volume: vol.volume_id } }), { id: vol.volume_id, p, cap });
    assert.equal(clone.capacity_bytes, String(48 * MiB), 'a clone may be larger than its source');
    const cp = await paths(d, 'clone');
    await stageAndPublish(d, clone.volume_id, cp, cap);
    assert.equal(await sumAt(cp.target, 5 * MiB, 2 * MiB), createHash('sha256').update(pattern('changed', 2 * MiB)).digest('hex'));
    await unpublishAndUnstage(d, clone.volume_id, cp);

    // Read-only publish: a separate read-only device, so writes through the node fail.
    const ro = path.join(d.mntDir, 'pods', 'vm-disk', 'ro');
    await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: ro, volume_capability: cap, readonly: true });
    await assert.rejects(writeAt(ro, 0, Buffer.alloc(4096)), (err: NodeJS.ErrnoException) => err.code === 'EROFS' || err.code === 'EPERM' || err.code === 'EACCES');
    assert.equal(await sumAt(ro, 5 * MiB, 2 * MiB), createHash('sha256').update(pattern('changed', 2 * MiB)).digest('hex'));
    await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: ro });

    const grown = await d.client.nodeExpandVolume({ volume_id: vol.volume_id, volume_path: p.target, capacity_range: { required_bytes: String(40 * MiB) } });
    assert.equal(grown.capacity_bytes, String(40 * MiB));
    const stats = await d.client.nodeGetVolumeStats({ volume_id: vol.volume_id, volume_path: p.target });
    assert.deepEqual(stats.usage.map((u) => [u.unit, u.total]), [['BYTES', String(40 * MiB)]]);

    await unpublishAndUnstage(d, vol.volume_id, p);
    for (const id of [vol.volume_id, restored.volume_id, clone.volume_id]) await d.client.deleteVolume({ volume_id: id });
    await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
  }
}

/** The /dev node a published block file stands for (same device number). */
async function realDevice(target: string): Promise<string> {
  const { rdev } = await stat(target);
  const { readdir } = await import('node:fs/promises');
  for (const n of await readdir('/dev')) {
    if (!n.startsWith('loop') || n === 'loop-control') continue;
    const s = await stat(`/dev/${n}`).catch(() => null);
    if (s?.rdev === rdev) return `/dev/${n}`;
  }
  throw new Error(`no /dev/loop node matches ${target}`);
}
