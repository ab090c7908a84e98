import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { blockCap, createVolume, mountCap, paths } from '../helpers/csi.js';
import { codeOf, type Driver, MiB, needsRoot, useDriver } from '../helpers/driver.js';

// Each `it` is a MUST (or an error-code table row) of the CSI v1.12 spec for the RPCs this driver serves.
describe('CSI conformance over the socket', needsRoot(), () => {
  let d: Driver;
  useDriver((x) => (d = x));

  it('Identity: name, version, capabilities and a ready probe', async () => {
    const info = await d.client.getPluginInfo({});
    assert.equal(info.name, 'vpool.csi.dev');
    assert.match(info.vendor_version, /^\d+\.\d+\.\d+/);
    const caps = (await d.client.getPluginCapabilities({})).capabilities.map((c) => c.service?.type ?? `expansion:${c.volume_expansion?.type}`);
    // The file pool cuts group snapshots and tells its snapshots' blocks (docs/backup.md).
    assert.deepEqual(caps.sort(), ['CONTROLLER_SERVICE', 'GROUP_CONTROLLER_SERVICE', 'SNAPSHOT_METADATA_SERVICE', 'VOLUME_ACCESSIBILITY_CONSTRAINTS', 'expansion:OFFLINE', 'expansion:ONLINE']);
    assert.equal((await d.client.probe({})).ready?.value, true);
  });

  it('capabilities: the controller has no EXPAND or PUBLISH, the node stages, expands and reports condition', async () => {
    const ctl = (await d.client.controllerGetCapabilities({})).capabilities.map((c) => c.rpc?.type);
    for (const c of ['CREATE_DELETE_VOLUME', 'CREATE_DELETE_SNAPSHOT', 'LIST_VOLUMES', 'LIST_SNAPSHOTS', 'GET_CAPACITY', 'CLONE_VOLUME', 'GET_VOLUME', 'VOLUME_CONDITION']) assert.ok(ctl.includes(c as never), c);
    assert.ok(!ctl.includes('EXPAND_VOLUME') && !ctl.includes('PUBLISH_UNPUBLISH_VOLUME'));
    const node = (await d.client.nodeGetCapabilities({})).capabilities.map((c) => c.rpc?.type).sort();
    assert.deepEqual(node, ['EXPAND_VOLUME', 'GET_VOLUME_STATS', 'SINGLE_NODE_MULTI_WRITER', 'STAGE_UNSTAGE_VOLUME', 'VOLUME_CONDITION']);
    const ni = await d.client.nodeGetInfo({});
    assert.equal(ni.node_id, 'test-node');
    assert.deepEqual(ni.accessible_topology?.segments, { 'topology.vpool.dev/node': 'test-node' });
  });

  it('CreateVolume is idempotent on name; an incompatible retry is ALREADY_EXISTS', async () => {
    const a = await createVolume(d, 'idem', 8 * MiB, mountCap());
    const b = await createVolume(d, 'idem', 8 * MiB, mountCap());
    assert.deepEqual(b, a);
    assert.deepEqual(a.accessible_topology, [{ segments: { 'topology.vpool.dev/node': 'test-node' } }]);
    assert.equal(await codeOf(createVolume(d, 'idem', 16 * MiB, mountCap())), 'ALREADY_EXISTS');
    assert.equal(await codeOf(createVolume(d, 'idem', 8 * MiB, mountCap(), { parameters: { fsType: 'xfs' } })), 'ALREADY_EXISTS');
    // A range that contains the existing size is compatible.
    const c = await d.client.createVolume({ name: 'idem', capacity_range: { required_bytes: String(4 * MiB), limit_bytes: String(8 * MiB) }, volume_capabilities: [mountCap()] });
    assert.equal(c.volume?.volume_id, a.volume_id);
    await d.client.deleteVolume({ volume_id: a.volume_id });
  });

  it('CreateVolume error codes: missing fields, bad modes, parameters, ranges, topology, sources', async () => {
    const base = { name: 'errs', capacity_range: { required_bytes: String(MiB) }, volume_capabilities: [mountCap()] };
    assert.equal(await codeOf(d.client.createVolume({ ...base, name: '' })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.createVolume({ ...base, volume_capabilities: [] })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.createVolume({ ...base, volume_capabilities: [mountCap('', 'MULTI_NODE_MULTI_WRITER')] })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.createVolume({ ...base, volume_capabilities: [mountCap('', 'MULTI_NODE_READER_ONLY')] })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.createVolume({ ...base, volume_capabilities: [mountCap('vfat')] })), 'INVALID_ARGUMENT');
    const unknown = d.client.createVolume({ ...base, parameters: { color: 'blue' } });
    await assert.rejects(unknown, /unknown parameter "color"/);
    assert.equal(await codeOf(d.client.createVolume({ ...base, capacity_range: { required_bytes: String(MiB + 1), limit_bytes: String(MiB + 2) } })), 'OUT_OF_RANGE');
    assert.equal(await codeOf(d.client.createVolume({ ...base, capacity_range: { required_bytes: String(2 ** 52) } })), 'OUT_OF_RANGE');
    assert.equal(await codeOf(d.client.createVolume({ ...base, capacity_range: { required_bytes: String(2 ** 48) } })), 'RESOURCE_EXHAUSTED');
    assert.equal(await codeOf(d.client.createVolume({ ...base, volume_capabilities: [mountCap('xfs')], capacity_range: { required_bytes: String(MiB), limit_bytes: String(100 * MiB) } })), 'OUT_OF_RANGE');
    const elsewhere = { requisite: [{ segments: { 'topology.vpool.dev/node': 'other-node' } }], preferred: [] };
    assert.equal(await codeOf(d.client.createVolume({ ...base, accessibility_requirements: elsewhere })), 'RESOURCE_EXHAUSTED');
    const here = { requisite: [{ segments: { 'topology.vpool.dev/node': 'other-node' } }, { segments: { 'topology.vpool.dev/node': 'test-node' } }], preferred: [] };
    const placed = await d.client.createVolume({ ...base, name: 'placed', accessibility_requirements: here });
    await d.client.deleteVolume({ volume_id: placed.volume!.volume_id });
    assert.equal(await codeOf(d.client.createVolume({ ...base, volume_content_source: { snapshot: { snapshot_id: 'snap-gone-0123456789abcdef' } } })), 'NOT_FOUND');
    assert.equal(await codeOf(d.client.createVolume({ ...base, volume_content_source: { volume: { volume_id: 'vol-gone-0123456789abcdef' } } })), 'NOT_FOUND');
    assert.equal((await d.client.listVolumes({})).entries.length, 0, 'failed creates leave no volume behind');
  });

  it('a volume cannot be smaller than the snapshot it is restored from', async () => {
    const src = await createVolume(d, 'big-src', 16 * MiB, blockCap());
    const snap = (await d.client.createSnapshot({ name: 'big-snap', source_volume_id: src.volume_id })).snapshot!;
    const small = d.client.createVolume({ name: 'small', capacity_range: { required_bytes: String(8 * MiB), limit_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } });
    assert.equal(await codeOf(small), 'OUT_OF_RANGE');
    const auto = await d.client.createVolume({ name: 'auto', capacity_range: { required_bytes: String(MiB) }, volume_capabilities: [blockCap()], volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } });
    assert.equal(auto.volume?.capacity_bytes, String(16 * MiB), 'a restore is at least its snapshot\'s size');
    await d.client.deleteVolume({ volume_id: auto.volume!.volume_id });
    await d.client.deleteVolume({ volume_id: src.volume_id });
    await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
  });

  it('DeleteVolume and DeleteSnapshot are idempotent and OK for IDs that never existed', async () => {
    const v = await createVolume(d, 'del', MiB, mountCap());
    await d.client.deleteVolume({ volume_id: v.volume_id });
    await d.client.deleteVolume({ volume_id: v.volume_id });
    await d.client.deleteVolume({ volume_id: 'reallyfakevolumeid' });
    await d.client.deleteSnapshot({ snapshot_id: 'snap-none-0123456789abcdef' });
    assert.equal(await codeOf(d.client.deleteVolume({ volume_id: '' })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.deleteSnapshot({ snapshot_id: '' })), 'INVALID_ARGUMENT');
  });

  it('DeleteVolume of a staged volume is FAILED_PRECONDITION and deletes nothing', async () => {
    const v = await createVolume(d, 'busy', 8 * MiB, blockCap());
    const p = await paths(d, 'busy');
    await d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: blockCap() });
    assert.equal(await codeOf(d.client.deleteVolume({ volume_id: v.volume_id })), 'FAILED_PRECONDITION');
    assert.equal((await d.client.controllerGetVolume({ volume_id: v.volume_id })).status?.volume_condition?.abnormal, false);
    await d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging });
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('ValidateVolumeCapabilities confirms what it supports only, NOT_FOUND for a missing volume', async () => {
    const v = await createVolume(d, 'val', MiB, mountCap(), { parameters: {} });
    const ok = await d.client.validateVolumeCapabilities({ volume_id: v.volume_id, volume_capabilities: [mountCap('ext4'), blockCap()] });
    assert.equal(ok.confirmed?.volume_capabilities.length, 2);
    const bad = await d.client.validateVolumeCapabilities({ volume_id: v.volume_id, volume_capabilities: [mountCap('', 'MULTI_NODE_MULTI_WRITER')] });
    assert.equal(bad.confirmed, null);
    assert.match(bad.message, /MULTI_NODE_MULTI_WRITER/);
    assert.equal(await codeOf(d.client.validateVolumeCapabilities({ volume_id: 'vol-x-0123456789abcdef', volume_capabilities: [mountCap()] })), 'NOT_FOUND');
    assert.equal(await codeOf(d.client.validateVolumeCapabilities({ volume_id: v.volume_id, volume_capabilities: [] })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.validateVolumeCapabilities({ volume_id: '', volume_capabilities: [mountCap()] })), 'INVALID_ARGUMENT');
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('ListVolumes and ListSnapshots paginate, filter, and answer ABORTED to a bad token', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await createVolume(d, `page-${i}`, MiB, blockCap())).volume_id);
    const seen: string[] = [];
    let token = '';
    let pages = 0;
    do {
      const res = await d.client.listVolumes({ max_entries: 2, starting_token: token });
      assert.ok(res.entries.length <= 2);
      seen.push(...res.entries.map((e) => e.volume!.volume_id));
      for (const e of res.entries) assert.equal(e.status?.volume_condition?.abnormal, false);
      token = res.next_token;
      pages++;
    } while (token);
    assert.equal(pages, 3);
    assert.deepEqual(seen.sort(), [...ids].sort());
    assert.equal(await codeOf(d.client.listVolumes({ starting_token: 'not-a-token' })), 'ABORTED');
    assert.equal(await codeOf(d.client.listVolumes({ max_entries: -1 })), 'INVALID_ARGUMENT');

    const snaps: string[] = [];
    for (let i = 0; i < 3; i++) snaps.push((await d.client.createSnapshot({ name: `s-${i}`, source_volume_id: ids[i % 2] })).snapshot!.snapshot_id);
    assert.deepEqual((await d.client.listSnapshots({ source_volume_id: ids[0] })).entries.map((e) => e.snapshot!.snapshot_id).sort(), [snaps[0], snaps[2]].sort());
    assert.deepEqual((await d.client.listSnapshots({ snapshot_id: snaps[1] })).entries.map((e) => e.snapshot!.snapshot_id), [snaps[1]]);
    assert.equal((await d.client.listSnapshots({ snapshot_id: 'snap-none-0123456789abcdef' })).entries.length, 0);
    const p1 = await d.client.listSnapshots({ max_entries: 2 });
    const p2 = await d.client.listSnapshots({ max_entries: 2, starting_token: p1.next_token });
    assert.equal(p1.entries.length + p2.entries.length, 3);
    assert.equal(p2.next_token, '');
    assert.equal(await codeOf(d.client.listSnapshots({ starting_token: 'bogus' })), 'ABORTED');
    const got = await d.client.getSnapshot({ snapshot_id: snaps[0] });
    assert.equal(got.snapshot?.source_volume_id, ids[0]);
    assert.ok(Number(got.snapshot?.creation_time?.seconds) > 1_700_000_000);
    for (const s of snaps) await d.client.deleteSnapshot({ snapshot_id: s });
    for (const id of ids) await d.client.deleteVolume({ volume_id: id });
  });

  it('CreateSnapshot is idempotent; same name with another source is ALREADY_EXISTS; missing source NOT_FOUND', async () => {
    const a = await createVolume(d, 'snap-a', MiB, blockCap());
    const b = await createVolume(d, 'snap-b', MiB, blockCap());
    const s1 = (await d.client.createSnapshot({ name: 'one', source_volume_id: a.volume_id })).snapshot!;
    const s2 = (await d.client.createSnapshot({ name: 'one', source_volume_id: a.volume_id })).snapshot!;
    assert.deepEqual(s2, s1);
    assert.equal(await codeOf(d.client.createSnapshot({ name: 'one', source_volume_id: b.volume_id })), 'ALREADY_EXISTS');
    assert.equal(await codeOf(d.client.createSnapshot({ name: 'two', source_volume_id: 'vol-none-0123456789abcdef' })), 'NOT_FOUND');
    assert.equal(await codeOf(d.client.createSnapshot({ name: '', source_volume_id: a.volume_id })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.createSnapshot({ name: 'three', source_volume_id: '' })), 'INVALID_ARGUMENT');
    await d.client.deleteSnapshot({ snapshot_id: s1.snapshot_id });
    await d.client.deleteVolume({ volume_id: a.volume_id });
    await d.client.deleteVolume({ volume_id: b.volume_id });
  });

  it('GetCapacity honours topology, capabilities and parameters; creating shrinks it', async () => {
    const cap = await d.client.getCapacity({ volume_capabilities: [mountCap()], parameters: {}, accessible_topology: { segments: { 'topology.vpool.dev/node': 'test-node' } } });
    const avail = Number(cap.available_capacity);
    assert.ok(avail > 64 * MiB);
    assert.ok(Number(cap.maximum_volume_size?.value) <= avail);
    assert.equal((await d.client.getCapacity({ accessible_topology: { segments: { 'topology.vpool.dev/node': 'elsewhere' } } })).available_capacity, '0');
    assert.equal((await d.client.getCapacity({ volume_capabilities: [mountCap('', 'MULTI_NODE_MULTI_WRITER')] })).available_capacity, '0');
    assert.equal(await codeOf(d.client.getCapacity({ parameters: { bogus: '1' } })), 'INVALID_ARGUMENT');
    const v = await createVolume(d, 'cap', 64 * MiB, blockCap());
    const after = Number((await d.client.getCapacity({})).available_capacity);
    assert.ok(avail - after >= 60 * MiB, `a sparse 64 MiB volume still counts against capacity (${avail} -> ${after})`);
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('ControllerGetVolume reports an abnormal condition when the backing file is gone or wrong-sized', async () => {
    const v = await createVolume(d, 'cond', 4 * MiB, blockCap());
    assert.equal((await d.client.controllerGetVolume({ volume_id: v.volume_id })).status?.volume_condition?.abnormal, false);
    const { truncate, rm } = await import('node:fs/promises');
    const image = path.join(d.poolDir, 'volumes', `${v.volume_id}.img`);
    await truncate(image, MiB);
    assert.match((await d.client.controllerGetVolume({ volume_id: v.volume_id })).status?.volume_condition?.message ?? '', /1048576 bytes/);
    await rm(image);
    const gone = await d.client.controllerGetVolume({ volume_id: v.volume_id });
    assert.equal(gone.status?.volume_condition?.abnormal, true);
    assert.match(gone.status?.volume_condition?.message ?? '', /missing/);
    assert.equal(await codeOf(d.client.controllerGetVolume({ volume_id: 'vol-none-0123456789abcdef' })), 'NOT_FOUND');
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('unsupported controller RPCs are UNIMPLEMENTED', async () => {
    assert.equal(await codeOf(d.client.controllerPublishVolume({ volume_id: 'x', node_id: 'n' })), 'UNIMPLEMENTED');
    assert.equal(await codeOf(d.client.controllerExpandVolume({ volume_id: 'x' })), 'UNIMPLEMENTED');
  });

  it('Node RPC error codes: missing fields, missing volume, not staged, incompatible restage and republish', async () => {
    const v = await createVolume(d, 'node-errs', 8 * MiB, mountCap());
    const p = await paths(d, 'node-errs');
    const cap = mountCap('ext4');
    assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: '', staging_target_path: p.staging, volume_capability: cap })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: '', volume_capability: cap })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: 'vol-none-0123456789abcdef', staging_target_path: p.staging, volume_capability: cap })), 'NOT_FOUND');
    assert.equal(await codeOf(d.client.nodePublishVolume({ volume_id: v.volume_id, staging_target_path: p.staging, target_path: p.target, volume_capability: cap })), 'FAILED_PRECONDITION');
    assert.equal(await codeOf(d.client.nodePublishVolume({ volume_id: v.volume_id, target_path: p.target, volume_capability: cap })), 'FAILED_PRECONDITION');

    await d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: cap });
    await d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: cap });
    assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: blockCap() })), 'ALREADY_EXISTS');
    assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: mountCap('ext4', 'SINGLE_NODE_READER_ONLY') })), 'ALREADY_EXISTS');
    await d.client.nodePublishVolume({ volume_id: v.volume_id, staging_target_path: p.staging, target_path: p.target, volume_capability: cap });
    await d.client.nodePublishVolume({ volume_id: v.volume_id, staging_target_path: p.staging, target_path: p.target, volume_capability: cap });
    assert.equal(await codeOf(d.client.nodePublishVolume({ volume_id: v.volume_id, staging_target_path: p.staging, target_path: p.target, volume_capability: cap, readonly: true })), 'ALREADY_EXISTS');
    assert.equal(await codeOf(d.client.nodeGetVolumeStats({ volume_id: v.volume_id, volume_path: path.join(d.mntDir, 'nothing-here') })), 'NOT_FOUND');
    assert.equal(await codeOf(d.client.nodeGetVolumeStats({ volume_id: 'vol-none-0123456789abcdef', volume_path: p.target })), 'NOT_FOUND');
    assert.equal(await codeOf(d.client.nodeGetVolumeStats({ volume_id: v.volume_id, volume_path: '' })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.nodeExpandVolume({ volume_id: 'vol-none-0123456789abcdef', volume_path: p.target })), 'NOT_FOUND');

    await d.client.nodeUnpublishVolume({ volume_id: v.volume_id, target_path: p.target });
    await d.client.nodeUnpublishVolume({ volume_id: v.volume_id, target_path: p.target });
    await d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging });
    await d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging });
    assert.equal(await codeOf(d.client.nodeUnstageVolume({ volume_id: '', staging_target_path: p.staging })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.nodeUnpublishVolume({ volume_id: v.volume_id, target_path: '' })), 'INVALID_ARGUMENT');
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('SINGLE_NODE_MULTI_WRITER: one staged volume published at several targets', async () => {
    const cap = mountCap('ext4', 'SINGLE_NODE_MULTI_WRITER');
    const v = await createVolume(d, 'multi', 8 * MiB, cap);
    const p = await paths(d, 'multi');
    await d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: cap });
    const targets = [p.target, path.join(d.mntDir, 'pods', 'multi', 'second')];
    await mkdir(path.dirname(targets[1]), { recursive: true });
    for (const t of targets) await d.client.nodePublishVolume({ volume_id: v.volume_id, staging_target_path: p.staging, target_path: t, volume_capability: cap });
    const { writeFile, readFile } = await import('node:fs/promises');
    await writeFile(path.join(targets[0], 'shared'), 'hello');
    assert.equal(await readFile(path.join(targets[1], 'shared'), 'utf8'), 'hello');
    // Unstage while still published is refused: the CO must unpublish first.
    assert.equal(await codeOf(d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging })), 'FAILED_PRECONDITION');
    for (const t of targets) await d.client.nodeUnpublishVolume({ volume_id: v.volume_id, target_path: t });
    await d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging });
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });
});
