import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { createHash, randomBytes } from 'node:crypto';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { blockCap } from '../helpers/csi.js';
import { codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { controllerIdentity, rbdPool, startCeph, type TestCeph } from '../helpers/ceph.js';
import { guestDisk, pollUntil, startLibvirt, testDomain, URI, virsh, type TestDomain, type TestPool } from '../helpers/libvirt.js';

interface RbdInfo {
  size: number;
  parent?: { image: string; snapshot: string };
}

// The libvirt controller on an rbd pool of a REAL single-node Ceph (test/ceph/ceph-start.sh), given a Ceph identity of
// its own (a user with mon 'profile rbd' and osd 'profile rbd pool=rbd', never the admin key): images are made, cloned,
// flattened and sized by librbd in the driver's process (librbd.ts, ceph-store.ts), and libvirt only attaches them. What the driver did is read back
// from Ceph itself (rbd info, rbd snap ls, rbd export, ceph df).
describe('libvirt on a real Ceph, the controller with a Ceph identity', needsRoot(), () => {
  let ceph: TestCeph;
  let pool: TestPool;
  let d: Driver;
  let identity: Awaited<ReturnType<typeof controllerIdentity>>;
  let domDir = '';
  const doms: TestDomain[] = [];
  // Every driver this suite starts, for the after hook's account of a failure: CI shows only the output's tail.
  const logsSeen: string[][] = [];
  const start = async (extra: string[] = []) => {
    const drv = await startDriver({ ...(d ? { dir: d.dir } : {}), args: args(extra) });
    logsSeen.push(drv.logs);
    return drv;
  };
  const args = (extra: string[] = [], poolName = pool.name) => ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', poolName, '--hypervisor', 'hv-rbd', ...identity.flags, ...extra];
  before(async () => {
    await startLibvirt();
    ceph = await startCeph();
    pool = await rbdPool(ceph, 'vpool-rbd-id');
    identity = await controllerIdentity(ceph, 'e2e');
    d = await start();
  });
  after(async () => {
    const left = d ? await finish(d) : [];
    for (const dom of doms) await dom.remove();
    if (domDir) await rm(domDir, { recursive: true, force: true });
    const left2 = ceph ? await images().catch(() => []) : [];
    await pool?.remove();
    const health = left2.length ? await ceph.ceph('health', 'detail').catch((e: Error) => e.message) : '';
    await ceph?.stop();
    assert.deepEqual(left, []);
    const warned = logsSeen.flat().filter((l) => /"level":"(warn|error)"/.test(l)).slice(-30);
    assert.deepEqual(left2, [], `nothing is left in Ceph (ceph health: ${health.trim()}; the drivers' last warnings and errors:\n${warned.join('\n')})`);
  });

  const images = async () => (await ceph.rbd('ls', 'rbd')).split('\n').filter(Boolean);
  const imageOf = async (id: string) => (await images()).find((i) => i.startsWith(`${id}.`) && !i.endsWith('.retired'))!;
  const info = async (image: string) => JSON.parse(await ceph.rbd('info', '--format', 'json', `rbd/${image}`)) as RbdInfo;
  const snapsOf = async (image: string) => (JSON.parse(await ceph.rbd('snap', 'ls', '--format', 'json', `rbd/${image}`)) as Array<{ name: string }>).map((s) => s.name);
  const exportHash = (spec: string) =>
    new Promise<string>((resolve, reject) => {
      const h = createHash('sha256');
      const p = execFile('rbd', ['-c', ceph.conf, 'export', '--no-progress', spec, '-'], { encoding: 'buffer', maxBuffer: 1 << 30 }, (err) => (err ? reject(err) : resolve(h.digest('hex'))));
      p.stdout!.on('data', (b: Buffer) => h.update(b));
    });
  const write = (image: string) => ceph.rbd('bench', '--io-type', 'write', '--io-size', '64K', '--io-total', '4M', '--io-pattern', 'rand', '--io-threads', '1', `rbd/${image}`);
  const mkVol = async (name: string, source?: { snapshot?: { snapshot_id: string }; volume?: { volume_id: string } }, size = 32 * MiB) =>
    (await d.client.createVolume({ name, capacity_range: { required_bytes: String(size) }, volume_capabilities: [blockCap()], parameters: {}, ...(source ? { volume_content_source: source } : {}) })).volume!;
  const mkSnap = async (name: string, source_volume_id: string) => (await d.client.createSnapshot({ name, source_volume_id, parameters: {}, secrets: {} })).snapshot!;
  const fromSnap = (snapshot_id: string) => ({ snapshot: { snapshot_id } });

  it('snapshots a volume written since its last copy again and again, each restore holding its instant; a clone\'s own snapshot goes with it', async () => {
    const a = await mkVol('pvc-id-a');
    const aImage = await imageOf(a.volume_id);
    const hashes: string[] = [];
    const snaps = [];
    for (let i = 0; i < 3; i++) {
      await write(aImage);
      hashes.push(await exportHash(`rbd/${aImage}`));
      snaps.push(await mkSnap(`snap-id-${i}`, a.volume_id));
    }
    assert.equal(new Set(hashes).size, 3, 'three different instants');
    const clone = await mkVol('pvc-id-clone', { volume: { volume_id: a.volume_id } });
    assert.equal(await exportHash(`rbd/${await imageOf(clone.volume_id)}`), hashes[2], 'a clone of the volume itself, after it was copied and written');
    for (const [i, s] of snaps.entries()) {
      const r = await mkVol(`pvc-id-r${i}`, fromSnap(s.snapshot_id));
      assert.equal(await exportHash(`rbd/${await imageOf(r.volume_id)}`), hashes[i], `restore ${i} holds the data of its instant`);
      assert.equal((await info(await imageOf(r.volume_id))).parent?.image, await imageOf(s.snapshot_id), 'a Ceph clone of the snapshot');
      await d.client.deleteVolume({ volume_id: r.volume_id });
    }
    // One Ceph snapshot per clone, named for it; none of libvirt's.
    const expected = [];
    for (const id of [...snaps.map((s) => s.snapshot_id), clone.volume_id]) expected.push(`to.${await imageOf(id)}`);
    assert.deepEqual((await snapsOf(aImage)).sort(), expected.sort(), 'the driver\'s own snapshots, one per clone');
    await d.client.deleteVolume({ volume_id: clone.volume_id });
    assert.equal((await snapsOf(aImage)).length, 3, 'the clone\'s snapshot went with it');
    for (const s of snaps) await d.client.deleteSnapshot({ snapshot_id: s.snapshot_id });
    assert.deepEqual(await snapsOf(aImage), [], 'and each snapshot\'s with it');
    await d.client.deleteVolume({ volume_id: a.volume_id });
    assert.deepEqual(await images(), []);
  });

  it('deleting a parent flattens its clones and removes it; with no room to flatten it is retired, and flattened away at a start that has room', async () => {
    const a = await mkVol('pvc-id-parent');
    await write(await imageOf(a.volume_id));
    const s = await mkSnap('snap-id-parent', a.volume_id);
    const sImage = await imageOf(s.snapshot_id);
    const atSnap = await exportHash(`rbd/${sImage}`);
    const r = await mkVol('pvc-id-restore', fromSnap(s.snapshot_id));
    const rImage = await imageOf(r.volume_id);

    await d.client.deleteVolume({ volume_id: a.volume_id });
    assert.equal((await info(sImage)).parent, undefined, 'the snapshot was flattened: it reads nothing from the volume');
    assert.ok(!(await images()).some((i) => i.startsWith(a.volume_id)), 'the volume is gone from Ceph, no tombstone');
    assert.equal(await exportHash(`rbd/${sImage}`), atSnap);

    // No room: a reserve that leaves less than the restore's size. The snapshot is retired, not flattened.
    const df = JSON.parse(await ceph.ceph('df', '--format', 'json')) as { pools: Array<{ name: string; stats: { max_avail: number } }> };
    const maxAvail = df.pools.find((p) => p.name === 'rbd')!.stats.max_avail;
    await d.stop();
    d = await start(['--reserve', String(maxAvail - 16 * MiB)]);
    await d.client.deleteSnapshot({ snapshot_id: s.snapshot_id });
    assert.ok((await images()).includes(`${s.snapshot_id}.retired`), 'retired');
    assert.equal((await info(rImage)).parent?.image, sImage, 'the restore still reads it');
    assert.deepEqual((await d.client.listSnapshots({})).entries, [], 'and the snapshot is absent');

    // A start with room collects it: the restore is flattened, the retired image and its tombstone go.
    await d.stop();
    d = await start();
    await pollUntil(async () => !(await images()).some((i) => i.startsWith(s.snapshot_id)) || undefined, 60_000, async () => `the retired snapshot was not collected at start: ${(await images()).join(', ')}`);
    assert.equal((await info(rImage)).parent, undefined, 'the restore was flattened');
    assert.equal(await exportHash(`rbd/${rImage}`), atSnap, 'and holds the snapshot\'s data');
    await d.client.deleteVolume({ volume_id: r.volume_id });
    assert.deepEqual(await images(), []);
  });

  it('a copy deeper than 8 clones is flattened as it is made', async () => {
    const made: string[] = [];
    let v = await mkVol('pvc-id-chain-0');
    await write(await imageOf(v.volume_id));
    const data = await exportHash(`rbd/${await imageOf(v.volume_id)}`);
    made.push(v.volume_id);
    const depthOf = async (image: string) => {
      let n = 0;
      for (let p = (await info(image)).parent; p; p = (await info(p.image)).parent) n++;
      return n;
    };
    for (let i = 1; i <= 5; i++) {
      const s = await mkSnap(`snap-id-chain-${i}`, v.volume_id);
      made.push(s.snapshot_id);
      v = await mkVol(`pvc-id-chain-${i}`, fromSnap(s.snapshot_id));
      made.push(v.volume_id);
    }
    const depths = [];
    for (const id of made) depths.push(await depthOf(await imageOf(id)));
    // 0, 1, 2, ... 8, then the ninth copy would read through nine images: flattened, it starts a new chain.
    assert.deepEqual(depths, [0, 1, 2, 3, 4, 5, 6, 7, 8, 0, 1]);
    assert.equal(await exportHash(`rbd/${await imageOf(made[made.length - 1]!)}`), data, 'the data carried through');
    for (const id of [...made].reverse()) {
      if (id.startsWith('snap-')) await d.client.deleteSnapshot({ snapshot_id: id });
      else await d.client.deleteVolume({ volume_id: id });
    }
    assert.deepEqual(await images(), []);
  });

  it('capacity is Ceph\'s max_avail for the pool, its replication and quota included', async () => {
    // A second OSD, and a Ceph pool kept in two copies on it (active+clean: both copies exist).
    await ceph.addOsd();
    await ceph.ceph('osd', 'pool', 'create', 'rbd2', '8');
    await ceph.ceph('osd', 'pool', 'set', 'rbd2', 'size', '2');
    await ceph.rbd('pool', 'init', 'rbd2');
    const pool2 = await rbdPool(ceph, 'vpool-rbd-id2', 'rbd2');
    const id2 = await controllerIdentity(ceph, 'e2e2', 'rbd2');
    const d2 = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool2.name, '--hypervisor', 'hv-rbd', ...id2.flags] });
    try {
      const cap = async (drv: Driver) => Number((await drv.client.getCapacity({ volume_capabilities: [blockCap()], parameters: {} })).available_capacity);
      const maxAvail = async (name: string) => {
        const df = JSON.parse(await ceph.ceph('df', '--format', 'json')) as { pools: Array<{ name: string; stats: { max_avail: number } }> };
        return df.pools.find((p) => p.name === name)!.stats.max_avail;
      };
      await pollUntil(async () => ((await ceph.ceph('pg', 'stat')).match(/^\d+ pgs: \d+ active\+clean;/) ? true : undefined), 120_000, async () => `not clean: ${await ceph.ceph('pg', 'stat')}`);
      const [one, two] = [await cap(d), await cap(d2)];
      // max_avail moves as the OSDs write their own metadata: within 2%.
      const [m1, m2] = [await maxAvail('rbd'), await maxAvail('rbd2')];
      assert.ok(Math.abs(one - m1) < m1 * 0.02, `rbd: ${one} is ceph df's ${m1}`);
      assert.ok(Math.abs(two - m2) < m2 * 0.02, `rbd2: ${two} is ceph df's ${m2}`);
      assert.ok(two < one * 0.6, `two copies leave about half the room (${two} against ${one})`);
      // libvirt's own figure for the same pool is the cluster's raw free space, about twice too much.
      const libvirtAvail = Number(/Available:\s+(\d+)/.exec(await virsh('pool-info', '--bytes', pool2.name))?.[1]);
      assert.ok(libvirtAvail > two * 1.8, `libvirt says ${libvirtAvail} against ${two}`);
      // A byte quota bounds the pool below what its OSDs could take (max_avail does not count it).
      await ceph.ceph('osd', 'pool', 'set-quota', 'rbd2', 'max_bytes', String(256 * MiB));
      const quoted = await pollUntil(async () => ((await cap(d2)) <= 256 * MiB ? cap(d2) : undefined), 30_000, async () => `capacity ${await cap(d2)} over the quota`);
      assert.ok(quoted > 200 * MiB, `the quota less what the pool stores: ${quoted}`);
      assert.equal(await codeOf(d2.client.createVolume({ name: 'pvc-id-over-quota', capacity_range: { required_bytes: String(512 * MiB) }, volume_capabilities: [blockCap()], parameters: {} })), 'RESOURCE_EXHAUSTED');
    } finally {
      await finish(d2);
      await pool2.remove();
    }
  });

  it('a snapshot of ours whose clone is gone (a crash between them) is removed at the next start', async () => {
    const a = await mkVol('pvc-id-orphan');
    const aImage = await imageOf(a.volume_id);
    // What a crash between the snapshot and its clone leaves: a protected snapshot named for a clone that does not exist.
    await ceph.rbd('snap', 'create', `rbd/${aImage}@to.vol-gone-0123456789abcdef.raw`);
    await ceph.rbd('snap', 'protect', `rbd/${aImage}@to.vol-gone-0123456789abcdef.raw`);
    // And ones that are not the driver's: never touched (another name on our image; our prefix on someone else's image).
    await ceph.rbd('snap', 'create', `rbd/${aImage}@admins-own`);
    await ceph.rbd('create', '--size', '4M', 'rbd/someones-image');
    await ceph.rbd('snap', 'create', 'rbd/someones-image@to.x');
    await d.stop();
    d = await start();
    await pollUntil(async () => (await snapsOf(aImage)).length === 1 || undefined, 60_000, async () => `the orphan snapshot stays: ${(await snapsOf(aImage)).join(', ')}`);
    assert.deepEqual(await snapsOf(aImage), ['admins-own']);
    assert.deepEqual(await snapsOf('someones-image'), ['to.x']);
    await ceph.rbd('snap', 'rm', `rbd/${aImage}@admins-own`);
    await ceph.rbd('snap', 'rm', 'rbd/someones-image@to.x');
    await ceph.rbd('rm', '--no-progress', 'rbd/someones-image');
    await d.client.deleteVolume({ volume_id: a.volume_id });
  });

  it('refusals: a user Ceph does not know stops the start with the reason; a hung monitor fails a call UNAVAILABLE and leaves nothing', async () => {
    const bad = await startDriver({ args: args(['--ceph-user', 'nobody-here']) }).then(
      () => null,
      (e: Error) => e,
    );
    assert.ok(bad, 'the driver did not start');
    assert.match(bad.message, /Ceph refuses the controller's user/);

    const a = await mkVol('pvc-id-hung');
    const before = await images();
    await ceph.signal('mon.a', 'SIGSTOP');
    let code: string;
    const started = Date.now();
    try {
      code = await codeOf(d.client.createSnapshot({ name: 'snap-id-hung', source_volume_id: a.volume_id, parameters: {}, secrets: {} }));
    } finally {
      await ceph.signal('mon.a', 'SIGCONT');
    }
    assert.equal(code, 'UNAVAILABLE', `after ${Date.now() - started} ms`);
    await pollUntil(async () => (await images()).length === before.length || undefined, 60_000, async () => `left: ${(await images()).join(', ')}`);
    assert.deepEqual((await images()).sort(), before.sort());
    assert.deepEqual(await snapsOf(await imageOf(a.volume_id)), [], 'no snapshot left on the source');
    const s = await mkSnap('snap-id-hung', a.volume_id);
    await d.client.deleteSnapshot({ snapshot_id: s.snapshot_id });
    await d.client.deleteVolume({ volume_id: a.volume_id });
  });

  it('attaches an image libvirt\'s pool never listed to a running domain, which reads it', async () => {
    domDir = await mkdtemp('/var/tmp/vpool-rbd-id-doms-');
    const word = `w${randomBytes(3).toString('hex')}`;
    const dom = await testDomain(`vpool-rbd-id-${randomBytes(3).toString('hex')}`, domDir, true, { stamp: `0:${word}` });
    doms.push(dom);
    const vol = await mkVol('pvc-id-attach');
    await virsh('pool-refresh', pool.name).catch(() => undefined);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
    // Made after libvirt last read the pool: libvirt's pool does not list it.
    const v2 = await mkVol('pvc-id-attach-2');
    assert.doesNotMatch(await virsh('vol-list', pool.name), new RegExp(v2.volume_id), 'libvirt has not seen it');
    await d.client.controllerPublishVolume({ volume_id: v2.volume_id, node_id: dom.uuid, volume_capability: blockCap(), readonly: false, secrets: {}, volume_context: {} });
    const serial = `vp-${v2.volume_id.slice(-16)}`;
    const seen = guestDisk(await dom.waitDisks((l) => guestDisk(l, serial)?.words[0] === word, 120_000), serial)!;
    assert.equal(seen.sectors, (32 * MiB) / 512, 'the guest sees the whole image');
    // Its word, written through librbd, is in Ceph: a snapshot of the attached image holds it, and so does its restore.
    const s = await mkSnap('snap-id-attach', v2.volume_id);
    const r = await mkVol('pvc-id-attach-r', fromSnap(s.snapshot_id));
    await d.client.controllerPublishVolume({ volume_id: r.volume_id, node_id: dom.uuid, volume_capability: blockCap(), readonly: false, secrets: {}, volume_context: {} });
    const rSerial = `vp-${r.volume_id.slice(-16)}`;
    const restored = guestDisk(await dom.waitDisks((l) => (guestDisk(l, rSerial)?.words.length ?? 0) === 4, 120_000), rSerial)!;
    assert.equal(restored.words[0], word);
    for (const id of [r.volume_id, v2.volume_id]) await d.client.controllerUnpublishVolume({ volume_id: id, node_id: dom.uuid, secrets: {} });
    await d.client.deleteVolume({ volume_id: r.volume_id });
    await d.client.deleteSnapshot({ snapshot_id: s.snapshot_id });
    await d.client.deleteVolume({ volume_id: v2.volume_id });
    assert.deepEqual(await images(), []);
  });
});
