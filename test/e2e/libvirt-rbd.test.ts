import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { blockCap, mountCap } from '../helpers/csi.js';
import { codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { rbdPool, startCeph, type TestCeph } from '../helpers/ceph.js';
import { guestDisk, pollUntil, startLibvirt, testDomain, URI, virsh, type TestDomain, type TestPool } from '../helpers/libvirt.js';

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
  const args = (poolName = pool.name) => ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', poolName, '--hypervisor', 'hv-rbd'];
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
    // libvirt wipes rbd images with zero or trim only: refused at create, not when the volume could no longer be deleted.
    assert.equal(await codeOf(d.client.createVolume({ name: 'pvc-rbd-random', capacity_range: { required_bytes: String(MiB) }, volume_capabilities: [blockCap()], parameters: { wipe: 'random' } })), 'INVALID_ARGUMENT');
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

  const images = async () => (await ceph.rbd('ls', 'rbd')).split('\n').filter(Boolean);
  const imageOf = async (id: string) => (await images()).find((i) => i.startsWith(`${id}.`) && !i.endsWith('.retired'))!;
  const parentOf = async (image: string) => (JSON.parse(await ceph.rbd('info', '--format', 'json', `rbd/${image}`)) as { parent?: { image: string } }).parent?.image;
  const exportHash = async (spec: string) => {
    const { createHash } = await import('node:crypto');
    const { execFile } = await import('node:child_process');
    return new Promise<string>((resolve, reject) => {
      const h = createHash('sha256');
      const p = execFile('rbd', ['-c', ceph.conf, 'export', '--no-progress', spec, '-'], { encoding: 'buffer', maxBuffer: 1 << 30 }, (err) => (err ? reject(err) : resolve(h.digest('hex'))));
      p.stdout!.on('data', (b: Buffer) => h.update(b));
    });
  };
  const write = (image: string, offset: string) => ceph.rbd('bench', '--io-type', 'write', '--io-size', '64K', '--io-total', '4M', '--io-pattern', 'rand', '--io-threads', '1', `rbd/${image}`).then(() => offset);
  const mkVol = async (name: string, source?: { snapshot?: { snapshot_id: string }; volume?: { volume_id: string } }, parameters: Record<string, string> = {}) =>
    (await d.client.createVolume({ name, capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [blockCap()], parameters, ...(source ? { volume_content_source: source } : {}) })).volume!;
  const mkSnap = async (name: string, source_volume_id: string) => (await d.client.createSnapshot({ name, source_volume_id, parameters: {}, secrets: {} })).snapshot!;

  it('snapshots and restores are Ceph clones with the data of their instant; a deleted parent is retired while clones read it and goes with the last of them, across a restart', async () => {
    const a = await mkVol('pvc-rbd-parent');
    await write(await imageOf(a.volume_id), 'first');
    const atSnapshot = await exportHash(`rbd/${await imageOf(a.volume_id)}`);
    const s = await mkSnap('snap-rbd-1', a.volume_id);
    assert.equal(s.ready_to_use, true);
    const sImage = await imageOf(s.snapshot_id);
    assert.equal(await parentOf(sImage), await imageOf(a.volume_id), 'the snapshot is a Ceph clone of the volume');
    await write(await imageOf(a.volume_id), 'after'); // changes the volume, not its snapshot
    assert.notEqual(await exportHash(`rbd/${await imageOf(a.volume_id)}`), atSnapshot);
    // libvirt's rbd backend copies a volume written since an earlier copy no more (clone-chains.ts, rbdRecopyRefusal): said, nothing made.
    const before = await images();
    const again = await d.client.createSnapshot({ name: 'snap-rbd-2', source_volume_id: a.volume_id, parameters: {}, secrets: {} }).then(() => null, (e: Error & { code?: number }) => e);
    assert.equal(again?.code, 9, `FAILED_PRECONDITION: ${again?.message}`);
    assert.match(String(again?.message), /cannot copy .* again, most likely because it was copied before .* and written since/);
    assert.deepEqual(await images(), before, 'nothing was made');
    const b = await mkVol('pvc-rbd-restored', { snapshot: { snapshot_id: s.snapshot_id } });
    assert.equal(await parentOf(await imageOf(b.volume_id)), sImage, 'the restore is a Ceph clone of the snapshot');
    assert.equal(await exportHash(`rbd/${await imageOf(b.volume_id)}`), atSnapshot, 'and holds the data of the snapshot\'s instant');

    // The volume goes from the CO's view at once; its image stays while the snapshot (a clone of it) reads it.
    await d.client.deleteVolume({ volume_id: a.volume_id });
    assert.ok(!(await d.client.listVolumes({})).entries.some((e) => e.volume!.volume_id === a.volume_id), 'no longer listed');
    assert.ok((await images()).includes(`${a.volume_id}.retired`), 'a tombstone in Ceph says it was deleted');
    assert.equal(await codeOf(d.client.deleteVolume({ volume_id: a.volume_id })), 'OK', 'a retried delete is done');
    assert.equal(await codeOf(mkVol('pvc-rbd-parent')), 'FAILED_PRECONDITION', 'its name cannot be made again while its image is read');
    await d.client.deleteSnapshot({ snapshot_id: s.snapshot_id });
    assert.ok(!(await d.client.listSnapshots({})).entries.some((e) => e.snapshot!.snapshot_id === s.snapshot_id));
    assert.equal(await exportHash(`rbd/${await imageOf(b.volume_id)}`), atSnapshot, 'the restore still reads its data through both retired images');

    // Ceph is the source of truth: a second controller, through another libvirt pool on the same Ceph pool (as another
    // hypervisor's libvirtd would define it, with a Ceph user of its own), knows the chain from the names in Ceph alone.
    await d.stop();
    const second = await rbdPool(ceph, 'vpool-rbd-second');
    const d2 = await startDriver({ args: args(second.name) });
    try {
      assert.deepEqual((await d2.client.listVolumes({})).entries.map((e) => e.volume!.volume_id), [b.volume_id]);
      assert.deepEqual((await d2.client.listSnapshots({})).entries, [], 'the retired snapshot is absent there too');
      await d2.client.deleteVolume({ volume_id: b.volume_id });
      assert.deepEqual(await images(), [], 'the last clone took its retired snapshot and volume with it');
    } finally {
      await finish(d2);
      await second.remove();
    }
    // The first libvirtd lists the pool as it last read it from Ceph until the pool is refreshed (docs/libvirt.md: the driver
    // does not refresh, since a refresh that fails makes libvirt stop the pool); refreshed, the first controller lists nothing.
    const listedUnrefreshed = (await virsh('vol-list', pool.name)).split('\n').filter((l) => l.trim());
    assert.ok(listedUnrefreshed.some((l) => l.includes(b.volume_id)), "the first libvirt pool's listing is stale until refreshed");
    await virsh('pool-refresh', pool.name);
    d = await startDriver({ dir: d.dir, args: args() });
    assert.deepEqual((await d.client.listVolumes({})).entries, []);
    assert.deepEqual(await pool.volumes(), []);
  });

  // The monitor hung (SIGSTOP: it takes connections and answers nothing) for the whole call: libvirt gives up after its
  // 30 s RADOS timeouts, and the driver must say the storage is unavailable, make nothing, and succeed on the retry.
  it('a hung monitor: CreateVolume gets UNAVAILABLE once libvirt gives up, nothing is made in Ceph, and the retry succeeds', async () => {
    const src = await mkVol('pvc-rbd-mon-src');
    const s = await mkSnap('snap-rbd-mon', src.volume_id);
    const before = await images();
    const req = { name: 'pvc-rbd-mon', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { snapshot: { snapshot_id: s.snapshot_id } } };
    await ceph.signal('mon.a', 'SIGSTOP');
    let err: (Error & { code?: number }) | null;
    try {
      err = await d.client.createVolume(req).then(() => null, (e: Error & { code?: number }) => e);
    } finally {
      await ceph.signal('mon.a', 'SIGCONT');
    }
    assert.equal(err?.code, 14, `UNAVAILABLE, not ${err?.code}: ${err?.message}`);
    assert.match(String(err?.message), /storage does not answer libvirtd.*RADOS monitor/);
    assert.deepEqual(await images(), before, 'nothing was made in Ceph');
    const v = (await d.client.createVolume(req)).volume!;
    assert.equal(await parentOf(await imageOf(v.volume_id)), await imageOf(s.snapshot_id), 'the retry makes the clone');
    await d.client.deleteVolume({ volume_id: v.volume_id });
    await d.client.deleteSnapshot({ snapshot_id: s.snapshot_id });
    await d.client.deleteVolume({ volume_id: src.volume_id });
    assert.deepEqual(await images(), []);
  });

  // A crash between a clone's removal and its parent's: modelled by removing the clone's image behind the driver's back (virsh),
  // as if the process died right after. The next start collects the retired parent, wiping it first as its class asked.
  it("what a crash leaves between a clone's removal and its retired parent's is collected at the next start (wiped as asked)", async () => {
    const a = await mkVol('pvc-rbd-crash', undefined, { wipe: 'zero' });
    const c = await mkVol('pvc-rbd-crash-clone', { volume: { volume_id: a.volume_id } });
    assert.equal(await parentOf(await imageOf(c.volume_id)), await imageOf(a.volume_id), 'a clone of the volume itself');
    await d.client.deleteVolume({ volume_id: a.volume_id });
    assert.ok((await images()).includes(`${a.volume_id}.retired`));
    await virsh('vol-delete', '--delete-snapshots', '--pool', pool.name, await imageOf(c.volume_id));
    assert.ok((await images()).includes(await imageOf(a.volume_id)), 'the parent stays: nobody collected it');
    await d.stop();
    d = await startDriver({ dir: d.dir, args: args() });
    await pollUntil(async () => ((await images()).length === 0 ? true : undefined), 60_000, async () => `left in Ceph: ${(await images()).join(', ')}`);
    assert.ok(d.logs.some((l) => l.includes('wiped a volume before deleting it') && l.includes(a.volume_id)), 'wiped before it went');
  });

  // A group member a restore reads is retired with its group; the group's name cannot be cut again until the restore goes
  // (its members' IDs come from the group and the volume: a new cut would put a second image under a retired ID).
  it('a deleted group whose member a restore still reads: its name is refused until the restore goes', async () => {
    const v = await mkVol('pvc-rbd-grouped');
    const req = { name: 'group-rbd', source_volume_ids: [v.volume_id], parameters: {} };
    const g = (await d.client.createVolumeGroupSnapshot(req)).group_snapshot!;
    const member = g.snapshots[0]!;
    const r = await mkVol('pvc-rbd-from-member', { snapshot: { snapshot_id: member.snapshot_id } });
    await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: g.group_snapshot_id, snapshot_ids: [member.snapshot_id] });
    assert.ok((await images()).includes(`${member.snapshot_id}.retired`), 'the member is retired');
    assert.deepEqual((await d.client.listSnapshots({})).entries, []);
    const again = await d.client.createVolumeGroupSnapshot(req).then(() => null, (e: Error & { code?: number }) => e);
    assert.equal(again?.code, 9, `FAILED_PRECONDITION: ${again?.message}`);
    assert.match(String(again?.message), /still read by Ceph clones/);
    await d.client.deleteVolume({ volume_id: r.volume_id });
    const g2 = (await d.client.createVolumeGroupSnapshot(req)).group_snapshot!;
    assert.equal(g2.snapshots[0]!.snapshot_id, member.snapshot_id, 'the same member ID, a new image');
    await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: g2.group_snapshot_id, snapshot_ids: [member.snapshot_id] });
    await d.client.deleteVolume({ volume_id: v.volume_id });
    assert.deepEqual(await images(), []);
  });

  it('a chain of clones is bounded: past 16 images a copy is refused with the reason; deleted oldest first, each is retired, and the newest takes the whole chain', async () => {
    const chain: Array<{ kind: 'vol' | 'snap'; id: string }> = [];
    let v = await mkVol('pvc-rbd-chain-0');
    chain.push({ kind: 'vol', id: v.volume_id });
    let refused = '';
    for (let i = 1; i <= 20 && !refused; i++) {
      if (i % 2 === 1) {
        const s = await d.client.createSnapshot({ name: `snap-rbd-chain-${i}`, source_volume_id: v.volume_id, parameters: {}, secrets: {} }).catch((e: Error) => e);
        if (s instanceof Error) refused = s.message;
        else chain.push({ kind: 'snap', id: s.snapshot!.snapshot_id });
      } else {
        const last = chain[chain.length - 1]!;
        const next = await mkVol(`pvc-rbd-chain-${i}`, { snapshot: { snapshot_id: last.id } }).catch((e: Error) => e);
        if (next instanceof Error) refused = next.message;
        else {
          v = next;
          chain.push({ kind: 'vol', id: v.volume_id });
        }
      }
    }
    assert.equal(chain.length, 17, 'sixteen clones on the first image');
    assert.match(refused, /16 levels deep in Ceph.*cannot flatten/);
    assert.equal((await images()).length, 17, 'the refused copy made nothing');
    // Oldest first: each is retired while the next reads it, and the newest's removal takes the whole chain.
    for (const c of chain.slice(0, -1)) {
      if (c.kind === 'vol') await d.client.deleteVolume({ volume_id: c.id });
      else await d.client.deleteSnapshot({ snapshot_id: c.id });
    }
    assert.equal((await images()).length, 17 + 16, 'every image stays, sixteen with a tombstone');
    assert.deepEqual((await d.client.listVolumes({})).entries.map((e) => e.volume!.volume_id), [chain[16]!.id], 'only the newest is listed');
    assert.deepEqual((await d.client.listSnapshots({})).entries, []);
    await d.client.deleteVolume({ volume_id: chain[16]!.id });
    assert.deepEqual(await images(), []);
  });
});

