// Runs INSIDE the QEMU VM (test/vm/vm-run.sh), whose Debian kernel has device-mapper: the whole
// lvm data path for real. Started by test/e2e/lvm-vm.test.ts; not picked up on the host directly.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { statfs } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap, createVolume, mountCap, paths, stageAndPublish, unpublishAndUnstage } from '../helpers/csi.js';
import { sha256, sumAt, writeAt } from '../helpers/data.js';
import { BIN, finish, launchDriver, MiB, pattern, startDriver, type Driver } from '../helpers/driver.js';
import { httpBase, samples } from '../helpers/metrics.js';
import { readMounts } from '../../src/host/mounts.js';
import { openBackend } from '../../src/cli/backends.js';
import { poolContract } from '../helpers/pool-contract.js';

const VG = 'vmpool';
const DISKS = ['/dev/disk/by-id/virtio-data0', '/dev/disk/by-id/virtio-data1'];
const sh = (cmd: string, args: string[]) => {
  try {
    return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(err as { stderr?: string }).stderr ?? err}`);
  }
};
const lvNames = () => sh('lvs', ['--noheadings', '-o', 'lv_name', VG]).split('\n').map((l) => l.trim()).filter(Boolean).sort();
const fsBytes = async (dir: string) => {
  const s = await statfs(dir);
  return s.blocks * s.bsize;
};

describe('lvm data path on real device-mapper', { timeout: 1_140_000 }, () => {
  let d: Driver;
  before(async () => {
    execFileSync('modprobe', ['-a', 'dm_thin_pool', 'dm_snapshot']);
    const out = sh(BIN, ['pool', 'init', '--vg', VG, '--thin-pool', 'thin', '--thin-size', '40%', ...DISKS]);
    assert.match(out, /created on .* with thin pool thin/);
    d = await startDriver({ args: ['--backend', 'lvm', '--vg', VG, '--overprovision-ratio', '3', '--metrics-address', '127.0.0.1:0'] });
  });
  after(async () => {
    if (!d) return;
    // The driver's own account of anything that went wrong, for the report.
    for (const l of d.logs) if (/"level":"(error|warn)"/.test(l)) console.log(`driver: ${l.slice(0, 1500)}`);
    assert.deepEqual(await finish(d), []);
    assert.deepEqual(lvNames(), ['thin'], 'only the thin pool is left');
    assert.deepEqual((await readMounts()).filter((m) => m.source.includes(VG)), []);
    assert.deepEqual(sh('dmsetup', ['ls']).split('\n').filter((l) => l.startsWith(`${VG}-vol`) || l.startsWith(`${VG}-snap`)), []);
    sh(BIN, ['pool', 'destroy', '--vg', VG]);
  });

  for (const type of ['thin', 'thick'] as const) {
    for (const fsType of ['ext4', 'xfs'] as const) {
      // Snapshot, restore and clone are shown for thin (both filesystems) and thick ext4; thick xfs
      // shows the stage/expand path only, to keep the VM suite within its time budget under TCG.
      const full = !(type === 'thick' && fsType === 'xfs');
      it(`${type} ${fsType}: stage, publish, write${full ? ', snapshot, restore, clone' : ''}, online expand, delete`, async () => {
        const size = fsType === 'xfs' ? 320 * MiB : 64 * MiB;
        const cap = mountCap(fsType);
        const params = { type, fsType };
        const vol = await createVolume(d, `${type}-${fsType}`, size, cap, { parameters: params });
        assert.equal(vol.capacity_bytes, String(size));
        const p = await paths(d, `${type}-${fsType}`);
        await stageAndPublish(d, vol.volume_id, p, cap);
        const file = path.join(p.target, 'pattern.bin');
        const first = pattern(`${type}-${fsType}-1`, 2 * MiB);
        await writeAt(file, 0, first, 'w');
        if (!full) {
          await growAndCheck(d, vol.volume_id, p.target, size, file, sha256(first));
          await unpublishAndUnstage(d, vol.volume_id, p);
          await d.client.deleteVolume({ volume_id: vol.volume_id });
          return;
        }
        const snap = (await d.client.createSnapshot({ name: `s-${type}-${fsType}`, source_volume_id: vol.volume_id, parameters: type === 'thick' ? { snapshotReserve: '50%' } : {} })).snapshot!;
        assert.equal(snap.ready_to_use, true);
        const second = pattern(`${type}-${fsType}-2`, 2 * MiB);
        await writeAt(file, 0, second, 'w');

        const restored = await createVolume(d, `r-${type}-${fsType}`, size, cap, { parameters: params, source: { snapshot: snap.snapshot_id } });
        const rp = await paths(d, `r-${type}-${fsType}`);
        await stageAndPublish(d, restored.volume_id, rp, cap);
        assert.equal(await sumAt(path.join(rp.target, 'pattern.bin'), 0, 2 * MiB), sha256(first), 'restore = the snapshot-time data');
        await unpublishAndUnstage(d, restored.volume_id, rp);

        const clone = await createVolume(d, `c-${type}-${fsType}`, size + 64 * MiB, cap, { parameters: params, source: { volume: vol.volume_id } });
        const cp = await paths(d, `c-${type}-${fsType}`);
        await stageAndPublish(d, clone.volume_id, cp, cap);
        assert.equal(await sumAt(path.join(cp.target, 'pattern.bin'), 0, 2 * MiB), sha256(second), 'clone = the source now');
        await unpublishAndUnstage(d, clone.volume_id, cp);

        if (type === 'thick') {
          // LVM cannot grow the active origin of a COW snapshot: a clear refusal, then growth once it is gone.
          const expand = d.client.nodeExpandVolume({ volume_id: vol.volume_id, volume_path: p.target, capacity_range: { required_bytes: String(size + 128 * MiB) } });
          await assert.rejects(expand, /copy-on-write snapshots .* delete them first/);
          assert.equal((await d.client.deleteVolume({ volume_id: vol.volume_id }).catch((e: { code: number }) => e.code)), 9, 'nor is a volume with COW snapshots deleted');
          await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
        }
        await growAndCheck(d, vol.volume_id, p.target, size, file, sha256(second));
        const stats = await d.client.nodeGetVolumeStats({ volume_id: vol.volume_id, volume_path: p.target });
        assert.equal(stats.volume_condition?.abnormal, false);

        await unpublishAndUnstage(d, vol.volume_id, p);
        assert.ok(!lvActive(vol.volume_id), 'unstage deactivates the LV');
        await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
        for (const id of [vol.volume_id, restored.volume_id, clone.volume_id]) await d.client.deleteVolume({ volume_id: id });
      });
    }
  }

  it('raw block: publish the LV as a device file, raw write and read, read-only view, restage', async () => {
    const cap = blockCap();
    const vol = await createVolume(d, 'vm-disk', 64 * MiB, cap, { parameters: { type: 'thin' } });
    const p = await paths(d, 'vm-disk');
    await stageAndPublish(d, vol.volume_id, p, cap);
    const data = pattern('raw', MiB);
    await writeAt(p.target, 7 * MiB, data);
    await unpublishAndUnstage(d, vol.volume_id, p);
    await stageAndPublish(d, vol.volume_id, p, cap);
    assert.equal(await sumAt(p.target, 7 * MiB, MiB), sha256(data));
    const ro = path.join(d.mntDir, 'pods', 'vm-disk', 'ro');
    await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: ro, volume_capability: cap, readonly: true });
    await assert.rejects(writeAt(ro, 0, Buffer.alloc(4096)));
    assert.equal(await sumAt(ro, 7 * MiB, MiB), sha256(data));
    await d.client.nodeUnpublishVolume({ volume_id: vol.volume_id, target_path: ro });
    const grown = await d.client.nodeExpandVolume({ volume_id: vol.volume_id, volume_path: p.target, capacity_range: { required_bytes: String(96 * MiB) } });
    assert.equal(grown.capacity_bytes, String(96 * MiB));
    await unpublishAndUnstage(d, vol.volume_id, p);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  });

  it('a clone interrupted half-way (marked incomplete) is removed and redone by the retry', async () => {
    const src = await createVolume(d, 'src-thick', 32 * MiB, blockCap(), { parameters: { type: 'thick' } });
    const p = await paths(d, 'src-thick');
    await stageAndPublish(d, src.volume_id, p, blockCap());
    await writeAt(p.target, 0, pattern('interrupted', MiB));
    await unpublishAndUnstage(d, src.volume_id, p);
    // What a driver killed during the copy leaves: the new LV, tagged incomplete, partly written.
    const id = (await import('../../src/ids.js')).idFor('vol', 'half');
    sh('lvcreate', ['-y', '-L', '32m', '-n', id, '--addtag', 'vpool.kind=vol', '--addtag', 'vpool.name=half', '--addtag', 'vpool.incomplete', VG]);
    assert.equal((await d.client.listVolumes({})).entries.some((e) => e.volume?.volume_id === id), false, 'an incomplete volume is not listed');
    const clone = await createVolume(d, 'half', 32 * MiB, blockCap(), { parameters: { type: 'thick' }, source: { volume: src.volume_id } });
    assert.equal(clone.volume_id, id);
    const cp = await paths(d, 'half');
    await stageAndPublish(d, id, cp, blockCap());
    assert.equal(await sumAt(cp.target, 0, MiB), sha256(pattern('interrupted', MiB)));
    await unpublishAndUnstage(d, id, cp);
    for (const v of [id, src.volume_id]) await d.client.deleteVolume({ volume_id: v });
  });

  // MODEL of a node-plugin restart (k8s-contracts.md): the old driver ran in a mount namespace of
  // its own with the kubelet directory shared (Bidirectional); it is killed, and this driver, in
  // another namespace, finds the LVs' mounts and device binds by device number (the kernel shows
  // /dev/mapper/<vg>-<lv> or /dev/dm-N where the old one used /dev/<vg>/<lv>) and finishes the lifecycle.
  it('restart into another mount namespace: delete refused while attached, then stats, unpublish, unstage, delete', async () => {
    execFileSync('mount', ['--bind', d.mntDir, d.mntDir]);
    execFileSync('mount', ['--make-shared', d.mntDir]);
    try {
      const socket = path.join(d.dir, 'old.sock');
      const old = await launchDriver(socket, ['serve', '--endpoint', `unix://${socket}`, '--backend', 'lvm', '--vg', VG, '--allowed-root', d.mntDir, '--node-id', 'test-node'], {
        wrap: ['unshare', '--mount', '--propagation', 'unchanged'],
      });
      const vols = [
        { name: 'ns-fs', cap: mountCap('ext4'), id: '', p: await paths(d, 'ns-fs') },
        { name: 'ns-block', cap: blockCap(), id: '', p: await paths(d, 'ns-block') },
      ];
      for (const v of vols) {
        v.id = (await old.client.createVolume({ name: v.name, capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [v.cap], parameters: { type: 'thin' } })).volume!.volume_id;
        await old.client.nodeStageVolume({ volume_id: v.id, staging_target_path: v.p.staging, volume_capability: v.cap });
        await old.client.nodePublishVolume({ volume_id: v.id, staging_target_path: v.p.staging, target_path: v.p.target, volume_capability: v.cap });
      }
      await writeAt(path.join(vols[0].p.target, 'f'), 0, pattern('ns', MiB), 'w');
      old.client.close();
      old.proc.kill('SIGKILL');
      await old.exited;

      for (const v of vols) {
        const err = await d.client.deleteVolume({ volume_id: v.id }).then(() => null, (e: Error) => e);
        assert.match(String(err?.message), /open|in use/, `${v.name}: DeleteVolume refuses an attached volume`);
        assert.ok(lvNames().includes(v.id), `${v.name}: the LV is still there`);
        const stats = await d.client.nodeGetVolumeStats({ volume_id: v.id, volume_path: v.p.target });
        assert.equal(stats.volume_condition?.abnormal, false);
      }
      assert.equal(await sumAt(path.join(vols[0].p.target, 'f'), 0, MiB), sha256(pattern('ns', MiB)));
      for (const v of vols) {
        await unpublishAndUnstage(d, v.id, v.p);
        assert.equal(lvActive(v.id), false, `${v.name}: unstage deactivated the LV`);
        await d.client.deleteVolume({ volume_id: v.id });
      }
    } finally {
      execFileSync('umount', ['-l', d.mntDir]);
    }
  });

  // The backend contract (test/helpers/pool-contract.ts) where lvm can do everything: thin and thick.
  for (const type of ['thin', 'thick'] as const) {
    describe(`backend contract: lvm ${type} with device-mapper`, () => {
      poolContract(async () => {
        const opened = await openBackend({ kind: 'lvm', vg: VG, reserveBytes: 0, overprovisionRatio: 1 }, 'all');
        return {
          backend: opened.backend!,
          parameters: { type },
          copies: true,
          countsPromisedSpace: true,
          close: async () => undefined,
          // Thin volumes made from snapshots may be left inactive: the node activates on stage, the contract here.
          dataPath: async (id: string) => {
            sh('lvchange', ['-ay', '-K', `${VG}/${id}`]);
            return `/dev/${VG}/${id}`;
          },
        };
      });
    });
  }

  // Last: growing the thin pool takes all the VG's free space, which thick volumes need.
  it('striped thick volumes, thin capacity accounting, and pool status from the same data', async () => {
    const striped = await createVolume(d, 'striped', 64 * MiB, blockCap(), { parameters: { type: 'thick', stripes: '2' } });
    assert.equal(sh('lvs', ['--noheadings', '-o', 'stripes', `${VG}/${striped.volume_id}`]).trim(), '2');
    const thinCap = Number((await d.client.getCapacity({ parameters: { type: 'thin' } })).available_capacity);
    const big = await createVolume(d, 'thin-big', 1024 * MiB, blockCap(), { parameters: { type: 'thin' } });
    const after = Number((await d.client.getCapacity({ parameters: { type: 'thin' } })).available_capacity);
    assert.equal(thinCap - after, 1024 * MiB, 'a thin volume counts its full virtual size (overprovision ratio 1)');
    type Status = { volumes: unknown[]; devices: unknown[]; thinPools: Array<{ name: string; sizeBytes: number; dataPercent: number }> };
    const status = JSON.parse(sh(BIN, ['pool', 'status', '--vg', VG])) as Status;
    assert.equal(status.volumes.length, 2);
    assert.equal(status.thinPools[0].name, 'thin');
    // The thin pool's use reaches Prometheus as lvs reports it.
    const metrics = await (await fetch(`${httpBase(d)}/metrics`)).text();
    assert.equal(samples(metrics, 'vpool_csi_thin_pool_data_percent').get('{thin_pool="thin"}'), status.thinPools[0].dataPercent);
    assert.ok((samples(metrics, 'vpool_csi_thin_pool_metadata_percent').get('{thin_pool="thin"}') ?? 0) > 0);
    assert.equal(samples(metrics, 'vpool_csi_pool_volumes').get('{backend="lvm"}'), 2);
    // A third disk joins the pool and the thin pool takes the new space.
    assert.match(sh(BIN, ['pool', 'extend', '--vg', VG, '--grow-thin-pool', '/dev/disk/by-id/virtio-data2']), /extended with/);
    const grown = JSON.parse(sh(BIN, ['pool', 'status', '--vg', VG])) as Status;
    assert.equal(grown.devices.length, 3);
    assert.ok(grown.thinPools[0].sizeBytes > status.thinPools[0].sizeBytes + 900 * MiB, 'the thin pool grew by the new disk');
    for (const v of [striped, big]) await d.client.deleteVolume({ volume_id: v.volume_id });
  });
});

async function growAndCheck(d: Driver, id: string, target: string, size: number, file: string, sum: string): Promise<void> {
  const before = await fsBytes(target);
  const grown = await d.client.nodeExpandVolume({ volume_id: id, volume_path: target, capacity_range: { required_bytes: String(size + 128 * MiB) } });
  assert.equal(grown.capacity_bytes, String(size + 128 * MiB));
  const after = await fsBytes(target);
  assert.ok(after >= before + 112 * MiB, `online growth: ${before} -> ${after}`);
  assert.equal(await sumAt(file, 0, 2 * MiB), sum);
}

function lvActive(lv: string): boolean {
  return sh('lvs', ['--noheadings', '-o', 'lv_attr', `${VG}/${lv}`]).trim()[4] === 'a';
}

