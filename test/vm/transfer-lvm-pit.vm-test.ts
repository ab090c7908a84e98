// Runs INSIDE the QEMU VM (test/vm/vm-run.sh): what an lvm node reads when it sends a volume (one
// point in time, or refused), and what a receiver's start does with the unfinished LVs a crash left.
// Two lvm node plugins, one per network namespace, joined by a veth pair. Started by
// test/e2e/transfer-vm.test.ts.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { closeSync, existsSync, openSync, readFileSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import path from 'node:path';
import { dmDeviceOf } from '../../src/pool/lvm/dm.js';
import { after, before, describe, it } from 'node:test';
import { cowBytesCovering } from '../../src/pool/lvm/lv-transfer.js';
import { blockCap, createVolume } from '../helpers/csi.js';
import { writeAt } from '../helpers/data.js';
import { BIN, MiB, pattern, type Driver } from '../helpers/driver.js';
import { lvsOf, sh, sumOf, vgFree, withLv } from '../helpers/lvm-vm.js';
import { transferNodes, type TransferNodes } from '../helpers/transfer-nodes.js';

const SIZE = 64 * MiB;

/**
 * The kernel's node of an active LV (/dev/dm-N where devtmpfs has it, else one of the same device
 * number made here): a write through it fails with ENOENT, never lands elsewhere, if the device is
 * gone, as it was when the sender's release deactivated a COW snapshot and lvm took its origin down too.
 */
async function kernelNode(vg: string, lv: string): Promise<string> {
  const dm = dmDeviceOf(vg, lv);
  if (!dm) throw new Error(`${vg}/${lv} has no dm device`);
  if (existsSync(`/dev/${dm}`)) return `/dev/${dm}`;
  const [major, minor] = readFileSync(`/sys/block/${dm}/dev`, 'utf8').trim().split(':');
  const node = path.join(await mkdtemp('/tmp/vpool-node-'), dm);
  sh('mknod', [node, 'b', major, minor]);
  return node;
}

