import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { onCommand } from '../../src/exec.js';
import { idFor } from '../../src/ids.js';
import { LvmCli } from '../../src/pool/lvm/lvm-cli.js';
import { MetadataCache } from '../../src/pool/lvm/metadata-cache.js';
import { LvmPool } from '../../src/pool/lvm/lvm-pool.js';
import { dmName } from '../../src/pool/lvm/dm.js';
import type { PoolStatus } from '../../src/pool/lvm/pool-admin.js';
import { blockCap, mountCap } from '../helpers/csi.js';
import { codeOf, finish, MiB, needsRoot, startDriver, BIN } from '../helpers/driver.js';
import { forgetVg, loopDisks, poolCmd, uniqueVg, vgNames, type LoopDisks } from '../helpers/lvm.js';

// Controller side of the lvm backend against real lvm2 on loop-device PVs. This kernel has no
// device-mapper, so LVs are created with activation disabled (metadata only); the data path runs
// in the QEMU VM suite (test/vm).
describe('lvm pool on this host (activation disabled)', needsRoot(), () => {
  let disks: LoopDisks;
  const vg = uniqueVg('vpt');
  before(async () => {
    disks = await loopDisks(4, 512 * MiB);
  });
  after(async () => {
    await forgetVg(vg, disks.devices);
    await disks.release();
  });

  it('pool init makes a tagged VG, is idempotent, says what differs, and extend adds a device', async () => {
    const [a, b, c] = disks.devices;
    const init = await poolCmd('init', '--vg', vg, a, b);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, new RegExp(`VG ${vg} created on ${a}, ${b}`));
    assert.equal((await poolCmd('init', '--vg', vg, b, a)).code, 0, 'the same devices again: nothing to do');
    const other = await poolCmd('init', '--vg', vg, a, c);
    assert.equal(other.code, 1);
    assert.match(other.stderr, new RegExp(`not in it: ${c} \\(use pool extend\\); in it but not named: ${b}`));
    const ext = await poolCmd('extend', '--vg', vg, c);
    assert.equal(ext.code, 0, ext.stderr);
    assert.equal((await poolCmd('extend', '--vg', vg, c)).code, 0, 'extend is idempotent');
    const status = JSON.parse((await poolCmd('status', '--vg', vg)).stdout) as PoolStatus;
    assert.deepEqual(status.devices.map((d) => d.name).sort(), [a, b, c].sort());
    assert.ok(status.sizeBytes > 1400 * MiB && status.freeBytes === status.sizeBytes);
    assert.equal(status.extentBytes, 4 * MiB);
    // As `vgs` shows a VG, in kubectl's table: sizes in binary units; -o wide names the devices.
    const table = (await poolCmd('status', '--vg', vg, '-o', 'table')).stdout.trimEnd().split('\n');
    assert.match(table[0]!, /^VG {2,}DEVICES {2,}SIZE {2,}FREE {2,}THIN POOLS {2,}VOLUMES {2,}SNAPSHOTS {2,}HEALTH$/);
    assert.match(table[1]!, new RegExp(`^${vg} {3,}3 {3,}1\\.[0-9]+Gi {3,}1\\.[0-9]+Gi {3,}<none> {3,}0 {3,}0 {3,}ok$`));
    const wide = (await poolCmd('status', '--vg', vg, '-o', 'wide')).stdout;
    for (const dev of [a, b, c]) assert.ok(wide.includes(`${dev} (`), wide);
    assert.equal((await poolCmd('status', '--vg', vg, '-o', 'name')).stdout, `pool/${vg}\n`);
    assert.equal((await poolCmd('status', '--vg', vg, '-o', 'csv')).code, 2, 'an unknown format is a usage error');
    const all = JSON.parse((await poolCmd('status')).stdout) as PoolStatus[];
    assert.ok(all.some((s) => s.vg === vg));
  });

  it('the driver serves thick volumes: sizes in extents, idempotency, conflicts, capacity, exhaustion, pagination', async () => {
    const d = await startDriver({ args: ['--backend', 'lvm', '--vg', vg] });
    try {
      const info = await d.client.getPluginInfo({});
      assert.equal(info.manifest.backend, 'lvm');
      const create = (name: string, bytes: number, parameters: Record<string, string> = {}) =>
        d.client.createVolume({ name, capacity_range: { required_bytes: String(bytes) }, volume_capabilities: [blockCap()], parameters });
      const v1 = (await create('pvc-one', 10 * MiB, { 'csi.storage.k8s.io/pvc/name': 'one', 'csi.storage.k8s.io/pvc/namespace': 'apps' })).volume!;
      assert.equal(v1.capacity_bytes, String(12 * MiB), 'rounded up to whole 4 MiB extents');
      assert.deepEqual((await create('pvc-one', 10 * MiB, { 'csi.storage.k8s.io/pvc/name': 'one' })).volume, v1, 'same name, compatible: the same volume');
      assert.equal(await codeOf(create('pvc-one', 64 * MiB)), 'ALREADY_EXISTS');
      assert.equal(await codeOf(create('pvc-one', 10 * MiB, { type: 'thick', stripes: '2' })), 'ALREADY_EXISTS');
      const tags = lvsField('lv_tags', `${vg}/${v1.volume_id}`);
      assert.match(tags, /vpool\.name=pvc-one/);
      assert.match(tags, /vpool\.p\.pvcNamespace=apps/);

      // Striped LVs need device-mapper even for metadata: the VM suite creates them.
      const striped = (await create('pvc-second', 64 * MiB, { type: 'thick' })).volume!;
      assert.match(String(await create('x', MiB, { type: 'thin' }).catch((e: Error) => e.message)), /needs a thin pool/);
      await assert.rejects(create('x', MiB, { thinpool: 'p' }), /unknown parameter "thinpool" \(supported: csi\.storage\.k8s\.io\/fstype, fsType, type, thinPool, stripes, readIOPS, writeIOPS, readBytesPerSecond, writeBytesPerSecond, tier\)/);
      await assert.rejects(create('x', MiB, { stripes: '0' }), /stripes="0"/);

      // Missing sources: NOT_FOUND and no LV left behind; snapshot parameters checked before any LVM call.
      const lvCount = lvsCount(vg);
      assert.equal(await codeOf(d.client.createVolume({ name: 'from-gone', volume_capabilities: [blockCap()], volume_content_source: { snapshot: { snapshot_id: 'snap-gone-0123456789abcdef' } } })), 'NOT_FOUND');
      assert.equal(await codeOf(d.client.createVolume({ name: 'clone-gone', volume_capabilities: [blockCap()], volume_content_source: { volume: { volume_id: 'vol-gone-0123456789abcdef' } } })), 'NOT_FOUND');
      assert.equal(lvsCount(vg), lvCount);
      await assert.rejects(d.client.createSnapshot({ name: 'no-reserve', source_volume_id: v1.volume_id, parameters: { snapshotReserve: 'none' } }), /thick: its snapshots need a copy-on-write reserve/);
      await assert.rejects(d.client.createSnapshot({ name: 'bad-reserve', source_volume_id: v1.volume_id, parameters: { snapshotReserve: '250%' } }), /snapshotReserve="250%"/);
      await assert.rejects(d.client.createSnapshot({ name: 'bad-param', source_volume_id: v1.volume_id, parameters: { cow: '1' } }), /unknown parameter "cow" \(supported: snapshotReserve\)/);
      assert.equal(await codeOf(d.client.createSnapshot({ name: 'of-gone', source_volume_id: 'vol-gone-0123456789abcdef' })), 'NOT_FOUND');
      assert.equal(lvsCount(vg), lvCount, 'refused snapshots create no LV');

      const cap = Number((await d.client.getCapacity({ parameters: { type: 'thick' } })).available_capacity);
      assert.ok(cap > 1000 * MiB && cap < 1600 * MiB, `VG free space: ${cap}`);
      assert.equal(await codeOf(create('too-big', cap + 8 * MiB)), 'RESOURCE_EXHAUSTED');
      const filler = (await create('filler', cap)).volume!;
      assert.equal((await d.client.getCapacity({})).available_capacity, '0');
      assert.equal(await codeOf(create('one-more', 4 * MiB)), 'RESOURCE_EXHAUSTED');

      const p1 = await d.client.listVolumes({ max_entries: 2 });
      const p2 = await d.client.listVolumes({ max_entries: 2, starting_token: p1.next_token });
      assert.deepEqual([...p1.entries, ...p2.entries].map((e) => e.volume!.volume_id).sort(), [v1, striped, filler].map((v) => v.volume_id).sort());
      assert.equal(p2.next_token, '');

      // The LV tags are the whole state: a new process lists the same volumes.
      await d.stop('SIGKILL');
      const again = await d.restart();
      assert.equal((await again.client.listVolumes({})).entries.length, 3);
      assert.equal((await again.client.controllerGetVolume({ volume_id: v1.volume_id })).status?.volume_condition?.abnormal, false);
      // `vpool-csi status` and the volume table on the lvm pool: the VG and its PVs, thick LVs holding their whole size, a full pool needing attention.
      const status = await new Promise<{ code: number; stdout: string }>((resolve) =>
        execFile(BIN, ['status', '--endpoint', again.endpoint, '-o', 'json'], (err, stdout) => resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout })),
      );
      const st = JSON.parse(status.stdout) as { pool: { location: string; devices: Array<{ name: string }>; availableBytes: number }; volumes: { count: number }; attention: string[] };
      assert.equal(status.code, 5, 'the pool is full: it needs attention');
      assert.equal(st.pool.location, `volume group ${vg}`);
      assert.deepEqual(st.pool.devices.map((x) => x.name).sort(), disks.devices.slice(0, 3).sort());
      assert.equal(st.pool.availableBytes, 0);
      assert.equal(st.volumes.count, 3);
      assert.match(st.attention.join('\n'), /the pool has 0 of [0-9.]+[GM]i free for new volumes/);
      const table = execFileSync(BIN, ['client', '--endpoint', again.endpoint, '-o', 'table', 'get-volume', '--id', v1.volume_id], { encoding: 'utf8' });
      assert.match(table, new RegExp(`^${v1.volume_id} +12Mi +12Mi +<none> +<any> +<none> +0 +ok +\\d+s$`, 'm'), 'a thick LV holds its whole size');
      for (const v of [v1, striped, filler]) await again.client.deleteVolume({ volume_id: v.volume_id });
      await again.client.deleteVolume({ volume_id: v1.volume_id });
      assert.equal((await again.client.listVolumes({})).entries.length, 0);
      assert.equal(await codeOf(again.client.createVolume({ name: 'mnt', volume_capabilities: [mountCap('', 'MULTI_NODE_MULTI_WRITER')] })), 'INVALID_ARGUMENT');
      assert.deepEqual(await finish(again), []);
    } finally {
      if (d.proc.exitCode === null) await d.stop();
    }
  });

  it('a class\'s I/O limits are LV tags: set at create, changed by ControllerModifyVolume in one metadata commit, read back after a restart', async () => {
    // A controller (it records limits; holding them is a node's: test/vm/io-limits.vm-test.ts, and test/e2e/io-limits.test.ts on this host's cgroup v1).
    let d = await startDriver({ args: ['--backend', 'lvm', '--vg', vg, '--mode', 'controller'] });
    try {
      const vol = (await d.client.createVolume({ name: 'pvc-limited', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: { writeIOPS: '300' }, mutable_parameters: { readIOPS: '500', writeBytesPerSecond: '20Mi' } })).volume!;
      const limitTags = () => lvsField('lv_tags', `${vg}/${vol.volume_id}`).trim().split(',').filter((t) => /IOPS|BytesPerSecond/.test(t)).sort();
      assert.deepEqual(limitTags(), ['vpool.p.readIOPS=500', `vpool.p.writeBytesPerSecond=${20 * MiB}`, 'vpool.p.writeIOPS=300']);
      const seqno = () => Number(execFileSync('vgs', ['--noheadings', '-o', 'vg_seqno', vg], { encoding: 'utf8' }).trim());
      const before = seqno();
      await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { readIOPS: '250', writeIOPS: 'unlimited' } });
      assert.equal(seqno(), before + 1, 'one metadata commit');
      assert.deepEqual(limitTags(), ['vpool.p.readIOPS=250', `vpool.p.writeBytesPerSecond=${20 * MiB}`]);
      // Nothing to change: no commit at all.
      await d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { readIOPS: '250' } });
      assert.equal(seqno(), before + 1);
      assert.equal(await codeOf(d.client.controllerModifyVolume({ volume_id: vol.volume_id, mutable_parameters: { readIOPS: '1', bogus: 'x' } })), 'INVALID_ARGUMENT');
      assert.equal(seqno(), before + 1, 'a refused call commits nothing');
      // The tags are the record: a new process reads the limits from them (what it sets again on the pods using the volume).
      await d.stop();
      d = await startDriver({ args: ['--backend', 'lvm', '--vg', vg, '--mode', 'controller'], dir: d.dir });
      const row = execFileSync(BIN, ['client', '--endpoint', d.endpoint, '-o', 'wide', 'list-volumes'], { encoding: 'utf8' }).split('\n').find((l) => l.startsWith(vol.volume_id))!;
      assert.match(row, / read 250 IO\/s,write 20Mi\/s /);
      // A create naming no limits is the same volume (keys it does not name are not compared); one naming others is another request.
      const again = (await d.client.createVolume({ name: 'pvc-limited', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()] })).volume!;
      assert.equal(again.volume_id, vol.volume_id);
      assert.equal(await codeOf(d.client.createVolume({ name: 'pvc-limited', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: { writeIOPS: '300' } })), 'ALREADY_EXISTS');
      await d.client.deleteVolume({ volume_id: vol.volume_id });
      assert.deepEqual(await finish(d), []);
    } finally {
      if (d.proc.exitCode === null) await d.stop();
    }
  });

  it('the driver refuses a VG without the vpool tag, and a missing one', async () => {
    const plain = uniqueVg('plain');
    execFileSync('vgcreate', ['--config', 'global{activation=0}', plain, disks.devices[3]], { stdio: 'ignore' });
    try {
      const dir = await mkdtemp('/var/tmp/vpool-untagged-');
      for (const [name, why] of [[plain, /is not a vpool pool/], ['nosuchvg', /does not exist/]] as const) {
        const res = await new Promise<{ code: number | null; err: string }>((resolve) => {
          const p = spawn(BIN, ['serve', '--backend', 'lvm', '--vg', name, '--endpoint', `unix://${dir}/s.sock`, '--allowed-root', dir], { stdio: ['ignore', 'ignore', 'pipe'] });
          let err = '';
          p.stderr!.on('data', (b: Buffer) => (err += b.toString()));
          p.on('exit', (code) => resolve({ code, err }));
        });
        assert.equal(res.code, 1);
        assert.match(res.err, why);
      }
      await rm(dir, { recursive: true });
      const extend = await poolCmd('extend', '--vg', plain, disks.devices[3]);
      assert.equal(extend.code, 1);
      assert.match(extend.stderr, /not a vpool pool/);
      assert.equal((await poolCmd('destroy', '--vg', plain)).code, 1, 'destroy never touches a VG it did not make');
      assert.ok((await vgNames()).includes(plain));
    } finally {
      await forgetVg(plain, [disks.devices[3]]);
    }
  });

  it('pool commands refuse hostile input and touch nothing', async () => {
    const before = await vgNames();
    const [, , , d] = disks.devices;
    const cases: Array<[string[], RegExp]> = [
      [['init', '--vg', 'bad/name', d], /invalid VG name/],
      [['init', '--vg', '..', d], /invalid VG name/],
      [['init', '--vg', 'a..b', d], /invalid VG name/],
      [['init', '--vg', 'okname', '/dev/does-not-exist'], /no such device/],
      [['init', '--vg', 'okname', d, d], /listed twice/],
      [['init', '--vg', 'okname', '/etc/passwd'], /not a block device/],
      [['init', '--vg', 'okname', 'relative/dev'], /absolute device path/],
      [['init', '--vg', 'okname', '--thin-pool', 'p', '--thin-size', '150%', d], /thin pool size must be a share of the VG/],
      [['init', '--vg', 'okname', disks.devices[0]], /already an LVM physical volume of VG vpt/],
    ];
    for (const [args, why] of cases) {
      const res = await poolCmd(...args);
      assert.equal(res.code, 1, args.join(' '));
      assert.match(res.stderr, why, args.join(' '));
    }
    // A device with a filesystem, then the same device mounted.
    execFileSync('mkfs.ext4', ['-q', '-F', d]);
    const withFs = await poolCmd('init', '--vg', 'okname', d);
    assert.equal(withFs.code, 1);
    assert.match(withFs.stderr, /carries ext4; wiping it needs explicit consent \(--wipe/);
    const mnt = await mkdtemp('/var/tmp/vpool-mnt-');
    execFileSync('mount', [d, mnt]);
    try {
      const mounted = await poolCmd('init', '--vg', 'okname', '--wipe', d);
      assert.equal(mounted.code, 1);
      assert.match(mounted.stderr, new RegExp(`mounted at ${mnt}`));
    } finally {
      execFileSync('umount', [mnt]);
      await rm(mnt, { recursive: true });
    }
    assert.deepEqual(await vgNames(), before, 'no VG was created');
    assert.match(execFileSync('blkid', ['-p', '-o', 'value', '-s', 'TYPE', d], { encoding: 'utf8' }), /ext4/, 'the filesystem is intact');
    // With --wipe, an unmounted device with a filesystem is accepted.
    const wiped = uniqueVg('wiped');
    const ok = await poolCmd('init', '--vg', wiped, '--wipe', d);
    assert.equal(ok.code, 0, ok.stderr);
    await poolCmd('destroy', '--vg', wiped);
  });

  it('scans only the VG\'s devices, and scans all again when another process adds one', async () => {
    const scoped = uniqueVg('vps');
    const [, , , spare] = disks.devices;
    const extra = await loopDisks(1, 256 * MiB);
    try {
      assert.equal((await poolCmd('init', '--vg', scoped, spare)).code, 0);
      const lvm = new LvmCli({ activation: false, vg: scoped });
      const pool = await LvmPool.open(lvm, { vg: scoped, reserveBytes: 0, overprovisionRatio: 1 });
      assert.deepEqual(lvm.scanned, [spare], 'after the first read, commands scan the one PV');
      const spec = (name: string, bytes: number) => ({ id: idFor('vol', name), name, capacityBytes: bytes, parameters: {} });
      await pool.createVolume(spec('scoped-a', 64 * MiB));
      // Another process (the CLI here; the VolumePool agent in a cluster) grows the VG onto a new device.
      assert.equal((await poolCmd('extend', '--vg', scoped, extra.devices[0])).code, 0);
      // Bigger than the first PV: only the new one can hold it, which a scan of the old list cannot see.
      const big = await pool.createVolume(spec('scoped-big', 480 * MiB));
      assert.equal(big.capacityBytes, 480 * MiB);
      assert.deepEqual(lvm.scanned, null, 'the stale list was dropped when lvm found a PV missing');
      assert.equal((await pool.listVolumes()).length, 2);
      await lvm.state(scoped);
      assert.deepEqual(lvm.scanned, [spare, extra.devices[0]].sort(), 'the next full read learns both PVs');
      assert.equal((await pool.getVolume(big.id))?.capacityBytes, 480 * MiB);
    } finally {
      await poolCmd('destroy', '--vg', scoped, '--force');
      await forgetVg(scoped, [spare, extra.devices[0]]);
      await extra.release();
    }
  });

  it('answers lookups from memory while the metadata on the PVs is unchanged, and sees any other process\'s change at once', async () => {
    const vgName = uniqueVg('vpm');
    const [, , , spare] = disks.devices;
    try {
      assert.equal((await poolCmd('init', '--vg', vgName, spare)).code, 0);
      const opts = { vg: vgName, reserveBytes: 0, overprovisionRatio: 1 };
      const pool = await LvmPool.open(new LvmCli({ activation: false, vg: vgName }), opts);
      const spec = (name: string) => ({ id: idFor('vol', name), name, capacityBytes: 8 * MiB, parameters: {} });
      const a = await pool.createVolume(spec('mem-a'));
      assert.equal((await pool.getVolume(a.id))?.name, 'mem-a', 'its own create is seen (the headers changed)');
      let ran = 0;
      let counting = true;
      onCommand(() => void (counting && ran++));
      assert.equal((await pool.getVolume(a.id))?.id, a.id);
      assert.equal((await pool.listVolumes()).length, 1);
      const free = (await pool.capacity({ type: 'thick' })).availableBytes;
      const page = await pool.listVolumePage('', 100);
      assert.deepEqual(page.items.map((v) => v.id), [a.id]);
      assert.deepEqual(await pool.volumeConditions(page.items), [{ abnormal: false, message: 'volume is healthy' }]);
      assert.equal(ran, 0, 'lookup, listing, a page with its conditions (no dm device: nothing for lvs to add) and capacity ran no lvm command');
      // Another pool object (its own memory, as another process has) creates a volume on the same VG...
      const other = await LvmPool.open(new LvmCli({ activation: false, vg: vgName }), opts);
      const b = await other.createVolume(spec('mem-b'));
      assert.equal((await pool.getVolume(b.id))?.name, 'mem-b');
      assert.equal((await pool.capacity({ type: 'thick' })).availableBytes, free - 8 * MiB);
      // ...and another process removes one with lvm itself.
      execFileSync('lvremove', ['--config', 'global{activation=0}', '-y', `${vgName}/${a.id}`], { stdio: 'ignore' });
      assert.equal(await pool.getVolume(a.id), null);
      assert.deepEqual((await pool.listVolumes()).map((v) => v.id), [b.id]);
      counting = false;
    } finally {
      await poolCmd('destroy', '--vg', vgName, '--force');
      await forgetVg(vgName, [spare]);
    }
  });

  it('holds the metadata of a two-PV VG between commits, and takes every row from lvm\'s own report after any commit, its own included', async () => {
    const vgName = uniqueVg('vpf');
    const [, , , spare] = disks.devices;
    // Two PVs: a fold cannot know which one lvm allocated from, and needs not.
    const extra = await loopDisks(1, 256 * MiB);
    const lvmArgs = ['--config', 'global{activation=0}', '--devices', `${spare},${extra.devices[0]}`];
    let counting = false;
    try {
      assert.equal((await poolCmd('init', '--vg', vgName, spare, extra.devices[0])).code, 0);
      const opts = { vg: vgName, reserveBytes: 0, overprovisionRatio: 1 };
      const lvm = new LvmCli({ activation: false, vg: vgName });
      const pool = await LvmPool.open(lvm, opts);
      const spec = (name: string) => ({ id: idFor('vol', name), name, capacityBytes: 8 * MiB, parameters: {} });
      await pool.listVolumes(); // the metadata is held from here
      let ran: string[] = [];
      counting = true;
      onCommand((c) => void (counting && ran.push(c)));

      const a = await pool.createVolume(spec('fold-a'));
      assert.deepEqual(ran, ['lvcreate'], 'the create ran lvcreate and nothing else');
      ran = [];
      const held = { list: await pool.listVolumes(), cap: await pool.capacity({ type: 'thick' }), one: await pool.getVolume(a.id) };
      assert.deepEqual(ran, ['lvm'], 'after its own commit, one fullreport: no row is made up here');
      ran = [];
      assert.deepEqual({ list: await pool.listVolumes(), cap: await pool.capacity({ type: 'thick' }), one: await pool.getVolume(a.id) }, held);
      assert.deepEqual(ran, [], 'no commit since: from memory');
      // What the held metadata says is what lvm says: a pool that reads everything afresh agrees.
      counting = false;
      const fresh = await LvmPool.open(new LvmCli({ activation: false, vg: vgName }), opts);
      assert.deepEqual(held, { list: await fresh.listVolumes(), cap: await fresh.capacity({ type: 'thick' }), one: await fresh.getVolume(a.id) });
      // The cache against lvm row by row, across another process's commits.
      const cache = new MetadataCache(lvm, vgName);
      const report = async () => {
        const { vg, pvs, lvs } = await lvm.state(vgName);
        return { vg, pvs: pvs.filter((p) => p.vg_name === vgName), lvs };
      };
      assert.deepEqual(await cache.read(), await report());
      execFileSync('lvcreate', [...lvmArgs, '-an', '-Zn', '-y', '-L', '8m', '-n', 'bare-one', '--addtag', 'x=1', vgName], { stdio: 'ignore' });
      assert.deepEqual(await cache.read(), await report(), 'a create by another process is seen');
      execFileSync('lvremove', [...lvmArgs, '-y', `${vgName}/bare-one`], { stdio: 'ignore' });
      assert.deepEqual(await cache.read(), await report(), 'a remove by another process is seen');
      execFileSync('lvcreate', [...lvmArgs, '-an', '-Zn', '-y', '-L', '4m', '-n', 'theirs', vgName], { stdio: 'ignore' });
      execFileSync('lvcreate', [...lvmArgs, '-an', '-Zn', '-y', '-L', '8m', '-n', 'ours', vgName], { stdio: 'ignore' });
      const after = await cache.read();
      assert.deepEqual(after.lvs.map((r) => r.lv_name).filter((n) => n === 'theirs' || n === 'ours').sort(), ['ours', 'theirs']);

      counting = true;
      ran = [];
      await pool.deleteVolume(a.id);
      assert.equal(await pool.getVolume(a.id), null);
      assert.deepEqual(ran, ['lvremove', 'lvm'], 'the lvremove, then one fullreport for the lookup');
      ran = [];
      const b = await pool.createVolume(spec('fold-b'));
      assert.equal(await pool.volumeBusy(b.id), null);
      await pool.deleteVolume(b.id);
      assert.equal(await pool.getVolume(b.id), null);
      assert.deepEqual(ran, ['lvcreate', 'lvm', 'lvremove', 'lvm'], 'create, busy check of an inactive LV (from a new report), delete and lookup (from another)');
      // Many calls at once after another process's commit: one report for all of them, which sees it.
      execFileSync('lvcreate', [...lvmArgs, '-an', '-Zn', '-y', '-L', '4m', '-n', 'theirs-2', '--addtag', 'vpool.kind=bare', vgName], { stdio: 'ignore' });
      ran = [];
      const seen = await Promise.all(Array.from({ length: 8 }, () => pool.capacity({ type: 'thick' })));
      assert.deepEqual(ran, ['lvm'], 'eight lookups, one fullreport');
      assert.ok(seen.every((c) => c.availableBytes === seen[0].availableBytes));
      counting = false;
    } finally {
      counting = false;
      await poolCmd('destroy', '--vg', vgName, '--force');
      await forgetVg(vgName, [spare, extra.devices[0]]);
      await extra.release();
    }
  });

  it('sweeps at open the unfinished restores a crash left (the claim deleted, no retry), in the role that creates only, and leaves one that is held', async () => {
    const vgName = uniqueVg('vpw');
    const [, , , spare] = disks.devices;
    const act = ['--config', 'global{activation=0}'];
    const crashed = idFor('vol', 'crashed-restore');
    const held = idFor('vol', 'held-restore');
    // FAKE: this kernel has no device-mapper, so a dm table (dm.ts reads /sys/block/dm-*/dm/name) that
    // says `held` is active is made in a directory, and its /dev/<vg>/<lv> node is a real loop device
    // that another loop device reads: the in-use check the sweep makes is the kernel's own. (Not a
    // mount: a mount namespace another process makes meanwhile keeps a copy of it after our umount.)
    const fake = await mkdtemp('/var/tmp/vpool-sysblock-');
    const holder = await loopDisks(1, 32 * MiB);
    let reader = '';
    const devDir = `/dev/${vgName}`;
    const opts = { vg: vgName, reserveBytes: 0, overprovisionRatio: 1 };
    const names = () => lvsField('lv_name', vgName).split('\n').map((l) => l.trim()).filter(Boolean).sort();
    const free = () => Number(execFileSync('vgs', [...act, '--noheadings', '--units', 'b', '--nosuffix', '-o', 'vg_free', vgName], { encoding: 'utf8' }).trim());
    try {
      assert.equal((await poolCmd('init', '--vg', vgName, spare)).code, 0);
      const pool = await LvmPool.open(new LvmCli({ activation: false, vg: vgName }), opts);
      const kept = await pool.createVolume({ id: idFor('vol', 'complete'), name: 'complete', capacityBytes: 8 * MiB, parameters: {} });
      const freeBefore = free();
      // What createFilledLv makes first (tags and all), left by a receiver killed mid-restore.
      for (const id of [crashed, held]) {
        execFileSync('lvcreate', [...act, '-an', '-Zn', '-y', '-L', '64m', '-n', id, '--addtag', 'vpool.kind=vol', '--addtag', `vpool.name=${id}`, '--addtag', 'vpool.incomplete', vgName], { stdio: 'ignore' });
      }
      assert.equal(free(), freeBefore - 128 * MiB);
      assert.deepEqual((await pool.listVolumes()).map((v) => v.id), [kept.id], 'unfinished LVs are not listed');

      await mkdir(path.join(fake, 'dm-900', 'dm'), { recursive: true });
      await writeFile(path.join(fake, 'dm-900', 'dm', 'name'), `${dmName(vgName, held)}\n`);
      reader = execFileSync('losetup', ['--find', '--show', '--read-only', holder.devices[0]], { encoding: 'utf8' }).trim();
      await mkdir(devDir, { recursive: true });
      await symlink(holder.devices[0], path.join(devDir, held));

      await LvmPool.open(new LvmCli({ activation: false, vg: vgName }), opts, { sweep: false, sysBlock: fake });
      assert.deepEqual(names(), [crashed, held, kept.id].sort(), 'a node-only process sweeps nothing');

      await LvmPool.open(new LvmCli({ activation: false, vg: vgName }), opts, { sweep: true, sysBlock: fake });
      assert.deepEqual(names(), [held, kept.id].sort(), 'the crashed restore is gone; the held one (read by a loop device) and the complete volume stay');
      assert.equal(free(), freeBefore - 64 * MiB, "the crashed restore's space is back");

      execFileSync('losetup', ['-d', reader]);
      reader = '';
      await LvmPool.open(new LvmCli({ activation: false, vg: vgName }), opts, { sweep: true, sysBlock: fake });
      assert.deepEqual(names(), [kept.id], 'once nothing holds it, the next open removes it too');
      assert.equal(free(), freeBefore);
    } finally {
      if (reader) execFileSync('losetup', ['-d', reader]);
      await rm(devDir, { recursive: true, force: true });
      await rm(fake, { recursive: true, force: true });
      await holder.release();
      await poolCmd('destroy', '--vg', vgName, '--force');
      await forgetVg(vgName, [spare]);
    }
  });

  it('destroy refuses while volumes exist, unless --force, and releases the devices', async () => {
    const d = await startDriver({ args: ['--backend', 'lvm', '--vg', vg] });
    try {
      await d.client.createVolume({ name: 'keep', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()] });
    } finally {
      assert.deepEqual(await finish(d), []);
    }
    const refused = await poolCmd('destroy', '--vg', vg);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /still holds 1 volume\(s\) and 0 snapshot\(s\); pass --force/);
    assert.ok((await vgNames()).includes(vg));
    const forced = await poolCmd('destroy', '--vg', vg, '--force');
    assert.equal(forced.code, 0, forced.stderr);
    assert.ok(!(await vgNames()).includes(vg));
    const pvs = execFileSync('pvs', ['--config', 'global{activation=0}', '--noheadings', '-o', 'pv_name'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
    for (const dev of disks.devices.slice(0, 3)) assert.ok(!pvs.includes(dev), `${dev} released`);
  });
});


function lvsField(field: string, lv: string): string {
  return execFileSync('lvs', ['--config', 'global{activation=0}', '--noheadings', '-o', field, lv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
}

function lvsCount(vg: string): number {
  return execFileSync('lvs', ['--config', 'global{activation=0}', '--noheadings', '-o', 'lv_name', vg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').filter((l) => l.trim()).length;
}
