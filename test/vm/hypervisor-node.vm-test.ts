// Runs INSIDE a libvirt domain (test/e2e/libvirt-node-vm.test.ts defines it): a node VM of
// hypervisor mode, booted from the VM harness's kernel and initramfs with the host's root over 9p.
// The host's controller hot-plugs volumes into this VM; here the node plugin finds them by serial,
// formats, mounts, publishes, writes, grows and unstages them. Host and guest take turns through
// files in /vmrun (the run directory shared with the host).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap, mountCap, paths } from '../helpers/csi.js';
import { sha256, sumAt, writeAt } from '../helpers/data.js';
import { codeOf, finish, MiB, pattern, startDriver, type Driver } from '../helpers/driver.js';
import { readMounts } from '../../src/host/mounts.js';

const RUN = '/vmrun';
const FS_VOL = process.env.VPOOL_FS_VOL ?? '';
const BLK_VOL = process.env.VPOOL_BLK_VOL ?? '';
const UUID = process.env.VPOOL_DOMAIN_UUID ?? '';
export const FS_DATA = (id: string) => pattern(`fs-${id}`, 4 * MiB);
export const BLK_DATA = (id: string) => pattern(`blk-${id}`, 2 * MiB);
const serial = (id: string) => `vp-${id.slice(-16)}`;

