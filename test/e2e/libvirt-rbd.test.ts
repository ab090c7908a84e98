import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { blockCap } from '../helpers/csi.js';
import { codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { rbdPool, startCeph, type TestCeph } from '../helpers/ceph.js';
import { startLibvirt, URI, type TestPool } from '../helpers/libvirt.js';

interface RbdInfo {
  size: number;
  format: number;
}

// The libvirt controller on an `rbd` storage pool of a REAL single-node Ceph cluster (test/ceph/ceph-start.sh:
// Debian's ceph-mon, ceph-mgr and ceph-osd 16.2, bluestore on a file, no systemd), through the tests' real
// libvirtd with its rbd backend and a libvirt secret holding the Ceph user's key. No mock of Ceph: what the
// driver did is read back from Ceph itself (`rbd info`, `rbd ls`).
describe('libvirt on a real Ceph: volumes in an rbd pool', needsRoot(), () => {
  let ceph: TestCeph;
  let pool: TestPool;
  let d: Driver;
  const args = () => ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'hv-rbd'];
  before(async () => {
    await startLibvirt();
    ceph = await startCeph();
    pool = await rbdPool(ceph, 'vpool-rbd');
    d = await startDriver({ args: args() });
  });
  after(async () => {
    const left = d ? await finish(d) : [];
    const images = pool ? await pool.volumes().catch(() => []) : [];
    await pool?.remove();
    await ceph?.stop();
    assert.deepEqual(left, []);
    assert.deepEqual(images, [], 'nothing is left in the pool');
  });

  const info = async (image: string) => JSON.parse(await ceph.rbd('info', '--format', 'json', `rbd/${image}`)) as RbdInfo;

  it('creates, grows, recovers after a restart and deletes images in Ceph', async () => {
    const req = { name: 'pvc-rbd-1', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [blockCap()], parameters: {} };
    const vol = (await d.client.createVolume(req)).volume!;
    assert.equal(Number(vol.capacity_bytes), 64 * MiB);
    const images = (await ceph.rbd('ls', 'rbd')).split('\n').filter(Boolean);
    const image = images.find((i) => i.startsWith(vol.volume_id));
    assert.ok(image, `the volume is an image in Ceph (${images.join(', ')})`);
    assert.equal((await info(image)).size, 64 * MiB);
    assert.equal((await d.client.createVolume(req)).volume!.volume_id, vol.volume_id, 'a retried create lands on the same image');
    assert.equal((await ceph.rbd('ls', 'rbd')).split('\n').filter(Boolean).length, images.length, 'and makes no second one');

    // Capacity as Ceph reports it for the cluster the pool is on.
    const cap = Number((await d.client.getCapacity({ volume_capabilities: [blockCap()], parameters: {} })).available_capacity);
    const df = JSON.parse(await ceph.ceph('df', '--format', 'json')) as { stats: { total_bytes: number; total_avail_bytes: number } };
    assert.ok(cap > 0 && cap <= df.stats.total_bytes, `available ${cap} within the cluster's ${df.stats.total_bytes} bytes`);

    await d.client.controllerExpandVolume({ volume_id: vol.volume_id, capacity_range: { required_bytes: String(128 * MiB) }, volume_capability: blockCap() });
    assert.equal((await info(image)).size, 128 * MiB, 'grown in Ceph');

    // The backend is the source of truth: a new controller process finds the volume in Ceph alone.
    await d.stop();
    d = await startDriver({ dir: d.dir, args: args() });
    const listed = (await d.client.listVolumes({})).entries.map((e) => e.volume!);
    assert.deepEqual(listed.map((v) => [v.volume_id, Number(v.capacity_bytes)]), [[vol.volume_id, 128 * MiB]]);

    await d.client.deleteVolume({ volume_id: vol.volume_id });
    assert.equal((await ceph.rbd('ls', 'rbd')).split('\n').filter((i) => i.startsWith(vol.volume_id)).length, 0, 'gone from Ceph');
    assert.equal(await codeOf(d.client.deleteVolume({ volume_id: vol.volume_id })), 'OK');
  });
});
