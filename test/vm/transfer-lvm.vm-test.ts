// Runs INSIDE the QEMU VM (test/vm/vm-run.sh), whose Debian kernel has device-mapper and veth: the
// cross-node transfer with lvm pools on both sides and file↔lvm, two node plugins per network
// namespace, the namespaces joined by a veth pair. Started by test/e2e/transfer-vm.test.ts.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap, createVolume } from '../helpers/csi.js';
import { makeCa } from '../helpers/certs.js';
import { writeAt } from '../helpers/data.js';
import { BIN, finish, MiB, pattern, startDriver, tempDir, type Driver } from '../helpers/driver.js';
import { twoHosts, type TwoHosts } from '../helpers/netns.js';
import { lvsOf, sh, sumOf, vgFree, withLv } from '../helpers/lvm-vm.js';

const SIZE = 64 * MiB;
/** A thin LV's allocated bytes, as the thin pool counts them. */
const thinAllocated = (vg: string, lv: string) => (Number(sh('lvs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'data_percent,lv_size', `${vg}/${lv}`]).trim().split(/\s+/)[0]) / 100) * SIZE;

describe('transfer between lvm pools, and between lvm and file pools, on real device-mapper', { timeout: 820_000 }, () => {
  let hosts: TwoHosts;
  let certs: string;
  const drivers: Driver[] = [];
  let a: Driver; // lvm vga, namespace a, listens
  let f: Driver; // file, namespace a, listens
  let b: Driver; // lvm vgb, namespace b, asks a and f
  let g: Driver; // file, namespace b, asks a
  let startA: (extra?: string[], dir?: string) => Promise<Driver>;
  let startB: (dir?: string) => Promise<Driver>;
  before(async () => {
    execFileSync('modprobe', ['-a', 'dm_thin_pool', 'dm_snapshot', 'veth']);
    hosts = await twoHosts('vxt');
    certs = await tempDir('vpool-certs-');
    const ca = await makeCa(certs, 'driver');
    for (const [vg, disk] of [['vga', 'data0'], ['vgb', 'data1']]) sh(BIN, ['pool', 'init', '--vg', vg, '--thin-pool', 'thin', '--thin-size', '50%', `/dev/disk/by-id/virtio-${disk}`]);
    const tls = { a: await ca.node('a'), b: await ca.node('b') };
    const peerA = `${hosts.a.addr}:9810`;
    const peerF = `${hosts.a.addr}:9811`;
    startA = (extra = [], dir) => startDriver({ dir, nodeId: 'node-a', wrap: hosts.wrap(hosts.a.ns), args: ['--backend', 'lvm', '--vg', 'vga', '--transfer-listen', peerA, '--transfer-tls-dir', tls.a, ...extra] });
    startB = (dir) => startDriver({ dir, nodeId: 'node-b', wrap: hosts.wrap(hosts.b.ns), args: ['--backend', 'lvm', '--vg', 'vgb', '--transfer-peer', peerA, '--transfer-peer', peerF, '--transfer-tls-dir', tls.b] });
    a = await startA();
    f = await startDriver({ nodeId: 'node-a', wrap: hosts.wrap(hosts.a.ns), args: ['--transfer-listen', peerF, '--transfer-tls-dir', tls.a] });
    b = await startB();
    g = await startDriver({ nodeId: 'node-b', wrap: hosts.wrap(hosts.b.ns), args: ['--transfer-peer', peerA, '--transfer-tls-dir', tls.b] });
    drivers.push(a, f, b, g);
  });
  after(async () => {
    const left: string[] = [];
    for (const d of drivers) left.push(...(await finish(d)));
    for (const d of drivers) for (const l of d.logs) if (/"level":"(error|warn)"/.test(l)) console.log(`driver: ${l.slice(0, 600)}`);
    for (const vg of ['vga', 'vgb']) {
      assert.deepEqual(sh('lvs', ['--noheadings', '-o', 'lv_name', vg]).split('\n').map((l) => l.trim()).filter(Boolean), ['thin'], `${vg}: only the thin pool is left`);
      sh(BIN, ['pool', 'destroy', '--vg', vg]);
    }
    await hosts?.remove();
    if (certs) await rm(certs, { recursive: true, force: true });
    assert.deepEqual(left, []);
  });

  for (const type of ['thick', 'thin'] as const) {
    it(`lvm ${type} to lvm ${type}: restore of a snapshot and clone of a volume written after it`, async () => {
      const src = await createVolume(a, `src-${type}`, SIZE, blockCap(), { parameters: { type } });
      const head = pattern(`head-${type}`, 3 * MiB);
      await withLv('vga', src.volume_id, (dev) => writeAt(dev, 8 * MiB, head));
      const snap = (await a.client.createSnapshot({ name: `snap-${type}`, source_volume_id: src.volume_id, parameters: type === 'thick' ? { snapshotReserve: '100%' } : {} })).snapshot!;
      const atSnapshot = await withLv('vga', src.volume_id, (dev) => sumOf(dev, SIZE));
      await withLv('vga', src.volume_id, (dev) => writeAt(dev, 40 * MiB, pattern(`later-${type}`, 2 * MiB)));
      const now = await withLv('vga', src.volume_id, (dev) => sumOf(dev, SIZE));

      const restored = await createVolume(b, `restored-${type}`, SIZE, blockCap(), { parameters: { type }, source: { snapshot: snap.snapshot_id } });
      assert.equal(await withLv('vgb', restored.volume_id, (dev) => sumOf(dev, SIZE)), atSnapshot, 'the restore has the data of the snapshot');
      const clone = await createVolume(b, `clone-${type}`, SIZE, blockCap(), { parameters: { type }, source: { volume: src.volume_id } });
      assert.equal(await withLv('vgb', clone.volume_id, (dev) => sumOf(dev, SIZE)), now, 'the clone has the data of now');
      if (type === 'thin') {
        const [had, got] = [thinAllocated('vga', src.volume_id), thinAllocated('vgb', clone.volume_id)];
        assert.ok(Math.abs(got - had) <= had * 0.05 + 64 * 1024, `allocated on B ${got} within 5% of A's ${had}`);
      }
      // A's point-in-time copy for the clone is gone.
      assert.doesNotMatch(sh('lvs', ['--noheadings', '-o', 'lv_name', 'vga']), /\.send/);
      for (const v of [restored, clone]) await b.client.deleteVolume({ volume_id: v.volume_id });
      await a.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
      await a.client.deleteVolume({ volume_id: src.volume_id });
    });
  }

  it('file to lvm and lvm to file', async () => {
    // file (node a) → lvm thin (node b)
    const fileSrc = await createVolume(f, 'file-src', SIZE, blockCap());
    await writeAt(path.join(f.poolDir, 'volumes', `${fileSrc.volume_id}.img`), 16 * MiB, pattern('from-file', 4 * MiB));
    const fileSnap = (await f.client.createSnapshot({ name: 'file-snap', source_volume_id: fileSrc.volume_id, parameters: {} })).snapshot!;
    const onLvm = await createVolume(b, 'on-lvm', SIZE, blockCap(), { parameters: { type: 'thin' }, source: { snapshot: fileSnap.snapshot_id } });
    assert.equal(await withLv('vgb', onLvm.volume_id, (dev) => sumOf(dev, SIZE)), await sumOf(path.join(f.poolDir, 'snapshots', `${fileSnap.snapshot_id}.img`), SIZE));
    // lvm thick (node a) → file (node b)
    const lvmSrc = await createVolume(a, 'lvm-src', SIZE, blockCap(), { parameters: { type: 'thick' } });
    await withLv('vga', lvmSrc.volume_id, (dev) => writeAt(dev, 0, pattern('from-lvm', 2 * MiB)));
    const want = await withLv('vga', lvmSrc.volume_id, (dev) => sumOf(dev, SIZE));
    const onFile = await createVolume(g, 'on-file', SIZE, blockCap(), { source: { volume: lvmSrc.volume_id } });
    assert.equal(await sumOf(path.join(g.poolDir, 'volumes', `${onFile.volume_id}.img`), SIZE), want);
    await b.client.deleteVolume({ volume_id: onLvm.volume_id });
    await g.client.deleteVolume({ volume_id: onFile.volume_id });
    await f.client.deleteSnapshot({ snapshot_id: fileSnap.snapshot_id });
    await f.client.deleteVolume({ volume_id: fileSrc.volume_id });
    await a.client.deleteVolume({ volume_id: lvmSrc.volume_id });
  });

  it('kill -9 of A (lvm) or of B (lvm) mid-stream: B lists nothing of it, A keeps no copy for sending, and the retry is right', async () => {
    const replace = (old: Driver, by: Driver) => void (drivers[drivers.indexOf(old)] = by);
    // A sends slowly (4 MiB/s) so that 24 MiB take long enough to be cut.
    let next = await startA(['--transfer-rate', String(4 * MiB)], (await a.stop(), a.dir));
    replace(a, next);
    a = next;
    const src = await createVolume(a, 'src-kill', SIZE, blockCap(), { parameters: { type: 'thick' } });
    await withLv('vga', src.volume_id, (dev) => writeAt(dev, 4 * MiB, pattern('kill', 24 * MiB)));
    const want = await withLv('vga', src.volume_id, (dev) => sumOf(dev, SIZE));
    // Active, as a staged volume is: A reads it from a snapshot made for the stream (.send).
    sh('lvchange', ['-y', '-ay', '-K', `vga/${src.volume_id}`]);
    const freeB = vgFree('vgb');
    const clone = (name: string) => createVolume(b, name, SIZE, blockCap(), { parameters: { type: 'thick' }, source: { volume: src.volume_id } });
    const midStream = async (what: string) => {
      // Mid-stream: A holds its point-in-time copy (vpool.kind=send), B its incomplete LV.
      for (let i = 0; i < 100 && !(/\.send/.test(lvsOf('vga')) && /vpool\.incomplete/.test(lvsOf('vgb'))); i++) await new Promise((r) => setTimeout(r, 100));
      assert.match(lvsOf('vga'), /\.send/, `${what}: A is sending from its copy`);
      assert.match(lvsOf('vgb'), /vpool\.incomplete/, `${what}: B is filling an incomplete LV`);
      await new Promise((r) => setTimeout(r, 1000));
    };

    // A dies while sending: B's call fails, B removes its incomplete LV; A's restart removes the copy it was sending from.
    const first = clone('clone-kill').then(() => 'answered', (e: { code?: number }) => `failed ${e.code}`);
    await midStream('A killed');
    await a.stop('SIGKILL');
    assert.equal(await first, 'failed 14', 'UNAVAILABLE');
    assert.deepEqual(lvsOf('vgb').split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean), ['thin'], 'nothing of it on B');
    assert.match(lvsOf('vga'), /\.send/, "A's copy outlived A");
    next = await startA(['--transfer-rate', String(4 * MiB)], a.dir);
    replace(a, next);
    a = next;
    assert.doesNotMatch(lvsOf('vga'), /\.send/, "A's start-up removed the copy it had been sending from");

    // B dies while receiving: its incomplete LV outlives it (active: its dm device outlives the
    // process); A sees the receiver go and removes its copy.
    const second = clone('clone-kill').then(() => 'answered', () => 'cut off');
    await midStream('B killed');
    await b.stop('SIGKILL');
    assert.equal(await second, 'cut off');
    for (let i = 0; i < 100 && /\.send/.test(lvsOf('vga')); i++) await new Promise((r) => setTimeout(r, 100));
    assert.doesNotMatch(lvsOf('vga'), /\.send/, 'A released its copy when the receiver went');
    assert.match(lvsOf('vgb'), /vpool\.incomplete/, "B's unfinished LV outlived B");
    assert.ok(vgFree('vgb') < freeB, 'and holds its space');
    // The claim is deleted instead of retried: nothing will ever ask for that name again. B's restart sweeps it.
    next = await startB(b.dir);
    replace(b, next);
    b = next;
    assert.doesNotMatch(lvsOf('vgb'), /vpool\.incomplete/, "B's start removed the unfinished LV");
    assert.equal(vgFree('vgb'), freeB, "vgb's free space is back");
    assert.equal((await b.client.listVolumes({})).entries.length, 0);
    // A later CreateVolume of that name (a new claim, or a retry after all) starts from nothing and is right.
    const done = await clone('clone-kill');
    assert.equal(await withLv('vgb', done.volume_id, (dev) => sumOf(dev, SIZE)), want);
    assert.doesNotMatch(lvsOf('vgb'), /vpool\.incomplete/);
    await b.client.deleteVolume({ volume_id: done.volume_id });
    sh('lvchange', ['-y', '-an', `vga/${src.volume_id}`]);
    await a.client.deleteVolume({ volume_id: src.volume_id });
  });
});