const signal = (step: string) => writeFile(path.join(RUN, `step-${step}`), '');
async function waitFor(go: string, ms = 300_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!existsSync(path.join(RUN, `go-${go}`))) {
    if (Date.now() > deadline) throw new Error(`the host never said go-${go}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}
async function diskGone(id: string, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  const present = async () => {
    const { readdir } = await import('node:fs/promises');
    for (const dev of await readdir('/sys/block')) {
      if ((await readFile(`/sys/block/${dev}/serial`, 'utf8').catch(() => '')).trim() === serial(id)) return true;
    }
    return false;
  };
  while (await present()) {
    if (Date.now() > deadline) throw new Error(`the disk of ${id} is still here`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

describe('hypervisor mode: the node side inside a libvirt domain', { timeout: 600_000 }, () => {
  let d: Driver;
  before(async () => {
    assert.ok(FS_VOL && BLK_VOL && UUID, 'the host passes the volume IDs and the domain UUID');
    d = await startDriver({ nodeId: null, args: ['--backend', 'libvirt', '--mode', 'node', '--hypervisor', 'hv-test', '--attach-timeout', '240', '--log-level', 'warn'] });
  });
  after(async () => {
    if (!d) return;
    for (const l of d.logs) if (/"level":"(error|warn)"/.test(l) && !l.includes('NOT_FOUND')) console.log(`driver: ${l.slice(0, 1500)}`);
    assert.deepEqual(await finish(d), []);
  });

  it('NodeGetInfo: the node ID is the domain UUID the guest reads from DMI, the topology its hypervisor', async () => {
    const info = await d.client.nodeGetInfo({});
    assert.equal(info.node_id, UUID);
    assert.deepEqual(info.accessible_topology?.segments, { 'topology.vpool.dev/hypervisor': 'hv-test' });
    const caps = (await d.client.getPluginCapabilities({})).capabilities.map((c) => c.service?.type).filter(Boolean);
    assert.deepEqual(caps, ['VOLUME_ACCESSIBILITY_CONSTRAINTS'], 'a node-only plugin offers no controller');
    await signal('ready');
  });

  it('stages a hot-plugged disk it waited for, by serial: ext4, publish, write, read back', async () => {
    const p = await paths(d, 'fs');
    const cap = mountCap('ext4');
    await d.client.nodeStageVolume({ volume_id: FS_VOL, staging_target_path: p.staging, volume_capability: cap, publish_context: { serial: serial(FS_VOL) }, volume_context: { fsType: 'ext4' } });
    await d.client.nodePublishVolume({ volume_id: FS_VOL, staging_target_path: p.staging, target_path: p.target, volume_capability: cap, readonly: false, publish_context: { serial: serial(FS_VOL) }, volume_context: { fsType: 'ext4' } });
    const mount = (await readMounts()).find((m) => m.mountPoint === p.target);
    assert.equal(mount?.fsType, 'ext4');
    assert.match(mount?.source ?? '', /^\/dev\/vd[a-z]+$/, 'the hot-plugged virtio disk');
    await writeAt(path.join(p.target, 'data.bin'), 0, FS_DATA(FS_VOL), 'w');
    assert.equal(await sumAt(path.join(p.target, 'data.bin'), 0, 4 * MiB), sha256(FS_DATA(FS_VOL)));
    const stats = await d.client.nodeGetVolumeStats({ volume_id: FS_VOL, volume_path: p.target, staging_target_path: p.staging });
    assert.equal(stats.volume_condition?.abnormal, false);
    assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: FS_VOL, staging_target_path: p.staging, volume_capability: cap, publish_context: { serial: 'vp-0000000000000000' }, volume_context: {} })), 'INVALID_ARGUMENT', 'a serial that is not the volume\'s');
  });

  it('publishes a raw block disk and writes through the device file', async () => {
    const p = await paths(d, 'blk');
    const cap = blockCap();
    await d.client.nodeStageVolume({ volume_id: BLK_VOL, staging_target_path: p.staging, volume_capability: cap, publish_context: { serial: serial(BLK_VOL) }, volume_context: {} });
    await d.client.nodePublishVolume({ volume_id: BLK_VOL, staging_target_path: p.staging, target_path: p.target, volume_capability: cap, readonly: false, publish_context: {}, volume_context: {} });
    await writeAt(p.target, 8 * MiB, BLK_DATA(BLK_VOL));
    assert.equal(await sumAt(p.target, 8 * MiB, 2 * MiB), sha256(BLK_DATA(BLK_VOL)));
  });

  it('grows the filesystem after the controller grew the disk (ControllerExpandVolume → NodeExpandVolume)', async () => {
    const p = await paths(d, 'fs');
    const before = (await statfs(p.target)).blocks * (await statfs(p.target)).bsize;
    await signal('expand');
    await waitFor('expand');
    const res = await d.client.nodeExpandVolume({ volume_id: FS_VOL, volume_path: p.target, capacity_range: { required_bytes: String(128 * MiB) }, staging_target_path: p.staging, volume_capability: mountCap('ext4') });
    assert.equal(res.capacity_bytes, String(128 * MiB));
    const s = await statfs(p.target);
    assert.ok(s.blocks * s.bsize > before + 50 * MiB, `${before} → ${s.blocks * s.bsize}`);
  });

  it('unpublishes and unstages, then sees the disks go when the controller unpublishes them', async () => {
    for (const [id, name] of [[FS_VOL, 'fs'], [BLK_VOL, 'blk']] as const) {
      const p = await paths(d, name);
      await d.client.nodeUnpublishVolume({ volume_id: id, target_path: p.target });
      await d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: p.staging });
    }
    assert.deepEqual((await readMounts()).filter((m) => m.mountPoint.startsWith(d.dir)), []);
    await signal('unstaged');
    await waitFor('finish');
    await diskGone(FS_VOL);
    await diskGone(BLK_VOL);
  });

  it('a disk that never comes is NOT_FOUND after the attach timeout', async () => {
    const quick = await startDriver({ nodeId: null, args: ['--backend', 'libvirt', '--mode', 'node', '--hypervisor', 'hv-test', '--attach-timeout', '2'] });
    try {
      const p = await paths(quick, 'never');
      const started = Date.now();
      assert.equal(await codeOf(quick.client.nodeStageVolume({ volume_id: FS_VOL, staging_target_path: p.staging, volume_capability: mountCap('ext4'), publish_context: {}, volume_context: {} })), 'NOT_FOUND');
      assert.ok(Date.now() - started >= 2000);
    } finally {
      assert.deepEqual(await finish(quick), []);
    }
  });
});