describe('libvirt on a real Ceph: one rbd volume shared by two running domains', needsRoot(), () => {
  let ceph: TestCeph;
  let pool: TestPool;
  let d: Driver;
  let dir = '';
  const doms: TestDomain[] = [];
  const stampWords = [`alpha-${randomBytes(4).toString('hex')}`, `beta-${randomBytes(4).toString('hex')}`];
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

  // Each guest (test/libvirt/idle-guest.sh, vpstamp) writes its own word into its own 4 KiB block of the shared disk
  // as it appears, and reports blocks 0-3 read past its cache: each must see the other's word, written by another QEMU through librbd.
  it('attaches one image to two domains at once: what one writes the other reads; unpublishing one leaves the other attached', async () => {
    dir = await mkdtemp('/var/tmp/vpool-rbd-doms-');
    const words = stampWords;
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

    // A snapshot of the disk two running guests write: a Ceph snapshot, one instant of the image (crash-consistent), no copy job;
    // its restore, attached to b, holds a's word in the block b never wrote.
    const snap = (await d.client.createSnapshot({ name: 'snap-rbd-rwx', source_volume_id: vol.volume_id, parameters: {}, secrets: {} })).snapshot!;
    const restored = (
      await d.client.createVolume({ name: 'pvc-rbd-rwx-restored', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } })
    ).volume!;
    const rSerial = `vp-${restored.volume_id.slice(-16)}`;
    await publish(restored.volume_id, b.uuid, blockCap());
    const fromSnapshot = guestDisk(await b.waitDisks((l) => (guestDisk(l, rSerial)?.words.length ?? 0) === 4, 120_000), rSerial)!;
    assert.equal(fromSnapshot.words[0], words[0], "a's word, read by b through the snapshot's clone");
    await d.client.controllerUnpublishVolume({ volume_id: restored.volume_id, node_id: b.uuid, secrets: {} });
    await b.waitDisks((l) => guestDisk(l, rSerial) === null, 60_000);
    await d.client.deleteVolume({ volume_id: restored.volume_id });

    await d.client.controllerUnpublishVolume({ volume_id: vol.volume_id, node_id: a.uuid, secrets: {} });
    await a.waitDisks((l) => guestDisk(l, serial) === null, 60_000);
    assert.ok(guestDisk((await b.console()).split('\n').filter((l) => l.startsWith('GUEST DISKS:')).pop() ?? '', serial), 'b still has the disk');
    assert.match(await virsh('dumpxml', b.name), new RegExp(`<serial>${serial}</serial>`), "and b's definition still holds it");
    assert.deepEqual((await d.client.controllerGetVolume({ volume_id: vol.volume_id })).status!.published_node_ids, [b.uuid]);
    assert.equal(await codeOf(d.client.deleteVolume({ volume_id: vol.volume_id })), 'FAILED_PRECONDITION', 'still attached to b');

    await d.client.controllerUnpublishVolume({ volume_id: vol.volume_id, node_id: b.uuid, secrets: {} });
    await b.waitDisks((l) => guestDisk(l, serial) === null, 60_000);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
    await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
  });

  // The guests keep reading their vp- disks (idle-guest.sh drops its cache and reads blocks 0-3 every 0.2 s): b's reads wait in
  // librbd while the only OSD is gone, and its QEMU's session must carry on once the OSD is back.
  it('the only OSD killed and started again while a volume is attached and idle: the volume is usable afterwards, by the domain that held it and one attached after', async () => {
    const [a, b] = doms;
    const vol = (await d.client.createVolume({ name: 'pvc-rbd-osd', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [blockCap('MULTI_NODE_MULTI_WRITER')], parameters: {} })).volume!;
    const serial = `vp-${vol.volume_id.slice(-16)}`;
    await publish(vol.volume_id, b.uuid);
    await b.waitDisks((l) => guestDisk(l, serial)?.words[1] === stampWords[1], 120_000);
    await ceph.signal('osd.0', 'SIGKILL');
    await ceph.restart('osd.0');
    await pollUntil(async () => (/^[0-9]+ pgs: [0-9]+ active\+clean;/.test(await ceph.ceph('pg', 'stat').catch(() => '')) ? true : undefined), 120_000, async () => `placement groups: ${await ceph.ceph('pg', 'stat').catch((e: Error) => e.message)}`);
    await publish(vol.volume_id, a.uuid);
    const both = (line: string) => guestDisk(line, serial)?.words.slice(0, 2).join(',') === stampWords.join(',');
    const ioErrors = async () => (await b.console()).split('\n').filter((l) => /I\/O error|Buffer I\/O error|blk_update_request/.test(l));
    await a.waitDisks(both, 120_000);
    await b.waitDisks(both, 120_000);
    assert.deepEqual(await ioErrors(), [], "b's reads waited while the OSD was gone: no I/O error reached its kernel");
    for (const dom of [a, b]) {
      await d.client.controllerUnpublishVolume({ volume_id: vol.volume_id, node_id: dom.uuid, secrets: {} });
      await dom.waitDisks((l) => guestDisk(l, serial) === null, 60_000);
    }
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  });
});
