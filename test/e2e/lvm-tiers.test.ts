import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import type { PoolStatus } from '../../src/pool/lvm/pool-admin.js';
import { LvmCli } from '../../src/pool/lvm/lvm-cli.js';
import { LvmPool } from '../../src/pool/lvm/lvm-pool.js';
import { blockCap } from '../helpers/csi.js';
import { BIN, codeOf, finish, MiB, needsRoot, startDriver } from '../helpers/driver.js';
import { forgetVg, loopDisks, poolCmd, uniqueVg, type LoopDisks } from '../helpers/lvm.js';
import { httpBase, samples } from '../helpers/metrics.js';

const execFileP = promisify(execFile);
const lvs = (field: string, lv: string) => execFileSync('lvs', ['--config', 'global{activation=0}', '--noheadings', '-o', field, lv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
const pvTags = (pv: string) => execFileSync('pvs', ['--config', 'global{activation=0}', '--noheadings', '-o', 'pv_tags', pv], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();

// Tiers on the lvm pool against real lvm2 on loop-device PVs (activation disabled: this kernel has no
// device-mapper, and placement is metadata): PVs tagged by pool init/extend --tier, thick volumes of a
// StorageClass's tier made and grown on its PVs alone, capacity per tier, and the refusals.
describe('lvm tiers on this host (activation disabled)', needsRoot(), () => {
  let disks: LoopDisks;
  const vg = uniqueVg('vtier');
  before(async () => {
    disks = await loopDisks(3, 256 * MiB);
  });
  after(async () => {
    await forgetVg(vg, disks.devices);
    await disks.release();
  });

  it('pool init and extend tag PVs with a tier; a device named again changes tier; bad names touch nothing', async () => {
    const [slow, fast1, fast2] = disks.devices;
    const init = await poolCmd('init', '--vg', vg, '--tier', 'slow', slow!);
    assert.equal(init.code, 0, init.stderr);
    assert.match(init.stdout, /\(tier slow\)/);
    const bad = await poolCmd('extend', '--vg', vg, '--tier', 'Fast!', fast1!);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /invalid tier "Fast!"/);
    assert.throws(() => execFileSync('pvs', ['--noheadings', '-o', 'vg_name', fast1!], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] }), /Failed to find physical volume/, 'the refused device was not made a PV');
    assert.equal((await poolCmd('extend', '--vg', vg, '--tier', 'slow', fast1!, fast2!)).code, 0);
    assert.equal((await poolCmd('extend', '--vg', vg, '--tier', 'fast', fast1!, fast2!)).code, 0, 'named again: their tier changes');
    assert.equal(pvTags(fast1!), 'vpool.tier=fast', 'one tier tag, the old one gone');
    assert.equal(pvTags(slow!), 'vpool.tier=slow');
    assert.equal((await poolCmd('extend', '--vg', vg, '--tier', 'fast', fast1!)).code, 0, 'idempotent');
    const status = JSON.parse((await poolCmd('status', '--vg', vg)).stdout) as PoolStatus;
    assert.deepEqual(Object.fromEntries(status.devices.map((d) => [d.name, d.tier])), { [slow!]: 'slow', [fast1!]: 'fast', [fast2!]: 'fast' });
    const wide = (await poolCmd('status', '--vg', vg, '-o', 'wide')).stdout;
    assert.ok(wide.includes(`${fast2} (fast, 256Mi,`) || wide.includes(`${fast2} (fast, 252Mi,`), wide);
  });

  it('a StorageClass\'s tier places thick volumes on its PVs alone, when made and when grown; capacity is the tier\'s; refusals make nothing', async () => {
    const [slow, fast1, fast2] = disks.devices;
    const d = await startDriver({ args: ['--backend', 'lvm', '--vg', vg, '--reserve', '0', '--metrics-address', '127.0.0.1:0'] });
    try {
      const create = (name: string, bytes: number, parameters: Record<string, string>) =>
        d.client.createVolume({ name, capacity_range: { required_bytes: String(bytes) }, volume_capabilities: [blockCap()], parameters });
      const capacity = async (parameters: Record<string, string>) => Number((await d.client.getCapacity({ volume_capabilities: [blockCap()], parameters })).available_capacity);
      const free = (pv: string) => Number(execFileSync('pvs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'pv_free', pv], { encoding: 'utf8' }).trim());
      assert.equal(await capacity({ type: 'thick', tier: 'fast' }), free(fast1!) + free(fast2!), 'the fast PVs\' free space');
      assert.equal(await capacity({ type: 'thick', tier: 'slow' }), free(slow!));
      assert.equal(await capacity({ type: 'thick' }), free(slow!) + free(fast1!) + free(fast2!), 'no tier: the whole VG');

      // 300 MiB: more than one fast PV holds, so it spans both, and neither extent is on the slow PV.
      const big = (await create('pvc-fast', 300 * MiB, { type: 'thick', tier: 'fast' })).volume!;
      const devicesOf = (id: string) => [...new Set(lvs('devices', `${vg}/${id}`).split(/[\s,]+/).filter(Boolean).map((s) => s.replace(/\(\d+\)$/, '')))].sort();
      assert.deepEqual(devicesOf(big.volume_id), [fast1!, fast2!].sort());
      assert.match(lvs('lv_tags', `${vg}/${big.volume_id}`), /vpool\.p\.tier=fast/, 'the tier is recorded with the volume');
      const small = (await create('pvc-slow', 40 * MiB, { type: 'thick', tier: 'slow' })).volume!;
      assert.deepEqual(devicesOf(small.volume_id), [slow!]);
      // Each volume's tier, for Prometheus.
      const series = samples(await (await fetch(`${httpBase(d)}/metrics`)).text(), 'vpool_csi_volume_tier');
      assert.deepEqual([...series].sort(), [[`{volume="${big.volume_id}",tier="fast"}`, 1], [`{volume="${small.volume_id}",tier="slow"}`, 1]].sort());
      // And for a person: the TIER column of the wide volume table.
      const table = (await execFileP(BIN, ['client', '--endpoint', d.endpoint, '-o', 'wide', 'list-volumes'])).stdout.split('\n');
      const header = table[0]!.split(/\s{2,}/);
      const tierOf = (id: string) => table.find((l) => l.startsWith(id))!.split(/\s{2,}/)[header.indexOf('TIER')];
      assert.deepEqual([tierOf(big.volume_id), tierOf(small.volume_id)], ['fast', 'slow']);

      // Grown on its tier alone, even where the VG has room elsewhere (the node plugin's pool grows it: NodeExpandVolume).
      const pool = await LvmPool.open(new LvmCli({ activation: false, vg }), { vg, reserveBytes: 0, overprovisionRatio: 1 }, { sweep: false });
      const slowLeft = free(slow!);
      await assert.rejects(pool.expandVolume(small.volume_id, 40 * MiB + slowLeft + 4 * MiB), /free on its tier|growing/);
      await pool.expandVolume(small.volume_id, 40 * MiB + slowLeft);
      assert.deepEqual(devicesOf(small.volume_id), [slow!], 'grown on the slow PV only');
      assert.equal(free(slow!), 0);
      const fastLeft = free(fast1!) + free(fast2!);

      // Refusals: the tier lacks room (the VG does not), a tier no PV has, a thin volume with a tier, a bad name.
      const before = lvs('lv_name', vg).split(/\s+/).sort();
      assert.equal(await codeOf(create('pvc-too-big', fastLeft + 8 * MiB, { type: 'thick', tier: 'fast' })), 'RESOURCE_EXHAUSTED');
      assert.equal(await codeOf(create('pvc-nvme', 8 * MiB, { type: 'thick', tier: 'nvme' })), 'INVALID_ARGUMENT');
      assert.match(String(await create('pvc-nvme', 8 * MiB, { type: 'thick', tier: 'nvme' }).catch((e: Error) => e.message)), /no PV of tier nvme \(its tiers: (slow, fast|fast, slow)/);
      assert.equal(await codeOf(create('pvc-thin', 8 * MiB, { type: 'thin', tier: 'fast' })), 'INVALID_ARGUMENT');
      assert.equal(await codeOf(create('pvc-bad', 8 * MiB, { type: 'thick', tier: '../x' })), 'INVALID_ARGUMENT');
      assert.equal(await codeOf(d.client.getCapacity({ volume_capabilities: [blockCap()], parameters: { type: 'thick', tier: 'nvme' } })), 'INVALID_ARGUMENT');
      assert.deepEqual(lvs('lv_name', vg).split(/\s+/).sort(), before, 'nothing made');

      // Moving a live volume to another tier is pvmove's (device-mapper's mirror target): refused here, nothing recorded (moved in the VM: test/vm/lvm-tiers.vm-test.ts).
      assert.equal(await codeOf(d.client.controllerModifyVolume({ volume_id: small.volume_id, secrets: {}, mutable_parameters: { tier: 'fast' } })), 'FAILED_PRECONDITION');
      assert.match(lvs('lv_tags', `${vg}/${small.volume_id}`), /vpool\.p\.tier=slow/);
      assert.equal(await codeOf(d.client.controllerModifyVolume({ volume_id: small.volume_id, secrets: {}, mutable_parameters: { tier: 'nvme' } })), 'INVALID_ARGUMENT');

      // A retry of the same request is the same volume; the same name on another tier is another request.
      assert.equal((await create('pvc-slow', 40 * MiB, { type: 'thick', tier: 'slow' })).volume!.volume_id, small.volume_id);
      assert.equal(await codeOf(create('pvc-slow', 40 * MiB, { type: 'thick', tier: 'fast' })), 'ALREADY_EXISTS');
      for (const v of [big, small]) await d.client.deleteVolume({ volume_id: v.volume_id });
    } finally {
      assert.deepEqual(await finish(d), []);
    }
  });
});
