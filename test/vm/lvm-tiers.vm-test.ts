// Runs INSIDE the QEMU VM (test/vm/vm-run.sh): Debian's kernel with device-mapper, whose mirror target
// pvmove needs. Started by test/e2e/lvm-tiers-vm.test.ts; not picked up on the host directly.
import assert from 'node:assert/strict';
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { openSync, readSync, closeSync, realpathSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { blockCap } from '../helpers/csi.js';
import { BIN, codeOf, finish, MiB, startDriver, type Driver } from '../helpers/driver.js';
import { pollUntil } from '../helpers/libvirt.js';
import { reconcileTiers } from '../../src/cluster/pool-tiers.js';
import type { PoolSettings } from '../../src/cluster/volume-pool.js';
import { LvmCli } from '../../src/pool/lvm/lvm-cli.js';

const VG = 'tierpool';
// The harness's blank disks by their serials (lvm reports them by their kernel names).
const [SLOW, FAST1, FAST2] = ['data0', 'data1', 'data2'].map((s) => realpathSync(`/dev/disk/by-id/virtio-${s}`));
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const lvsJson = (fields: string, extra: string[] = []) =>
  (JSON.parse(sh('lvs', ['-a', '--reportformat', 'json', '-o', fields, ...extra, VG])) as { report: Array<{ lv?: Array<Record<string, string>>; seg?: Array<Record<string, string>> }> }).report.flatMap((r) => [...(r.lv ?? []), ...(r.seg ?? [])]);
/** The PVs an LV's extents are on (hidden LVs by their name without brackets). */
const pvsOf = (lv: string) => [...new Set(lvsJson('lv_name,devices', ['--segments']).filter((r) => r.lv_name!.replace(/^\[|\]$/g, '') === lv).flatMap((r) => r.devices!.split(',')).map((d) => d.replace(/\(\d+\)$/, '')).filter(Boolean))].sort();
const moving = () => lvsJson('lv_name').some((r) => /pvmove\d+/.test(r.lv_name!));
const hashOf = (dev: string, bytes: number) => {
  const fd = openSync(dev, 'r');
  const h = createHash('sha256');
  const buf = Buffer.alloc(MiB);
  for (let off = 0; off < bytes; off += MiB) h.update(buf.subarray(0, readSync(fd, buf, 0, MiB, off)));
  closeSync(fd);
  return h.digest('hex');
};
/** fio writing the LV past its first 64 MiB for a while, direct: its exit and its error count tell of any I/O error. */
const fioWriting = (dev: string, seconds: number) => {
  const p = spawn('fio', ['--name=w', `--filename=${dev}`, '--direct=1', '--ioengine=libaio', '--iodepth=8', '--rw=randwrite', '--bs=64k', '--offset=64M', '--time_based', `--runtime=${seconds}`, '--output-format=json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  p.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  p.stderr!.on('data', (b: Buffer) => (out += b.toString()));
  return {
    proc: p as ChildProcess,
    done: new Promise<{ code: number | null; errors: number; writes: number }>((resolve) =>
      p.on('exit', (code) => {
        const json = out.slice(out.indexOf('{'));
        const job = (JSON.parse(json) as { jobs: Array<{ error: number; write: { total_ios: number } }> }).jobs[0]!;
        resolve({ code, errors: job.error, writes: job.write.total_ios });
      }),
    ),
  };
};

/**
 * Stops the plugin's pvmove between two of its polls: stopped, then let go and stopped again until the
 * VG's lock file (lvm's file locking, /run/lock/lvm/V_<vg>) can be taken, which it cannot while pvmove
 * holds it for a poll.
 */
async function stopPvmoveBetweenPolls(): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const pid = Number(execFileSync('pgrep', ['-o', '-x', 'pvmove'], { encoding: 'utf8' }).trim());
    process.kill(pid, 'SIGSTOP');
    if (spawnSync('flock', ['-n', '-x', `/run/lock/lvm/V_${VG}`, 'true']).status === 0) return pid;
    try {
      process.kill(pid, 'SIGCONT');
    } catch {
      // it ended meanwhile: the next one is looked for
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('pvmove never stopped outside a poll');
}

/** A call's gRPC code, or a failure after `ms` (a call waiting on a lock the stopped pvmove holds would otherwise hang the suite). */
const codeWithin = <T,>(call: Promise<T>, ms = 60_000): Promise<string> =>
  Promise.race([codeOf(call), new Promise<string>((_, reject) => setTimeout(() => reject(new Error(`no answer in ${ms} ms: waiting on the held move's lock?`)), ms).unref())]);

describe('lvm tiers: a live volume\'s extents moved to its class\'s tier by pvmove while fio writes to it', { timeout: 1_440_000 }, () => {
  let d: Driver;
  before(async () => {
    execFileSync('modprobe', ['-a', 'dm_thin_pool', 'dm_mirror']);
    sh(BIN, ['pool', 'init', '--vg', VG, '--tier', 'slow', '--thin-pool', 'thin', '--thin-size', '40%', SLOW]);
    sh(BIN, ['pool', 'extend', '--vg', VG, '--tier', 'fast', FAST1, FAST2]);
    d = await startDriver({ args: ['--backend', 'lvm', '--vg', VG, '--log-level', 'info'] });
  });
  after(async () => {
    // The plugin's account of the moves, and LVM's and device-mapper's state, for a failure's report.
    for (const l of d?.logs ?? []) if (/move|pvmove|"level":"(warn|error)"/.test(l)) console.log(`driver: ${l.slice(0, 600)}`);
    console.log(sh('lvs', ['-a', '-o', 'lv_name,lv_attr,devices,copy_percent', VG]));
    console.log(execFileSync('dmsetup', ['info', '-c'], { encoding: 'utf8' }));
    // A pvmove a failed test left stopped is let go, and the pool removed, before the plugin's own account is asserted.
    spawnSync('pkill', ['-CONT', '-x', 'pvmove']);
    const finished = d ? await finish(d) : [];
    if (moving()) spawnSync('pvmove', ['--abort'], { stdio: 'ignore' });
    spawnSync(BIN, ['pool', 'destroy', '--vg', VG, '--force'], { stdio: 'inherit' });
    assert.deepEqual(finished, []);
  });

  const modify = (id: string, p: Record<string, string>) => d.client.controllerModifyVolume({ volume_id: id, secrets: {}, mutable_parameters: p });
  const activate = (id: string) => {
    sh('lvchange', ['-ay', '-K', `${VG}/${id}`]);
    return `/dev/${VG}/${id}`;
  };
  const stamp = (dev: string) => {
    sh('dd', ['if=/dev/urandom', `of=${dev}`, 'bs=1M', 'count=64', 'oflag=direct', 'status=none']);
    return hashOf(dev, 64 * MiB);
  };

  it('thick: made on its StorageClass\'s tier, moved live to another by a class change (no I/O error, the data unchanged, every extent on the fast PVs); a tier without room refused and nothing recorded', async () => {
    const vol = (await d.client.createVolume({ name: 'pvc-thick', capacity_range: { required_bytes: String(256 * MiB) }, volume_capabilities: [blockCap()], parameters: { type: 'thick', tier: 'slow' } })).volume!;
    assert.deepEqual(pvsOf(vol.volume_id), [SLOW]);
    const dev = activate(vol.volume_id);
    const before = stamp(dev);
    const fio = fioWriting(dev, 40);
    const started = Date.now();
    await modify(vol.volume_id, { tier: 'fast' });
    console.log(`ControllerModifyVolume returned in ${Date.now() - started} ms; the move goes on in the background`);
    await pollUntil(async () => (!moving() && pvsOf(vol.volume_id).every((p) => p === FAST1 || p === FAST2) ? true : undefined), 300_000, async () => `not moved: ${pvsOf(vol.volume_id).join(', ')}`);
    console.log(`thick 256 MiB moved to tier fast in ${((Date.now() - started) / 1000).toFixed(1)} s while fio wrote`);
    // The plugin's pvmove returns once LVM has switched the LV over (which the poll above may see first).
    await pollUntil(async () => (d.logs.some((l) => l.includes('moved a volume to its tier')) ? true : undefined), 60_000, async () => 'the plugin never said it moved the volume');
    const result = await fio.done;
    assert.deepEqual([result.code, result.errors], [0, 0], 'fio saw no I/O error');
    assert.ok(result.writes > 100, `fio wrote during the move (${result.writes} writes)`);
    assert.equal(hashOf(dev, 64 * MiB), before, 'the data written before the move is unchanged');
    assert.match(sh('lvs', ['--noheadings', '-o', 'lv_tags', `${VG}/${vol.volume_id}`]), /vpool\.p\.tier=fast/);

    // No room on the tier: refused, nothing recorded, nothing moved.
    const filler = (await d.client.createVolume({ name: 'pvc-filler', capacity_range: { required_bytes: String(1600 * MiB) }, volume_capabilities: [blockCap()], parameters: { type: 'thick', tier: 'fast' } })).volume!;
    const big = (await d.client.createVolume({ name: 'pvc-big', capacity_range: { required_bytes: String(400 * MiB) }, volume_capabilities: [blockCap()], parameters: { type: 'thick', tier: 'slow' } })).volume!;
    assert.equal(await codeOf(modify(big.volume_id, { tier: 'fast' })), 'RESOURCE_EXHAUSTED');
    assert.equal(await codeOf(modify(big.volume_id, { tier: 'nvme' })), 'INVALID_ARGUMENT');
    assert.match(sh('lvs', ['--noheadings', '-o', 'lv_tags', `${VG}/${big.volume_id}`]), /vpool\.p\.tier=slow/);
    assert.deepEqual(pvsOf(big.volume_id), [SLOW]);
    sh('lvchange', ['-an', `${VG}/${vol.volume_id}`]);
    for (const v of [vol, filler, big]) await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('thin: its thin pool moved whole; while it moves another tier is ABORTED and a snapshot or delete FAILED_PRECONDITION; a kill -9 of the plugin and of pvmove mid-move, and the restarted plugin finishes it (LVM\'s own record of the move), the data unchanged', async () => {
    const vol = (await d.client.createVolume({ name: 'pvc-thin', capacity_range: { required_bytes: String(128 * MiB) }, volume_capabilities: [blockCap()], parameters: { type: 'thin' } })).volume!;
    assert.deepEqual(pvsOf('thin_tdata'), [SLOW]);
    const dev = activate(vol.volume_id);
    const before = stamp(dev);
    const fio = fioWriting(dev, 60);
    await modify(vol.volume_id, { tier: 'fast' });
    await pollUntil(async () => (moving() ? true : undefined), 120_000, async () => 'no pvmove began');
    // Held mid-move for as long as the refusals take: the plugin's pvmove stopped between two of its
    // polls (never holding the VG's lock, which every lvm command of the plugin would wait on).
    await stopPvmoveBetweenPolls();
    assert.equal(await codeWithin(modify(vol.volume_id, { tier: 'slow' })), 'ABORTED', 'another tier while it moves');
    assert.equal(await codeWithin(modify(vol.volume_id, { tier: 'fast' })), 'OK', 'the same class again (the resizer\'s retry) while it moves');
    assert.equal(await codeWithin(d.client.createSnapshot({ source_volume_id: vol.volume_id, name: 'snap-while-moving', secrets: {}, parameters: {} })), 'FAILED_PRECONDITION');
    assert.equal(await codeWithin(d.client.deleteVolume({ volume_id: vol.volume_id })), 'FAILED_PRECONDITION');
    assert.match(sh('lvs', ['--noheadings', '-o', 'lv_tags', `${VG}/${vol.volume_id}`]), /vpool\.p\.tier=fast/, 'the refused change recorded nothing');
    // A VolumePool whose groups now name the slow disk fast (no volume of another tier on it): no PV is
    // re-tagged while the move is under way.
    const lvm = new LvmCli({ activation: true });
    const notes: string[] = [];
    const settings = { tiers: new Map(['data0', 'data1', 'data2'].map((s) => [`/dev/disk/by-id/virtio-${s}`, 'fast'])) } as PoolSettings;
    const tagsBefore = sh('pvs', ['--noheadings', '-o', 'pv_name,pv_tags']);
    const state = await lvm.state(VG, { allPvs: true }); // what the VolumePool agent reads (lvm fullreport: the move's LV is hidden there)
    const retagged = await reconcileTiers(lvm, {
      settings,
      vg: VG,
      candidates: [...settings.tiers.keys()].map((spec) => ({ spec, path: spec })),
      usable: [SLOW, FAST1, FAST2].map((p) => ({ path: p })),
      pvs: state.pvs,
      lvs: state.lvs,
      note: (type, reason, message) => notes.push(`${type} ${reason}: ${message}`),
    });
    assert.equal(retagged, false);
    assert.match(notes.join('\n'), new RegExp(`Warning TierChangeBlocked: ${SLOW}: tiers are not changed while a volume is being moved between tiers \\(pvmove\\d+\\)`));
    assert.equal(sh('pvs', ['--noheadings', '-o', 'pv_name,pv_tags']), tagsBefore, 'no PV re-tagged');
    // A crash of the node plugin's container: the plugin and the pvmove it runs die at once (a stopped process too).
    await d.stop('SIGKILL');
    execFileSync('pkill', ['-9', '-x', 'pvmove']);
    assert.ok(moving(), 'the move was cut short: LVM still records it');
    d = await d.restart();
    await pollUntil(async () => (!moving() && [...pvsOf('thin_tdata'), ...pvsOf('thin_tmeta')].every((p) => p === FAST1 || p === FAST2) ? true : undefined), 400_000, async () => `not moved: tdata ${pvsOf('thin_tdata').join(', ')}, tmeta ${pvsOf('thin_tmeta').join(', ')}`);
    assert.ok(d.logs.some((l) => l.includes('resuming a move of extents a restart cut short')), 'the restarted plugin resumed it');
    const result = await fio.done;
    assert.deepEqual([result.code, result.errors], [0, 0], 'fio saw no I/O error across the kill');
    assert.equal(hashOf(dev, 64 * MiB), before, 'the data is unchanged');
    sh('lvchange', ['-an', `${VG}/${vol.volume_id}`]);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  });
});
