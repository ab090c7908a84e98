import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { blockCap, mountCap } from '../helpers/csi.js';
import { sha256, sumAt } from '../helpers/data.js';
import { finish, MiB, needsRoot, pattern, startDriver, type Driver } from '../helpers/driver.js';
import { dirPool, nodeVm, startLibvirt, URI, virsh, type NodeVm, type TestPool } from '../helpers/libvirt.js';

const execFileP = promisify(execFile);

// Hypervisor mode end to end: the controller runs here against a real libvirtd; the node plugin
// runs inside a libvirt TCG domain (test/vm/hypervisor-node.vm-test.ts). Volumes go from the pool
// into the guest by ControllerPublishVolume (hot-plug), are staged and written there, grown by
// ControllerExpandVolume + NodeExpandVolume, and the data is checked back here, in the pool.
describe('libvirt hypervisor mode end to end: controller here, node plugin in a libvirt domain', { ...needsRoot(), timeout: 15 * 60_000 }, () => {
  let pool: TestPool;
  let d: Driver;
  let vm: NodeVm;
  let fsVol: string;
  let blkVol: string;

  before(async () => {
    await startLibvirt();
    pool = await dirPool('vpool-e2e');
    d = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'hv-test', '--attach-timeout', '120'] });
    fsVol = (await d.client.createVolume({ name: 'pvc-vm-fs', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [mountCap('ext4')], parameters: { fsType: 'ext4' } })).volume!.volume_id;
    blkVol = (await d.client.createVolume({ name: 'pvc-vm-blk', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [blockCap()], parameters: {} })).volume!.volume_id;
  });
  after(async () => {
    if (vm) {
      // The guest's own report, indented, so a failure inside shows which step broke.
      process.stdout.write((await vm.console()).split('\n').map((l) => `    vm| ${l}`).join('\n') + '\n');
      await vm.remove();
    }
    for (const id of [fsVol, blkVol]) if (id) await d.client.deleteVolume({ volume_id: id }).catch(() => undefined);
    const left = d ? await finish(d) : [];
    const vols = pool ? await pool.volumes() : [];
    await pool?.remove();
    assert.deepEqual(left, []);
    assert.deepEqual(vols, []);
  });

  it('publish, stage, write, expand, unstage, unpublish across the hypervisor boundary', async () => {
    const inner = path.join('dist', 'test', 'vm', 'hypervisor-node.vm-test.js');
    const uuid = randomUUID();
    vm = await nodeVm(`vpool-e2e-${path.basename(pool.dir).slice(-6)}`, uuid, ['node', '--test', '--test-reporter=spec', inner], { VPOOL_FS_VOL: fsVol, VPOOL_BLK_VOL: blkVol, VPOOL_DOMAIN_UUID: uuid });
    await vm.waitFile('step-ready');
    // The guest is up and waiting in NodeStageVolume: now hot-plug.
    const fsCtx = await d.client.controllerPublishVolume({ volume_id: fsVol, node_id: vm.uuid, volume_capability: mountCap('ext4'), readonly: false, secrets: {}, volume_context: { fsType: 'ext4' } });
    assert.equal(fsCtx.publish_context.serial, `vp-${fsVol.slice(-16)}`);
    await d.client.controllerPublishVolume({ volume_id: blkVol, node_id: vm.uuid, volume_capability: blockCap(), readonly: false, secrets: {}, volume_context: {} });

    await vm.waitFile('step-expand');
    const grown = await d.client.controllerExpandVolume({ volume_id: fsVol, capacity_range: { required_bytes: String(128 * MiB) }, volume_capability: mountCap('ext4') });
    assert.deepEqual(grown, { capacity_bytes: String(128 * MiB), node_expansion_required: true });
    await vm.go('expand');

    await vm.waitFile('step-unstaged');
    await d.client.controllerUnpublishVolume({ volume_id: fsVol, node_id: vm.uuid, secrets: {} });
    await d.client.controllerUnpublishVolume({ volume_id: blkVol, node_id: vm.uuid, secrets: {} });
    assert.doesNotMatch(await virsh('domblklist', vm.name), /vol-pvc-vm/);
    await vm.go('finish');

    await vm.waitFile('rc', 300_000);
    const rc = (await readFile(path.join(vm.run, 'rc'), 'utf8')).trim();
    const report = await vm.console();
    assert.equal(rc, '0', 'the node suite inside the domain failed (its report follows the test)');
    assert.match(report, /ℹ fail 0/);
    assert.match(report, /ℹ pass 6/);

    // What the guest wrote is in the pool: the ext4 volume mounted here read-only, the raw one read directly.
    const mnt = await mkdtemp('/var/tmp/vpool-e2e-mnt-');
    const fsFile = path.join(pool.dir, `${fsVol}.ext4.raw`);
    await execFileP('mount', ['-o', 'ro,loop', fsFile, mnt]);
    try {
      assert.equal(await sumAt(path.join(mnt, 'data.bin'), 0, 4 * MiB), sha256(pattern(`fs-${fsVol}`, 4 * MiB)));
    } finally {
      await execFileP('umount', [mnt]);
      await rm(mnt, { recursive: true });
    }
    const { stdout } = await execFileP('dumpe2fs', ['-h', fsFile]);
    const blocks = Number(/Block count:\s+(\d+)/.exec(stdout)![1]) * Number(/Block size:\s+(\d+)/.exec(stdout)![1]);
    assert.ok(blocks > 120 * MiB, `the filesystem grew to the new size (${blocks})`);
    assert.equal(await sumAt(path.join(pool.dir, `${blkVol}.raw`), 8 * MiB, 2 * MiB), sha256(pattern(`blk-${blkVol}`, 2 * MiB)));
  });
});
