import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { blockCap, mountCap } from '../helpers/csi.js';
import { codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { rbdPool, startCeph, type TestCeph } from '../helpers/ceph.js';
import { guestDisk, startLibvirt, testDomain, URI, virsh, type TestDomain, type TestPool } from '../helpers/libvirt.js';

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
  const domains: TestDomain[] = [];
  let domDir = '';
  const args = () => ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'hv-rbd'];
  before(async () => {
    await startLibvirt();
    ceph = await startCeph();
    pool = await rbdPool(ceph, 'vpool-rbd');
    d = await startDriver({ args: args() });
  });
  after(async () => {
    const left = d ? await finish(d) : [];
    for (const dom of domains) await dom.remove();
    if (domDir) await rm(domDir, { recursive: true, force: true });
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

describe('libvirt on a real Ceph: one rbd volume shared by two running domains', needsRoot(), () => {
  let ceph: TestCeph;
  let pool: TestPool;
  let d: Driver;
  let dir = '';
  const doms: TestDomain[] = [];
  before(async () => {
    await startLibvirt();
    ceph = await startCeph();
    pool = await rbdPool(ceph, 'vpool-rbd-shared');
    d = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'hv-rbd-shared'] });
  });
  after(async () => {
    const left = d ? await finish(d) : [];
    for (const dom of doms) await dom.remove();
    if (dir) await rm(dir, { recursive: true, force: true });
    const images = pool ? await pool.volumes().catch(() => []) : [];
    await pool?.remove();
    await ceph?.stop();
    assert.deepEqual(left, []);
    assert.deepEqual(images, [], 'nothing is left in the pool');
  });

  const publish = (volume_id: string, node_id: string, cap = blockCap('MULTI_NODE_MULTI_WRITER')) =>
    d.client.controllerPublishVolume({ volume_id, node_id, volume_capability: cap, readonly: false, secrets: {}, volume_context: {} });

  it('refuses a filesystem on several nodes, with the reason, before anything is made', async () => {
    const req = { name: 'pvc-rbd-rwx-fs', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [mountCap('ext4', 'MULTI_NODE_MULTI_WRITER')], parameters: {} };
    const err = await d.client.createVolume(req).then(() => null, (e: Error & { code?: number }) => e);
    assert.match(String(err?.message), /single-node filesystems.*corrupted/);
    assert.equal(await codeOf(d.client.createVolume(req)), 'INVALID_ARGUMENT');
    assert.deepEqual(await pool.volumes(), [], 'no image was made');
  });

  // Each guest (test/libvirt/idle-guest.sh, vpstamp) writes its own word into its own sector of the shared disk
  // as it appears, and reports sectors 0-3 read past its cache: each must see the other's word, written by another QEMU through librbd.
  it('attaches one image to two domains at once: what one writes the other reads; unpublishing one leaves the other attached', async () => {
    dir = await mkdtemp('/var/tmp/vpool-rbd-doms-');
    const words = [`alpha-${randomBytes(4).toString('hex')}`, `beta-${randomBytes(4).toString('hex')}`];
    for (const [i, w] of words.entries()) doms.push(await testDomain(`vpool-rbd-node${i}-${randomBytes(3).toString('hex')}`, dir, true, { stamp: `${i}:${w}` }));
    const [a, b] = doms;
    const vol = (await d.client.createVolume({ name: 'pvc-rbd-rwx', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [blockCap('MULTI_NODE_MULTI_WRITER')], parameters: {} })).volume!;
    const serial = `vp-${vol.volume_id.slice(-16)}`;
    await publish(vol.volume_id, a.uuid);
    await publish(vol.volume_id, b.uuid);
    for (const dom of [a, b]) {
      const xml = await virsh('dumpxml', dom.name);
      assert.match(xml, /<disk type='network' device='disk'>[\s\S]*<source protocol='rbd' name='rbd\/[^']+'[\s\S]*<shareable\/>/, `${dom.name} has the image as a shareable network disk`);
      assert.doesNotMatch(xml, /<disk type='file'[^>]*>\s*<driver[^>]*>\s*<source file='[^']*vol-/, 'not through a file on the host');
    }
    const both = (line: string) => {
      const disk = guestDisk(line, serial);
      return disk !== null && disk.words[0] === words[0] && disk.words[1] === words[1];
    };
    const seenA = guestDisk(await a.waitDisks(both, 120_000), serial)!;
    const seenB = guestDisk(await b.waitDisks(both, 120_000), serial)!;
    assert.equal(seenA.sectors, (32 * MiB) / 512);
    assert.equal(seenB.ro, false);
    const published = (await d.client.controllerGetVolume({ volume_id: vol.volume_id })).status!.published_node_ids.sort();
    assert.deepEqual(published, [a.uuid, b.uuid].sort());

    await d.client.controllerUnpublishVolume({ volume_id: vol.volume_id, node_id: a.uuid, secrets: {} });
    await a.waitDisks((l) => guestDisk(l, serial) === null, 60_000);
    assert.ok(guestDisk((await b.console()).split('\n').filter((l) => l.startsWith('GUEST DISKS:')).pop() ?? '', serial), 'b still has the disk');
    assert.match(await virsh('dumpxml', b.name), new RegExp(`<serial>${serial}</serial>`), "and b's definition still holds it");
    assert.deepEqual((await d.client.controllerGetVolume({ volume_id: vol.volume_id })).status!.published_node_ids, [b.uuid]);
    assert.equal(await codeOf(d.client.deleteVolume({ volume_id: vol.volume_id })), 'FAILED_PRECONDITION', 'still attached to b');

    await d.client.controllerUnpublishVolume({ volume_id: vol.volume_id, node_id: b.uuid, secrets: {} });
    await b.waitDisks((l) => guestDisk(l, serial) === null, 60_000);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  });
});
