import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { idFor } from '../../src/ids.js';
import { localSocketFor, RpcLibvirt } from '../../src/pool/libvirt/rpc/rpc-libvirt.js';
import { Virsh } from '../../src/pool/libvirt/virsh.js';
import { blockCap, mountCap } from '../helpers/csi.js';
import { readAt, writeAt } from '../helpers/data.js';
import { codeOf, finish, MiB, needsRoot, pattern, startDriver, type Driver } from '../helpers/driver.js';
import { dirPool, finishHypervisorSuite, guestDisk, libvirtdClientPids, pollUntil, startLibvirt, testDomain, URI, virsh, type TestDomain, type TestPool } from '../helpers/libvirt.js';

// Hypervisor mode for real: a TCG domain under a real libvirtd, volumes hot-plugged into it by
// ControllerPublishVolume and seen by the guest's kernel, which reports its disks on its console.
describe('libvirt hypervisor mode: hot-plug into a running TCG domain', needsRoot(), () => {
  let pool: TestPool;
  let d: Driver;
  let node: TestDomain;
  let idle: TestDomain;
  const publish = (volume_id: string, node_id: string, cap = blockCap(), readonly = false) =>
    d.client.controllerPublishVolume({ volume_id, node_id, volume_capability: cap, readonly, secrets: {}, volume_context: {} });
  const unpublish = (volume_id: string, node_id = '') => d.client.controllerUnpublishVolume({ volume_id, node_id, secrets: {} });
  const create = async (name: string, bytes: number, parameters: Record<string, string> = {}) =>
    (await d.client.createVolume({ name, capacity_range: { required_bytes: String(bytes) }, volume_capabilities: [blockCap()], parameters })).volume!;
  const blklist = async (dom: string) => virsh('domblklist', dom, '--details');
  const liveXml = async (dom: string) => virsh('dumpxml', dom);
  const configXml = async (dom: string) => virsh('dumpxml', dom, '--inactive');

  before(async () => {
    await startLibvirt();
    pool = await dirPool('vpool-hp');
    node = await testDomain(`vpool-node-${path.basename(pool.dir).slice(-6)}`, pool.dir.replace(/$/, '-dom'), true).catch(async (err) => {
      throw err;
    });
    idle = await testDomain(`vpool-idle-${path.basename(pool.dir).slice(-6)}`, pool.dir.replace(/$/, '-dom'), false);
    d = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'hv-test', '--max-volumes-per-node', '3', '--attach-timeout', '20'] });
  });
  after(() => finishHypervisorSuite(d, pool, [node, idle]));

  it('publishes into the running domain: domblklist and the guest see the disk with its serial; unpublish takes it away', async () => {
    const v = await create('pvc-hot', 16 * MiB);
    const serial = `vp-${v.volume_id.slice(-16)}`;
    const res = await publish(v.volume_id, node.uuid);
    assert.deepEqual(res.publish_context, { serial, devicePath: `/dev/disk/by-id/virtio-${serial}` });
    assert.ok(serial.length <= 20);
    const list = await blklist(node.name);
    assert.match(list, new RegExp(`volume\\s+disk\\s+vdb\\s+${v.volume_id}\\.raw`));
    const live = await liveXml(node.name);
    assert.match(live, new RegExp(`<serial>${serial}</serial>`));
    assert.match(live, /cache='none' io='native'/);
    assert.match(await configXml(node.name), new RegExp(`<serial>${serial}</serial>`), 'persistent: in the definition too');
    const seen = guestDisk(await node.waitDisks((l) => guestDisk(l, serial) !== null), serial)!;
    assert.equal(seen.sectors * 512, 16 * MiB);
    assert.equal(seen.ro, false);

    assert.deepEqual((await publish(v.volume_id, node.uuid)).publish_context, res.publish_context, 'idempotent');
    assert.deepEqual((await publish(v.volume_id, node.name)).publish_context, res.publish_context, 'the domain name is the same node');
    assert.equal(await codeOf(publish(v.volume_id, node.uuid, blockCap(), true)), 'ALREADY_EXISTS', 'published read-write, asked read-only');
    assert.equal(await codeOf(publish(v.volume_id, idle.uuid)), 'FAILED_PRECONDITION', 'single-node volume on another node');
    assert.deepEqual((await d.client.controllerGetVolume({ volume_id: v.volume_id })).status?.published_node_ids, [node.uuid]);
    assert.equal(await codeOf(d.client.deleteVolume({ volume_id: v.volume_id })), 'FAILED_PRECONDITION', 'attached: not deleted');

    await unpublish(v.volume_id, node.uuid);
    assert.doesNotMatch(await blklist(node.name), new RegExp(v.volume_id));
    assert.doesNotMatch(await configXml(node.name), new RegExp(serial));
    await node.waitDisks((l) => guestDisk(l, serial) === null);
    await unpublish(v.volume_id, node.uuid);
    assert.deepEqual((await d.client.controllerGetVolume({ volume_id: v.volume_id })).status?.published_node_ids, []);
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('grows a disk in use through QEMU (the guest sees the size), and snapshots it with a backup job', async () => {
    const v = await create('pvc-live', 16 * MiB);
    const serial = `vp-${v.volume_id.slice(-16)}`;
    const data = pattern('live', MiB);
    await writeAt(path.join(pool.dir, `${v.volume_id}.raw`), 5 * MiB, data);
    await publish(v.volume_id, node.uuid);
    await node.waitDisks((l) => guestDisk(l, serial) !== null);
    const grown = await d.client.controllerExpandVolume({ volume_id: v.volume_id, capacity_range: { required_bytes: String(32 * MiB) }, volume_capability: blockCap() });
    assert.deepEqual(grown, { capacity_bytes: String(32 * MiB), node_expansion_required: false });
    assert.equal(guestDisk(await node.waitDisks((l) => guestDisk(l, serial)?.sectors === (32 * MiB) / 512), serial)!.sectors * 512, 32 * MiB);

    const snap = (await d.client.createSnapshot({ name: 'snap-live', source_volume_id: v.volume_id, parameters: {}, secrets: {} })).snapshot!;
    assert.equal(snap.size_bytes, String(32 * MiB));
    assert.ok(d.logs.some((l) => l.includes('copying a running disk with a backup job')), 'a running disk is copied by QEMU, not behind its back');
    const snapFile = path.join(pool.dir, (await pool.volumes()).find((n) => n.startsWith(snap.snapshot_id))!);
    assert.ok((await readAt(snapFile, 5 * MiB, MiB)).equals(data), 'the snapshot holds the disk\'s data');
    assert.equal(await codeOf(d.client.createVolume({ name: 'pvc-live-clone', volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { volume: { volume_id: v.volume_id } } })), 'FAILED_PRECONDITION', 'a clone of a disk in use is refused; a snapshot is the consistent way');

    await unpublish(v.volume_id);
    await node.waitDisks((l) => guestDisk(l, serial) === null);
    const restored = (await d.client.createVolume({ name: 'pvc-live-restore', volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } })).volume!;
    assert.ok((await readAt(path.join(pool.dir, (await pool.volumes()).find((n) => n.startsWith(restored.volume_id))!), 5 * MiB, MiB)).equals(data));
    await d.client.deleteVolume({ volume_id: restored.volume_id });
    await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('MULTI_NODE_MULTI_WRITER attaches one shareable disk to two domains (live and persistent-only); read-only is honoured', async () => {
    const shared = await create('pvc-shared', 8 * MiB);
    const sSerial = `vp-${shared.volume_id.slice(-16)}`;
    await publish(shared.volume_id, node.uuid, blockCap('MULTI_NODE_MULTI_WRITER'));
    await publish(shared.volume_id, idle.uuid, blockCap('MULTI_NODE_MULTI_WRITER'));
    assert.match(await liveXml(node.name), /<shareable\/>/);
    assert.match(await configXml(idle.name), new RegExp(`<shareable/>\\s*<serial>${sSerial}</serial>`), 'a stopped domain gets it in its definition');
    const published = (await d.client.controllerGetVolume({ volume_id: shared.volume_id })).status!.published_node_ids.sort();
    assert.deepEqual(published, [node.uuid, idle.uuid].sort());
    const listed = (await d.client.listVolumes({ max_entries: 0, starting_token: '' })).entries.find((e) => e.volume?.volume_id === shared.volume_id);
    assert.deepEqual(listed?.status?.published_node_ids.sort(), published, 'ListVolumes reports the same (LIST_VOLUMES_PUBLISHED_NODES)');
    await node.waitDisks((l) => guestDisk(l, sSerial) !== null);

    const ro = await create('pvc-ro', 8 * MiB);
    const rSerial = `vp-${ro.volume_id.slice(-16)}`;
    await publish(ro.volume_id, node.uuid, mountCap('ext4'), true);
    assert.match(await liveXml(node.name), /<readonly\/>/);
    assert.equal(guestDisk(await node.waitDisks((l) => guestDisk(l, rSerial) !== null), rSerial)!.ro, true, 'the guest sees a read-only disk');

    // Three of ours on the node now with the next one: the limit (--max-volumes-per-node 3) holds at the fourth.
    const third = await create('pvc-third', 4 * MiB);
    const fourth = await create('pvc-fourth', 4 * MiB);
    await publish(third.volume_id, node.uuid);
    assert.equal(await codeOf(publish(fourth.volume_id, node.uuid)), 'RESOURCE_EXHAUSTED');

    // QEMU locks a qcow2 image to one writer: refused before anything is attached anywhere.
    const q = await create('pvc-qcow2-shared', 4 * MiB, { format: 'qcow2' });
    assert.equal(await codeOf(publish(q.volume_id, idle.uuid, blockCap('MULTI_NODE_MULTI_WRITER'))), 'FAILED_PRECONDITION');
    assert.doesNotMatch(await configXml(idle.name), new RegExp(`vp-${q.volume_id.slice(-16)}`));

    await unpublish(shared.volume_id); // every node
    assert.doesNotMatch(await configXml(idle.name), new RegExp(sSerial));
    for (const v of [ro, third]) await unpublish(v.volume_id, node.uuid);
    await node.waitDisks((l) => !l.includes('vp-'));
    for (const v of [shared, ro, third, fourth, q]) await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('a controller on the virsh transport (remote URIs) hot-plugs and releases the same way', async () => {
    const viaVirsh = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-transport', 'virsh', '--libvirt-pool', pool.name, '--hypervisor', 'hv-test', '--attach-timeout', '20'] });
    try {
      const v = (await viaVirsh.client.createVolume({ name: 'pvc-virsh', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: {} })).volume!;
      const serial = `vp-${v.volume_id.slice(-16)}`;
      await viaVirsh.client.controllerPublishVolume({ volume_id: v.volume_id, node_id: node.uuid, volume_capability: blockCap(), readonly: false, secrets: {}, volume_context: {} });
      assert.match(await blklist(node.name), new RegExp(`${v.volume_id}\\.raw`));
      await node.waitDisks((l) => guestDisk(l, serial) !== null);
      await viaVirsh.client.controllerUnpublishVolume({ volume_id: v.volume_id, node_id: node.uuid, secrets: {} });
      assert.doesNotMatch(await blklist(node.name), new RegExp(v.volume_id));
      assert.doesNotMatch(await configXml(node.name), new RegExp(serial));
      await node.waitDisks((l) => guestDisk(l, serial) === null);
      await viaVirsh.client.deleteVolume({ volume_id: v.volume_id });
    } finally {
      assert.deepEqual(await finish(viaVirsh), []);
    }
  });

  // The wait for a guest slower than libvirt's own (domains.ts) stands on these streams: a callback
  // on the held RPC connection (the default), and `virsh event` through the command runner.
  it('libvirt\'s device-removed event reaches a watch of the domain, over RPC and through virsh', async () => {
    const v = await create('pvc-event', 8 * MiB);
    await publish(v.volume_id, node.uuid);
    const rpc = new RpcLibvirt(URI, localSocketFor(URI)!);
    const overRpc = rpc.deviceRemoved(node.uuid, 30_000);
    const overVirsh = new Virsh(URI).events(node.uuid, 'device-removed', 30_000);
    const within = (p: Promise<string | null>) => Promise.race([p, new Promise<string>((r) => setTimeout(() => r('no event within 20 s'), 20_000))]);
    try {
      // The RPC watch: libvirtd answered its registration. virsh's: its process is among libvirtd's clients
      // (it registers right after connecting, and the event comes only once the guest let go of the disk).
      assert.equal(await overRpc.ready, true);
      await pollUntil(async () => ((await libvirtdClientPids()).includes(overVirsh.pid!) ? true : undefined), 30_000, async () => `virsh event (pid ${overVirsh.pid}) never connected`);
      // `Type Device Target Source` rows: the volume's target, detached behind the driver's back.
      const row = (await blklist(node.name)).split('\n').find((l) => l.includes(v.volume_id));
      assert.ok(row, 'the volume is attached');
      await virsh('detach-disk', node.name, row.trim().split(/\s+/)[2], '--live', '--config');
      assert.match((await within(overRpc.next())) ?? 'the watch ended', /^virtio-disk\d+$/, 'the RPC watch gives the device alias');
      assert.match((await within(overVirsh.next())) ?? 'the watch ended', /device-removed/);
    } finally {
      await overRpc.stop();
      await overVirsh.stop();
      rpc.close();
    }
    await unpublish(v.volume_id, node.uuid);
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('a node that does not exist is NOT_FOUND; unpublishing from it is done', async () => {
    const v = await create('pvc-nowhere', 4 * MiB);
    assert.equal(await codeOf(publish(v.volume_id, '00000000-0000-4000-8000-000000000000')), 'NOT_FOUND');
    assert.equal(await codeOf(publish(idFor('vol', 'gone'), node.uuid)), 'NOT_FOUND');
    assert.equal(await codeOf(unpublish(v.volume_id, '00000000-0000-4000-8000-000000000000')), 'OK');
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });
});
