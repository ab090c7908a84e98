import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { link, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { idFor } from '../../src/ids.js';
import { blockCap, mountCap } from '../helpers/csi.js';
import { readAt, writeAt } from '../helpers/data.js';
import { BIN, codeOf, finish, MiB, needsRoot, pattern, startDriver, type Driver } from '../helpers/driver.js';
import { dirPool, startLibvirt, URI, virsh, virshTry, type TestPool } from '../helpers/libvirt.js';

const execFileP = promisify(execFile);

async function volInfo(pool: TestPool, name: string): Promise<{ capacity: number; allocation: number }> {
  const xml = await virsh('vol-dumpxml', '--vol', name, '--pool', pool.name);
  return { capacity: Number(/<capacity unit='bytes'>(\d+)</.exec(xml)![1]), allocation: Number(/<allocation unit='bytes'>(\d+)</.exec(xml)![1]) };
}

// The controller side of the libvirt backend against a real libvirtd with a `dir` pool.
describe('libvirt pool: controller against a real libvirtd', needsRoot(), () => {
  let pool: TestPool;
  let d: Driver;
  const nameOf = async (id: string) => (await pool.volumes()).find((n) => n.startsWith(`${id}.`))!;
  const fileOf = async (id: string) => path.join(pool.dir, await nameOf(id));
  const create = (name: string, bytes: number, parameters: Record<string, string> = {}, extra: { snapshot?: string; volume?: string; cap?: ReturnType<typeof blockCap> } = {}) =>
    d.client.createVolume({
      name,
      capacity_range: { required_bytes: String(bytes) },
      volume_capabilities: [extra.cap ?? blockCap()],
      parameters,
      volume_content_source: extra.snapshot ? { snapshot: { snapshot_id: extra.snapshot } } : extra.volume ? { volume: { volume_id: extra.volume } } : null,
    });

  before(async () => {
    await startLibvirt();
    pool = await dirPool('vpool-lv');
    d = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'hv-test', '--log-level', 'debug'] });
  });
  after(async () => {
    const left = d ? await finish(d) : [];
    const vols = pool ? await pool.volumes() : [];
    await pool?.remove();
    assert.deepEqual(left, []);
    assert.deepEqual(vols, [], 'every libvirt volume the tests made is gone');
  });

  it('advertises attach, read-only attach and controller expansion, and the hypervisor as topology', async () => {
    assert.equal((await d.client.getPluginInfo({})).manifest.backend, 'libvirt');
    const caps = (await d.client.controllerGetCapabilities({})).capabilities.map((c) => c.rpc?.type);
    for (const c of ['CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME', 'PUBLISH_READONLY', 'LIST_VOLUMES_PUBLISHED_NODES', 'EXPAND_VOLUME', 'CREATE_DELETE_SNAPSHOT', 'CLONE_VOLUME', 'GET_CAPACITY', 'LIST_VOLUMES', 'GET_VOLUME']) {
      assert.ok(caps.includes(c as never), c);
    }
    const v = (await create('pvc-topo', 4 * MiB)).volume!;
    assert.deepEqual(v.accessible_topology, [{ segments: { 'topology.vpool.dev/hypervisor': 'hv-test' } }]);
    const elsewhere = d.client.createVolume({
      name: 'pvc-elsewhere',
      volume_capabilities: [blockCap()],
      accessibility_requirements: { requisite: [{ segments: { 'topology.vpool.dev/hypervisor': 'other' } }], preferred: [] },
    });
    assert.equal(await codeOf(elsewhere), 'RESOURCE_EXHAUSTED');
    const ok = await d.client.validateVolumeCapabilities({ volume_id: v.volume_id, volume_capabilities: [blockCap('MULTI_NODE_MULTI_WRITER')] });
    assert.ok(ok.confirmed, 'a shared raw block disk is what KubeVirt live migration needs');
    const no = await d.client.validateVolumeCapabilities({ volume_id: v.volume_id, volume_capabilities: [mountCap('ext4', 'MULTI_NODE_MULTI_WRITER')] });
    assert.equal(no.confirmed, null);
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('creates raw (sparse or preallocated) and qcow2 volumes named by the convention, idempotently', async () => {
    const raw = (await create('pvc-raw', 10 * MiB + 1, { fsType: 'xfs' }, { cap: mountCap('xfs') })).volume!;
    assert.equal(raw.capacity_bytes, String(300 * MiB), 'xfs needs 300 MiB');
    assert.deepEqual(raw.volume_context, { fsType: 'xfs' });
    assert.equal(await nameOf(raw.volume_id), `${raw.volume_id}.xfs.raw`);
    assert.ok((await volInfo(pool, `${raw.volume_id}.xfs.raw`)).allocation < MiB, 'sparse by default');

    const full = (await create('pvc-full', 8 * MiB, { preallocate: 'true' })).volume!;
    const fi = await volInfo(pool, `${full.volume_id}.prealloc.raw`);
    assert.equal(fi.allocation, 8 * MiB, 'preallocate: every byte allocated');

    const q = (await create('pvc-q', 20 * MiB, { format: 'qcow2' })).volume!;
    const { stdout } = await execFileP('qemu-img', ['info', '--output', 'json', '-U', await fileOf(q.volume_id)]);
    const info = JSON.parse(stdout) as { format: string; 'virtual-size': number };
    assert.equal(info.format, 'qcow2');
    assert.equal(info['virtual-size'], 20 * MiB);

    // Retries: the same volume; an explicit default is the same as none; anything else conflicts.
    assert.deepEqual((await create('pvc-full', 8 * MiB, { preallocate: 'true' })).volume, full);
    assert.deepEqual((await create('pvc-q', 20 * MiB, { format: 'qcow2' })).volume, q);
    assert.deepEqual((await create('pvc-topo2', 4 * MiB, { format: 'raw' })).volume, (await create('pvc-topo2', 4 * MiB)).volume);
    assert.equal(await codeOf(create('pvc-q', 20 * MiB)), 'ALREADY_EXISTS', 'raw asked, qcow2 there');
    assert.equal(await codeOf(create('pvc-q', 40 * MiB, { format: 'qcow2' })), 'ALREADY_EXISTS');
    assert.equal(await codeOf(create('pvc-full', 8 * MiB)), 'ALREADY_EXISTS');

    for (const bad of [{ format: 'vmdk' }, { preallocate: 'yes' }, { wipe: 'dod' }, { thinPool: 'x' }] as Record<string, string>[]) {
      assert.equal(await codeOf(create('pvc-bad', 4 * MiB, bad)), 'INVALID_ARGUMENT', JSON.stringify(bad));
    }
    const listed = await d.client.listVolumes({ max_entries: 2, starting_token: '' });
    assert.equal(listed.entries.length, 2);
    const rest = await d.client.listVolumes({ max_entries: 0, starting_token: listed.next_token });
    const ids = [...listed.entries, ...rest.entries].map((e) => e.volume!.volume_id).sort();
    assert.deepEqual(ids, [raw, full, q].map((v) => v.volume_id).concat(idFor('vol', 'pvc-topo2')).sort());
    // The volume table and `vpool-csi status` on the libvirt pool: libvirt's allocation (sparse, preallocated), the pool and its room.
    const table = (await execFileP(BIN, ['client', '--endpoint', d.endpoint, '-o', 'table', 'list-volumes'])).stdout;
    assert.match(table, new RegExp(`^${full.volume_id} +8Mi +8Mi +<none> `, 'm'), 'preallocated: all of it allocated');
    assert.match(table, new RegExp(`^${raw.volume_id} +300Mi +[0-9.]+(Ki)? +<none> +xfs `, 'm'), 'sparse: next to nothing allocated');
    const st = JSON.parse((await execFileP(BIN, ['status', '--endpoint', d.endpoint, '-o', 'json']).catch((e: { stdout: string }) => e)).stdout) as { pool: { location: string; devices: Array<{ name: string; sizeBytes: number }>; totalBytes: number }; volumes: { count: number } };
    assert.equal(st.pool.location, `libvirt pool ${pool.name} (dir)`);
    assert.deepEqual(st.pool.devices.map((x) => x.name), [pool.name]);
    assert.ok(st.pool.totalBytes > 0 && st.pool.devices[0]!.sizeBytes === st.pool.totalBytes);
    assert.equal(st.volumes.count, 4);
    for (const v of [raw, full, q]) await d.client.deleteVolume({ volume_id: v.volume_id });
    await d.client.deleteVolume({ volume_id: idFor('vol', 'pvc-topo2') });
    await d.client.deleteVolume({ volume_id: q.volume_id });
    assert.equal(await codeOf(d.client.controllerGetVolume({ volume_id: q.volume_id })), 'NOT_FOUND');
  });

  it('reports pool-info capacity and answers RESOURCE_EXHAUSTED beyond it', async () => {
    const info = await virsh('pool-info', pool.name, '--bytes');
    const available = Number(/Available:\s+(\d+)/.exec(info)![1]);
    const cap = await d.client.getCapacity({ parameters: {} });
    assert.ok(Math.abs(Number(cap.available_capacity) - available) < 64 * MiB, `${cap.available_capacity} vs ${available}`);
    assert.equal(await codeOf(create('pvc-huge', available + 1024 * MiB)), 'RESOURCE_EXHAUSTED');
    assert.deepEqual(await pool.volumes(), [], 'a refused create leaves nothing');
  });

  it('expands raw and qcow2 volumes with vol-resize, never shrinks, and says when the node must grow a filesystem', async () => {
    const raw = (await create('pvc-grow', 8 * MiB)).volume!;
    const grown = await d.client.controllerExpandVolume({ volume_id: raw.volume_id, capacity_range: { required_bytes: String(20 * MiB) }, volume_capability: mountCap('ext4') });
    assert.deepEqual(grown, { capacity_bytes: String(20 * MiB), node_expansion_required: true });
    assert.equal((await volInfo(pool, await nameOf(raw.volume_id))).capacity, 20 * MiB);
    const block = await d.client.controllerExpandVolume({ volume_id: raw.volume_id, capacity_range: { required_bytes: String(10 * MiB) }, volume_capability: blockCap() });
    assert.deepEqual(block, { capacity_bytes: String(20 * MiB), node_expansion_required: false }, 'smaller request: the volume as it is');
    assert.equal(await codeOf(d.client.controllerExpandVolume({ volume_id: raw.volume_id, capacity_range: { required_bytes: String(30 * MiB), limit_bytes: String(10 * MiB) } })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.controllerExpandVolume({ volume_id: raw.volume_id, capacity_range: null })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.controllerExpandVolume({ volume_id: idFor('vol', 'nope'), capacity_range: { required_bytes: String(MiB) } })), 'NOT_FOUND');

    const q = (await create('pvc-growq', 8 * MiB, { format: 'qcow2' })).volume!;
    await d.client.controllerExpandVolume({ volume_id: q.volume_id, capacity_range: { required_bytes: String(12 * MiB + 1) } });
    const { stdout } = await execFileP('qemu-img', ['info', '--output', 'json', '-U', await fileOf(q.volume_id)]);
    assert.equal((JSON.parse(stdout) as { 'virtual-size': number })['virtual-size'], 13 * MiB, 'rounded up to MiB');
    for (const v of [raw, q]) await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('snapshots, restores and clones with the data of the moment, for raw and qcow2', async () => {
    for (const format of ['raw', 'qcow2']) {
      const src = (await create(`pvc-src-${format}`, 16 * MiB, format === 'qcow2' ? { format } : {})).volume!;
      const before = pattern(`before-${format}`, MiB);
      const afterData = pattern(`after-${format}`, MiB);
      // Data goes in through qemu-io for qcow2 (the file is not the disk), straight into the file for raw.
      const put = async (id: string, data: Buffer) => {
        const file = await fileOf(id);
        if (format === 'raw') return writeAt(file, 3 * MiB, data);
        // qcow2: out to raw, the pattern in, back to qcow2 in place (libvirt sees the same file).
        const tmp = path.join(pool.dir, 'edit.raw');
        await execFileP('qemu-img', ['convert', '-f', 'qcow2', '-O', 'raw', file, tmp]);
        await writeAt(tmp, 3 * MiB, data);
        await execFileP('qemu-img', ['convert', '-f', 'raw', '-O', 'qcow2', tmp, file]);
        await rm(tmp);
      };
      const get = async (id: string) => {
        const file = await fileOf(id);
        if (file.endsWith('.raw')) return readAt(file, 3 * MiB, MiB);
        const out = path.join(pool.dir, 'read.raw');
        await execFileP('qemu-img', ['convert', '-U', '-f', 'qcow2', '-O', 'raw', file, out]);
        const b = await readAt(out, 3 * MiB, MiB);
        await rm(out);
        return b;
      };
      await put(src.volume_id, before);
      const snap = (await d.client.createSnapshot({ name: `snap-${format}`, source_volume_id: src.volume_id, parameters: {}, secrets: {} })).snapshot!;
      assert.equal(snap.source_volume_id, src.volume_id);
      assert.equal(snap.size_bytes, String(16 * MiB));
      assert.ok(snap.ready_to_use);
      assert.deepEqual((await d.client.createSnapshot({ name: `snap-${format}`, source_volume_id: src.volume_id, parameters: {}, secrets: {} })).snapshot, snap, 'idempotent');
      await put(src.volume_id, afterData);
      // SnapshotMetadata: libvirt keeps no map of a copy, so all of it is allocated, and a delta is the
      // spec's "changed block tracking is not enabled" (FAILED_PRECONDITION: take a full backup).
      const allocated = await d.client.getMetadataAllocated({ snapshot_id: snap.snapshot_id, starting_offset: String(MiB), max_results: 0 });
      assert.deepEqual(allocated.flatMap((m) => m.block_metadata.map((b) => [Number(b.byte_offset), Number(b.size_bytes)])), [[MiB, 15 * MiB]]);
      assert.equal(allocated[0]!.volume_capacity_bytes, String(16 * MiB));
      const later = (await d.client.createSnapshot({ name: `snap-${format}-later`, source_volume_id: src.volume_id, parameters: {}, secrets: {} })).snapshot!;
      assert.equal(await codeOf(d.client.getMetadataDelta({ base_snapshot_id: snap.snapshot_id, target_snapshot_id: later.snapshot_id, starting_offset: '0', max_results: 0 })), 'FAILED_PRECONDITION');
      await d.client.deleteSnapshot({ snapshot_id: later.snapshot_id });

      const params: Record<string, string> = format === 'qcow2' ? { format } : {};
      const restored = (await create(`pvc-restored-${format}`, 24 * MiB, params, { snapshot: snap.snapshot_id })).volume!;
      assert.equal(restored.capacity_bytes, String(24 * MiB), 'a restore may be larger than its snapshot');
      assert.deepEqual(restored.content_source, { snapshot: { snapshot_id: snap.snapshot_id }, type: 'snapshot' });
      assert.ok((await get(restored.volume_id)).equals(before), 'the restore holds the data of the snapshot');
      const clone = (await create(`pvc-clone-${format}`, 16 * MiB, params, { volume: src.volume_id })).volume!;
      assert.ok((await get(clone.volume_id)).equals(afterData), 'the clone holds the source as it is now');
      assert.deepEqual((await create(`pvc-clone-${format}`, 16 * MiB, params, { volume: src.volume_id })).volume, clone);
      // The StorageClass decides the format of a copy: raw from qcow2 and back is a conversion.
      const other: Record<string, string> = format === 'qcow2' ? {} : { format: 'qcow2' };
      const converted = (await create(`pvc-conv-${format}`, 16 * MiB, other, { snapshot: snap.snapshot_id })).volume!;
      assert.ok((await nameOf(converted.volume_id)).endsWith(format === 'qcow2' ? '.raw' : '.qcow2'));
      assert.ok((await get(converted.volume_id)).equals(before), 'converted, same data');
      await d.client.deleteVolume({ volume_id: converted.volume_id });
      assert.equal(await codeOf(create(`pvc-clone-${format}`, 16 * MiB, params, { snapshot: snap.snapshot_id })), 'ALREADY_EXISTS', 'another source');
      assert.equal(await codeOf(create(`pvc-small-${format}`, 16 * MiB, {}, { snapshot: snap.snapshot_id, cap: blockCap() }).then(() => d.client.createVolume({ name: 'pvc-too-small', capacity_range: { required_bytes: String(MiB), limit_bytes: String(2 * MiB) }, volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } }))), 'OUT_OF_RANGE');
      await d.client.deleteVolume({ volume_id: idFor('vol', `pvc-small-${format}`) });

      const bySource = await d.client.listSnapshots({ source_volume_id: src.volume_id, max_entries: 0, starting_token: '', snapshot_id: '' });
      assert.deepEqual(bySource.entries.map((e) => e.snapshot!.snapshot_id), [snap.snapshot_id]);
      // The source volume may go first: the snapshot stands alone and still restores.
      await d.client.deleteVolume({ volume_id: src.volume_id });
      const orphan = (await d.client.listSnapshots({ snapshot_id: snap.snapshot_id, max_entries: 0, starting_token: '', source_volume_id: '' })).entries[0].snapshot!;
      assert.equal(orphan.source_volume_id, `vol--${src.volume_id.slice(-16)}`, 'a gone source is named by its hash');
      assert.deepEqual((await create(`pvc-restored-${format}`, 24 * MiB, params, { snapshot: snap.snapshot_id })).volume, restored, 'retry after the source is gone');
      await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
      await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
      for (const v of [restored, clone]) await d.client.deleteVolume({ volume_id: v.volume_id });
    }
    assert.equal(await codeOf(d.client.createSnapshot({ name: 'snap-missing', source_volume_id: idFor('vol', 'missing'), parameters: {}, secrets: {} })), 'NOT_FOUND');
    assert.equal(await codeOf(create('pvc-from-missing', MiB, {}, { snapshot: idFor('snap', 'missing') })), 'NOT_FOUND');
  });

  it('an interrupted copy reads as absent and is cleared and redone by the retry', async () => {
    const src = (await create('pvc-orig', 8 * MiB)).volume!;
    const data = pattern('orig', MiB);
    await writeAt(await fileOf(src.volume_id), 0, data);
    const id = idFor('vol', 'pvc-copy');
    // What a crash mid-copy leaves: the marker and a half-made target.
    await virsh('vol-create-as', pool.name, `${id}.incomplete`, '0', '--allocation', '0');
    await virsh('vol-create-as', pool.name, `${id}.from-v${src.volume_id.slice(-16)}.raw`, String(8 * MiB), '--format', 'raw', '--allocation', '0');
    assert.equal(await codeOf(d.client.controllerGetVolume({ volume_id: id })), 'NOT_FOUND');
    assert.ok(!(await d.client.listVolumes({ max_entries: 0, starting_token: '' })).entries.some((e) => e.volume!.volume_id === id));
    const copy = (await create('pvc-copy', 8 * MiB, {}, { volume: src.volume_id })).volume!;
    assert.equal(copy.volume_id, id);
    assert.ok((await readAt(await fileOf(id), 0, MiB)).equals(data));
    assert.deepEqual((await pool.volumes()).filter((n) => n.startsWith(id)), [`${id}.from-v${src.volume_id.slice(-16)}.raw`], 'marker gone');
    for (const v of [copy, src]) await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('an interrupted copy whose claim was deleted (no retry) is swept when the controller starts', async () => {
    const src = (await create('pvc-gone-src', 8 * MiB)).volume!;
    const id = idFor('vol', 'pvc-never-retried');
    await virsh('vol-create-as', pool.name, `${id}.incomplete`, '0', '--allocation', '0');
    await virsh('vol-create-as', pool.name, `${id}.from-v${src.volume_id.slice(-16)}.raw`, String(8 * MiB), '--format', 'raw', '--allocation', String(MiB));
    await d.stop('SIGKILL');
    d = await d.restart();
    assert.deepEqual((await pool.volumes()).filter((n) => n.startsWith(id)), [], 'the partial volume and its marker are gone');
    assert.ok((await pool.volumes()).some((n) => n.startsWith(`${src.volume_id}.`)), 'complete volumes stay');
    await d.client.deleteVolume({ volume_id: src.volume_id });
  });

  it('wipes before deleting when the StorageClass asks, and deletes idempotently', async () => {
    const v = (await create('pvc-wipe', 4 * MiB, { wipe: 'zero' })).volume!;
    assert.equal(await nameOf(v.volume_id), `${v.volume_id}.wipe-zero.raw`);
    // A second name for the volume's file keeps its blocks readable after libvirt deletes it.
    const file = await fileOf(v.volume_id);
    const kept = path.join(path.dirname(pool.dir), `kept-${path.basename(file)}`);
    await writeAt(file, MiB, pattern('secret', MiB));
    await link(file, kept);
    try {
      await d.client.deleteVolume({ volume_id: v.volume_id });
      assert.ok((await readAt(kept, 0, 4 * MiB)).equals(Buffer.alloc(4 * MiB)), 'the data was wiped before the delete');
      assert.ok(d.logs.some((l) => l.includes('wiped a volume before deleting it') && l.includes('"algorithm":"zero"') && l.includes(v.volume_id)));
    } finally {
      await rm(kept, { force: true });
    }
    await d.client.deleteVolume({ volume_id: v.volume_id });
    await d.client.deleteVolume({ volume_id: 'not-ours-at-all' });
  });

  it('ControllerPublish/Unpublish validate, and answer NOT_FOUND for a missing node or volume', async () => {
    const v = (await create('pvc-pub', 4 * MiB)).volume!;
    const publish = (volume_id: string, node_id: string, cap = blockCap()) => d.client.controllerPublishVolume({ volume_id, node_id, volume_capability: cap, readonly: false, secrets: {}, volume_context: {} });
    assert.equal(await codeOf(publish(v.volume_id, 'no-such-domain')), 'NOT_FOUND');
    assert.equal(await codeOf(publish(idFor('vol', 'ghost'), 'no-such-domain')), 'NOT_FOUND');
    assert.equal(await codeOf(publish(v.volume_id, '')), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(publish(v.volume_id, 'x;reboot')), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(publish(v.volume_id, 'dom', mountCap('ext4', 'MULTI_NODE_MULTI_WRITER'))), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.controllerPublishVolume({ volume_id: v.volume_id, node_id: 'dom', volume_capability: null, readonly: false, secrets: {}, volume_context: {} })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.controllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'no-such-domain', secrets: {} })), 'OK');
    assert.equal(await codeOf(d.client.controllerUnpublishVolume({ volume_id: idFor('vol', 'ghost'), node_id: 'no-such-domain', secrets: {} })), 'OK');
    assert.equal(await codeOf(d.client.controllerUnpublishVolume({ volume_id: '', node_id: 'x', secrets: {} })), 'INVALID_ARGUMENT');
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('a restarted controller reads every fact back from the pool', async () => {
    const v = (await create('pvc-keep', 8 * MiB, { fsType: 'ext4', format: 'qcow2' }, { cap: mountCap('ext4') })).volume!;
    const snap = (await d.client.createSnapshot({ name: 'snap-keep', source_volume_id: v.volume_id, parameters: {}, secrets: {} })).snapshot!;
    const r = (await create('pvc-keep-r', 8 * MiB, { fsType: 'ext4' }, { snapshot: snap.snapshot_id, cap: mountCap('ext4') })).volume!;
    await d.stop('SIGKILL');
    d = await d.restart();
    assert.deepEqual((await d.client.controllerGetVolume({ volume_id: v.volume_id })).volume, v);
    assert.deepEqual((await d.client.controllerGetVolume({ volume_id: r.volume_id })).volume, r);
    assert.deepEqual((await d.client.listSnapshots({ snapshot_id: snap.snapshot_id, max_entries: 0, starting_token: '', source_volume_id: '' })).entries[0].snapshot, snap);
    assert.deepEqual((await create('pvc-keep', 8 * MiB, { fsType: 'ext4', format: 'qcow2' }, { cap: mountCap('ext4') })).volume, v);
    await d.client.deleteVolume({ volume_id: r.volume_id });
    await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('refuses to start on a pool that is missing, badly named or not running, and Probe tells when it stops', async () => {
    const run = async (...args: string[]) => {
      try {
        await execFileP(BIN, ['serve', '--endpoint', `unix://${d.dir}/other.sock`, '--backend', 'libvirt', '--libvirt-uri', URI, ...args], { timeout: 60_000 });
        return '';
      } catch (err) {
        return (err as { stderr: string }).stderr;
      }
    };
    assert.match(await run('--libvirt-pool', 'no-such-pool'), /libvirt pool no-such-pool does not exist/);
    assert.match(await run('--libvirt-pool', 'a;b'), /not a plain libvirt pool name/);
    assert.match(await run(), /--libvirt-pool is required/);
    assert.match(await run('--libvirt-pool', pool.name, '--mode', 'node'), /--hypervisor is required/);
    assert.match(await run('--libvirt-pool', pool.name, '--disk-cache', 'none;x'), /not a libvirt cache mode/);
    assert.match(await run('--libvirt-pool', pool.name, '--hypervisor', 'a/b'), /not a valid topology value/);
    await virsh('pool-destroy', pool.name);
    try {
      assert.deepEqual(await d.client.probe({}), { ready: { value: false } });
    } finally {
      await virshTry('pool-start', pool.name);
    }
    assert.deepEqual(await d.client.probe({}), { ready: { value: true } });
  });
});
