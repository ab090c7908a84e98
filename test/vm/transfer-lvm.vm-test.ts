// Runs INSIDE the QEMU VM (test/vm/vm-run.sh), whose Debian kernel has device-mapper and veth: the
// cross-node transfer with lvm pools on both sides and file↔lvm, two node plugins per network
// namespace, the namespaces joined by a veth pair. Started by test/e2e/transfer-vm.test.ts.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap, createVolume } from '../helpers/csi.js';
import { writeAt } from '../helpers/data.js';
import { BIN, MiB, pattern, type Driver } from '../helpers/driver.js';
import { lvsOf, sh, sumOf, vgFree, withLv } from '../helpers/lvm-vm.js';
import { transferNodes, type TransferNodes } from '../helpers/transfer-nodes.js';

const SIZE = 64 * MiB;

/** A thin LV's allocated bytes, as the thin pool counts them. */
const thinAllocated = (vg: string, lv: string) => (Number(sh('lvs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'data_percent,lv_size', `${vg}/${lv}`]).trim().split(/\s+/)[0]) / 100) * SIZE;

describe('transfer between lvm pools, and between lvm and file pools, on real device-mapper', { timeout: 2_040_000 }, () => {
  let nodes: TransferNodes;
  let a: Driver; // lvm vga, node-a, namespace a, listens
  let f: Driver; // file, node-f, namespace a, listens
  let b: Driver; // lvm vgb, node-b, namespace b
  let g: Driver; // file, node-g, namespace b
  const startA = async (extra: string[] = []) => (a = await nodes.restartA(extra));
  const startB = async () => (b = await nodes.restartB());
  /** CreateVolume on `on` for a claim of its node whose data source is held by `holder` (node-a by default). */
  const across = (on: Driver, name: string, source: { snapshot?: string; volume?: string }, params: Record<string, string> = {}, holder = 'node-a') => nodes.restore(name, source, { on, size: SIZE, params, holder });
  before(async () => {
    execFileSync('modprobe', ['-a', 'dm_thin_pool', 'dm_snapshot', 'veth']);
    for (const [vg, disk] of [['vga', 'data0'], ['vgb', 'data1']]) sh(BIN, ['pool', 'init', '--vg', vg, '--thin-pool', 'thin', '--thin-size', '50%', `/dev/disk/by-id/virtio-${disk}`]);
    nodes = await transferNodes('vxt', {
      aArgs: ['--backend', 'lvm', '--vg', 'vga'],
      bArgs: ['--backend', 'lvm', '--vg', 'vgb'],
      stallTimeout: '60s',
      more: [
        { node: 'node-f', side: 'a', port: 9811 },
        { node: 'node-g', side: 'b' },
      ],
    });
    ({ a, b } = nodes);
    f = nodes.others.get('node-f')!;
    g = nodes.others.get('node-g')!;
  });
  after(async () => {
    const drivers = [a, f, b, g];
    for (const d of drivers) for (const l of d?.logs ?? []) if (/"level":"(error|warn)"/.test(l)) console.log(`driver: ${l.slice(0, 600)}`);
    const left = nodes ? await nodes.remove() : [];
    for (const vg of ['vga', 'vgb']) {
      assert.deepEqual(sh('lvs', ['--noheadings', '-o', 'lv_name', vg]).split('\n').map((l) => l.trim()).filter(Boolean), ['thin'], `${vg}: only the thin pool is left`);
      sh(BIN, ['pool', 'destroy', '--vg', vg]);
    }
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

      const restored = await across(b, `restored-${type}`, { snapshot: snap.snapshot_id }, { type });
      assert.equal(await withLv('vgb', restored.volume_id, (dev) => sumOf(dev, SIZE)), atSnapshot, 'the restore has the data of the snapshot');
      const clone = await across(b, `clone-${type}`, { volume: src.volume_id }, { type });
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
    const onLvm = await across(b, 'on-lvm', { snapshot: fileSnap.snapshot_id }, { type: 'thin' }, 'node-f');
    assert.equal(await withLv('vgb', onLvm.volume_id, (dev) => sumOf(dev, SIZE)), await sumOf(path.join(f.poolDir, 'snapshots', `${fileSnap.snapshot_id}.img`), SIZE));
    // lvm thick (node a) → file (node b)
    const lvmSrc = await createVolume(a, 'lvm-src', SIZE, blockCap(), { parameters: { type: 'thick' } });
    await withLv('vga', lvmSrc.volume_id, (dev) => writeAt(dev, 0, pattern('from-lvm', 2 * MiB)));
    const want = await withLv('vga', lvmSrc.volume_id, (dev) => sumOf(dev, SIZE));
    const onFile = await across(g, 'on-file', { volume: lvmSrc.volume_id });
    assert.equal(await sumOf(path.join(g.poolDir, 'volumes', `${onFile.volume_id}.img`), SIZE), want);
    await b.client.deleteVolume({ volume_id: onLvm.volume_id });
    await g.client.deleteVolume({ volume_id: onFile.volume_id });
    await f.client.deleteSnapshot({ snapshot_id: fileSnap.snapshot_id });
    await f.client.deleteVolume({ volume_id: fileSrc.volume_id });
    await a.client.deleteVolume({ volume_id: lvmSrc.volume_id });
  });

  it('kill -9 of A (lvm) or of B (lvm) mid-stream: B lists nothing of it, A keeps no copy for sending, and the retry is right', async () => {
    // A sends slowly (4 MiB/s) so that 24 MiB take long enough to be cut.
    await startA(['--transfer-rate', String(4 * MiB)]);
    const src = await createVolume(a, 'src-kill', SIZE, blockCap(), { parameters: { type: 'thick' } });
    await withLv('vga', src.volume_id, (dev) => writeAt(dev, 4 * MiB, pattern('kill', 24 * MiB)));
    const want = await withLv('vga', src.volume_id, (dev) => sumOf(dev, SIZE));
    // Active, as a staged volume is: A reads it from a snapshot made for the stream (.send).
    sh('lvchange', ['-y', '-ay', '-K', `vga/${src.volume_id}`]);
    const freeB = vgFree('vgb');
    const clone = (name: string) => across(b, name, { volume: src.volume_id }, { type: 'thick' });
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
    await startA(['--transfer-rate', String(4 * MiB)]);
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
    await startB();
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