describe('lvm sends of one point in time, and the sweep of unfinished LVs, on real device-mapper', { timeout: 2_040_000 }, () => {
  let nodes: TransferNodes;
  let a: Driver; // lvm vga, node-a, namespace a, listens; sends at 4 MiB/s, so a stream of 16 MiB takes seconds
  let b: Driver; // lvm vgb, node-b, namespace b
  const startB = async () => (b = await nodes.restartB());
  /** CreateVolume on B for a claim of B's whose data source is A's volume. */
  const across = (name: string, volume: string, size: number, params: Record<string, string>) => nodes.restore(name, { volume }, { size, params });
  before(async () => {
    execFileSync('modprobe', ['-a', 'dm_thin_pool', 'dm_snapshot', 'veth']);
    for (const [vg, disk] of [['vga', 'data0'], ['vgb', 'data1']]) sh(BIN, ['pool', 'init', '--vg', vg, '--thin-pool', 'thin', '--thin-size', '50%', `/dev/disk/by-id/virtio-${disk}`]);
    nodes = await transferNodes('vxp', {
      aArgs: ['--backend', 'lvm', '--vg', 'vga', '--transfer-rate', String(4 * MiB)],
      bArgs: ['--backend', 'lvm', '--vg', 'vgb'],
      stallTimeout: '60s',
    });
    ({ a, b } = nodes);
  });
  after(async () => {
    for (const d of [a, b]) for (const l of d?.logs ?? []) if (/"level":"(error|warn)"/.test(l)) console.log(`driver: ${l.slice(0, 600)}`);
    const left = nodes ? await nodes.remove() : [];
    for (const vg of ['vga', 'vgb']) {
      assert.deepEqual(sh('lvs', ['--noheadings', '-o', 'lv_name', vg]).split('\n').map((l) => l.trim()).filter(Boolean), ['thin'], `${vg}: only the thin pool is left`);
      sh(BIN, ['pool', 'destroy', '--vg', vg]);
    }
    assert.deepEqual(left, []);
  });

  it('point in time: an active thick volume is read from a COW snapshot sized to cover it (GetCapacity counts it while it exists); a write after the stream began is not in the clone', async () => {
    const src = await createVolume(a, 'pit-thick', SIZE, blockCap(), { parameters: { type: 'thick' } });
    await withLv('vga', src.volume_id, (dev) => writeAt(dev, 0, pattern('pit', 16 * MiB)));
    sh('lvchange', ['-y', '-ay', '-K', `vga/${src.volume_id}`]); // staged: a pod may write it
    const dev = await kernelNode('vga', src.volume_id);
    const atStart = await sumOf(dev, SIZE);
    const capacity = async () => Number((await a.client.getCapacity({ parameters: { type: 'thick' } })).available_capacity);
    const before = await capacity();
    const clone = across('pit-clone', src.volume_id, SIZE, { type: 'thick' });
    const send = `${src.volume_id}.send`;
    for (let i = 0; i < 300 && !sh('lvs', ['--noheadings', '-o', 'lv_name', 'vga']).includes(send); i++) await new Promise((r) => setTimeout(r, 100));
    const cow = Number(sh('lvs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'lv_size', `vga/${send}`]).trim());
    assert.equal(cow, cowBytesCovering(SIZE, 4 * MiB), 'the COW store covers every chunk of the origin and its metadata');
    assert.equal(before - (await capacity()), cow, 'GetCapacity counts the snapshot while it exists');
    await writeAt(dev, 8 * MiB, pattern('pit-later', 4 * MiB));
    assert.notEqual(await sumOf(dev, SIZE), atStart, 'the write reached the source');
    const made = await clone;
    assert.equal(await withLv('vgb', made.volume_id, (d) => sumOf(d, SIZE)), atStart, 'the clone is the source as of the start of the stream');
    assert.doesNotMatch(sh('lvs', ['--noheadings', '-o', 'lv_name', 'vga']), /\.send/);
    assert.equal(await capacity(), before, 'and its space is back');
    assert.equal(sh('lvs', ['--noheadings', '-o', 'lv_attr', `vga/${src.volume_id}`]).trim()[4], 'a', 'the source is still active (the snapshot went without its origin)');
    await b.client.deleteVolume({ volume_id: made.volume_id });
    sh('lvchange', ['-y', '-an', `vga/${src.volume_id}`]);
    await a.client.deleteVolume({ volume_id: src.volume_id });
  });

  it('an inactive volume is read in place (activated for the read, no snapshot), and left inactive', async () => {
    const src = await createVolume(a, 'in-place', SIZE, blockCap(), { parameters: { type: 'thin' } });
    await withLv('vga', src.volume_id, (dev) => writeAt(dev, 0, pattern('in-place', 16 * MiB)));
    const want = await withLv('vga', src.volume_id, (dev) => sumOf(dev, SIZE));
    let settled = false;
    const clone = across('in-place-clone', src.volume_id, SIZE, { type: 'thin' }).finally(() => (settled = true));
    let sawActive = false;
    while (!settled) {
      const names = sh('lvs', ['--noheadings', '-o', 'lv_name', 'vga']);
      assert.doesNotMatch(names, /\.send/, 'no snapshot for sending');
      if (sh('lvs', ['--noheadings', '-o', 'lv_attr', `vga/${src.volume_id}`]).trim()[4] === 'a') sawActive = true;
      await new Promise((r) => setTimeout(r, 200));
    }
    assert.ok(sawActive, 'the volume itself was activated for the read');
    const made = await clone;
    assert.equal(await withLv('vgb', made.volume_id, (d) => sumOf(d, SIZE)), want);
    assert.equal(sh('lvs', ['--noheadings', '-o', 'lv_attr', `vga/${src.volume_id}`]).trim()[4], '-', 'inactive again');
    await b.client.deleteVolume({ volume_id: made.volume_id });
    await a.client.deleteVolume({ volume_id: src.volume_id });
  });

  it('a COW snapshot for sending that does not fit is refused at once with RESOURCE_EXHAUSTED: nothing is created on either side', async () => {
    const room = Number((await a.client.getCapacity({ parameters: { type: 'thick' } })).available_capacity);
    // 60% of the room: the volume fits, a snapshot covering it (more than the 40% left) does not.
    const size = Math.floor((room * 0.6) / (4 * MiB)) * 4 * MiB;
    const src = await createVolume(a, 'no-room', size, blockCap(), { parameters: { type: 'thick' } });
    sh('lvchange', ['-y', '-ay', '-K', `vga/${src.volume_id}`]);
    const [lvsA, freeA, freeB] = [lvsOf('vga'), vgFree('vga'), vgFree('vgb')];
    const refused = await across('no-room-clone', src.volume_id, size, { type: 'thin' }).then(
      () => ({ code: 0, details: 'answered' }),
      (e: { code: number; details: string }) => e,
    );
    assert.equal(refused.code, 8, `RESOURCE_EXHAUSTED: ${refused.details}`);
    assert.match(refused.details, /copy-on-write snapshot of \d+ bytes; vga has \d+ bytes available/);
    assert.equal(lvsOf('vga'), lvsA, 'A created nothing');
    assert.equal(vgFree('vga'), freeA);
    assert.doesNotMatch(lvsOf('vgb'), /vpool\.incomplete/, 'B removed what it had begun');
    assert.equal(vgFree('vgb'), freeB);
    sh('lvchange', ['-y', '-an', `vga/${src.volume_id}`]);
    await a.client.deleteVolume({ volume_id: src.volume_id });
  });

  it("B's start leaves an unfinished LV that is held open (a fill in a process it does not know of), and removes it once let go", async () => {
    const id = (await import('../../src/ids.js')).idFor('vol', 'held-open');
    sh('lvcreate', ['-y', '-L', '16m', '-n', id, '--addtag', 'vpool.kind=vol', '--addtag', 'vpool.name=held-open', '--addtag', 'vpool.incomplete', 'vgb']);
    // A process holds the device open (lv_attr's open flag), as a filler would; this one lets its own descriptor go.
    const fd = openSync(`/dev/vgb/${id}`, 'r');
    const holder = spawn('sleep', ['600'], { stdio: [fd, 'ignore', 'ignore'] });
    closeSync(fd);
    try {
      await startB();
      assert.match(lvsOf('vgb'), new RegExp(id), 'held: left alone');
      holder.kill('SIGKILL');
      await new Promise((r) => holder.once('exit', r));
      await startB();
      assert.doesNotMatch(lvsOf('vgb'), new RegExp(id), 'let go: removed at the next start');
    } finally {
      if (holder.exitCode === null) holder.kill('SIGKILL');
    }
  });
});
