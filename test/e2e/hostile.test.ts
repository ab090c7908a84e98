import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, afterEach, before, describe, it } from 'node:test';
import { listLoopDevices } from '../../src/host/loop.js';
import { readMounts } from '../../src/host/mounts.js';
import { blockCap, createVolume, mountCap, paths } from '../helpers/csi.js';
import { codeOf, finish, leftovers, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';

const HOSTILE_IDS = ['..', '../../../etc', 'vol/../../x', '/etc/passwd', 'a\0b', 'x'.repeat(300), 'v; rm -rf /', '$(touch /tmp/pwned)', '`id`', 'a|b', 'a b'];

describe('hostile input', needsRoot(), () => {
  let d: Driver;
  let outside: string;
  before(async () => {
    d = await startDriver();
    outside = path.join(d.dir, 'outside');
    await mkdir(outside);
    await writeFile(path.join(outside, 'canary'), 'untouched');
  });
  afterEach(async () => {
    assert.deepEqual(await leftovers(d), [], 'each test leaves no loop device, mount or pool file');
  });
  after(async () => {
    assert.equal(await readFile(path.join(outside, 'canary'), 'utf8'), 'untouched', 'nothing outside the pool is touched');
    assert.deepEqual(await readdir(outside), ['canary']);
    const { rm } = await import('node:fs/promises');
    await rm(outside, { recursive: true });
    assert.deepEqual(await finish(d), []);
  });

  async function poolFiles() {
    // .changes counts commits (src/pool/file/record-index.ts); what a refused call must not make is a volume's or snapshot's file.
    return [...(await readdir(path.join(d.poolDir, 'volumes'))), ...(await readdir(path.join(d.poolDir, 'snapshots')))].filter((f) => f !== '.changes').sort();
  }

  it('names with .., /, NUL, 300 characters or shell metacharacters are INVALID_ARGUMENT and create nothing', async () => {
    const before = await poolFiles();
    for (const name of HOSTILE_IDS) {
      const what = JSON.stringify(name.slice(0, 20));
      assert.equal(await codeOf(d.client.createVolume({ name, volume_capabilities: [mountCap()] })), 'INVALID_ARGUMENT', `CreateVolume ${what}`);
      assert.equal(await codeOf(d.client.createSnapshot({ name, source_volume_id: 'vol-x-0123456789abcdef' })), 'INVALID_ARGUMENT', `CreateSnapshot ${what}`);
    }
    assert.deepEqual(await poolFiles(), before);
    await assert.rejects(readFile('/tmp/pwned'), { code: 'ENOENT' });
  });

  it('hostile volume and snapshot IDs are INVALID_ARGUMENT on every RPC that takes one', async () => {
    const p = await paths(d, 'hostile-ids');
    for (const id of HOSTILE_IDS) {
      const what = JSON.stringify(id.slice(0, 20));
      // Thirteen calls at once, each handled from its start (codeOf): one that fails before its turn is not an unhandled rejection.
      const calls: Array<[string, Promise<unknown>]> = [
        ['DeleteVolume', d.client.deleteVolume({ volume_id: id })],
        ['ControllerGetVolume', d.client.controllerGetVolume({ volume_id: id })],
        ['ValidateVolumeCapabilities', d.client.validateVolumeCapabilities({ volume_id: id, volume_capabilities: [mountCap()] })],
        ['CreateSnapshot', d.client.createSnapshot({ name: 'ok-name', source_volume_id: id })],
        ['DeleteSnapshot', d.client.deleteSnapshot({ snapshot_id: id })],
        ['CreateVolume from snapshot', d.client.createVolume({ name: 'ok-name', volume_capabilities: [mountCap()], volume_content_source: { snapshot: { snapshot_id: id } } })],
        ['CreateVolume from volume', d.client.createVolume({ name: 'ok-name', volume_capabilities: [mountCap()], volume_content_source: { volume: { volume_id: id } } })],
        ['NodeStageVolume', d.client.nodeStageVolume({ volume_id: id, staging_target_path: p.staging, volume_capability: mountCap() })],
        ['NodeUnstageVolume', d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: p.staging })],
        ['NodePublishVolume', d.client.nodePublishVolume({ volume_id: id, staging_target_path: p.staging, target_path: p.target, volume_capability: mountCap() })],
        ['NodeUnpublishVolume', d.client.nodeUnpublishVolume({ volume_id: id, target_path: p.target })],
        ['NodeGetVolumeStats', d.client.nodeGetVolumeStats({ volume_id: id, volume_path: p.target })],
        ['NodeExpandVolume', d.client.nodeExpandVolume({ volume_id: id, volume_path: p.target })],
      ];
      const codes = calls.map(([rpc, call]) => [rpc, codeOf(call)] as const);
      for (const [rpc, code] of codes) assert.equal(await code, 'INVALID_ARGUMENT', `${rpc} ${what}`);
    }
    assert.deepEqual(await poolFiles(), []);
  });

  it('negative, 2^63-1 and min-int64 capacities get clear errors', async () => {
    const cv = (required: string, limit = '0') => d.client.createVolume({ name: 'cap', capacity_range: { required_bytes: required, limit_bytes: limit }, volume_capabilities: [blockCap()] });
    assert.equal(await codeOf(cv('-1')), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(cv('-9223372036854775808')), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(cv('0', '-5')), 'INVALID_ARGUMENT');
    await assert.rejects(cv('9223372036854775807'), /beyond the largest volume/);
    assert.equal(await codeOf(cv('9223372036854775807')), 'OUT_OF_RANGE');
    assert.deepEqual(await poolFiles(), []);
  });

  it('unknown filesystems and parameters are refused by name', async () => {
    await assert.rejects(d.client.createVolume({ name: 'fs', volume_capabilities: [mountCap('zfs')] }), /fs_type "zfs"/);
    await assert.rejects(d.client.createVolume({ name: 'fs', volume_capabilities: [mountCap()], parameters: { fsType: 'ntfs' } }), /fsType="ntfs"/);
    await assert.rejects(d.client.createVolume({ name: 'fs', volume_capabilities: [mountCap()], parameters: { '--force': 'yes' } }), /unknown parameter "--force"/);
    const v = await createVolume(d, 'fs-ok', 8 * MiB, mountCap());
    const p = await paths(d, 'fs-ok');
    await assert.rejects(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: mountCap('btrfs') }), /btrfs/);
    await assert.rejects(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: mountCap('ext4', 'SINGLE_NODE_WRITER', ['rw,exec,suid']) }), /characters/);
    assert.equal((await listLoopDevices()).filter((l) => l.backingFile.startsWith(d.dir)).length, 0, 'refused stages attach nothing');
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('target paths outside the allowed root, relative, with .., or symlinks are refused without mounting', async () => {
    const v = await createVolume(d, 'paths', 8 * MiB, blockCap());
    const p = await paths(d, 'paths');
    await d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: blockCap() });
    const link = path.join(d.mntDir, 'pods', 'paths', 'evil-link');
    await symlink(path.join(outside, 'canary'), link);
    const linkDir = path.join(d.mntDir, 'pods', 'evil-dir');
    await symlink(outside, linkDir);
    for (const target of [path.join(outside, 'target'), 'relative/target', `${d.mntDir}/pods/../../outside/x`, link, path.join(linkDir, 'x'), '/etc/shadow', `${d.mntDir}/pods/a\0b`]) {
      const call = d.client.nodePublishVolume({ volume_id: v.volume_id, staging_target_path: p.staging, target_path: target, volume_capability: blockCap() });
      assert.equal(await codeOf(call), 'INVALID_ARGUMENT', JSON.stringify(target));
      assert.equal(await codeOf(d.client.nodeUnpublishVolume({ volume_id: v.volume_id, target_path: target })), 'INVALID_ARGUMENT', `unpublish ${JSON.stringify(target)}`);
    }
    assert.equal(await codeOf(d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: '/' })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: outside, volume_capability: blockCap() })), 'INVALID_ARGUMENT');
    assert.deepEqual((await readMounts()).filter((m) => m.mountPoint.startsWith(outside) || m.mountPoint.startsWith(linkDir)), []);
    await d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging });
    const { rm } = await import('node:fs/promises');
    await rm(link);
    await rm(linkDir);
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('a staging path already mounted by something else is FAILED_PRECONDITION and left as it was', async () => {
    const v = await createVolume(d, 'occupied', 8 * MiB, mountCap());
    const p = await paths(d, 'occupied');
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'foreign', p.staging]);
    try {
      await writeFile(path.join(p.staging, 'theirs'), 'keep');
      assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: mountCap() })), 'FAILED_PRECONDITION');
      assert.equal(await codeOf(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: blockCap() })), 'FAILED_PRECONDITION');
      assert.equal(await codeOf(d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging })), 'FAILED_PRECONDITION');
      assert.equal(await readFile(path.join(p.staging, 'theirs'), 'utf8'), 'keep');
      assert.equal((await listLoopDevices()).filter((l) => l.backingFile.startsWith(d.dir)).length, 0);
      // A target occupied by a foreign mount is refused the same way.
      await d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: path.join(d.mntDir, 'staging', 'never-used') });
    } finally {
      execFileSync('umount', [p.staging]);
    }
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('a volume formatted with one filesystem is never reformatted for another', async () => {
    const v = await createVolume(d, 'keepfs', 8 * MiB, mountCap());
    const p = await paths(d, 'keepfs');
    await d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: mountCap('ext4') });
    await writeFile(path.join(p.staging, 'precious'), 'data');
    await d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging });
    // Large enough for xfs's minimum would not matter: the refusal comes from what blkid finds.
    await assert.rejects(d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: mountCap('xfs') }), /holds ext4, not xfs/);
    assert.equal((await listLoopDevices()).filter((l) => l.backingFile.startsWith(d.dir)).length, 0, 'the failed stage detached what it attached');
    await d.client.nodeStageVolume({ volume_id: v.volume_id, staging_target_path: p.staging, volume_capability: mountCap('ext4') });
    assert.equal(await readFile(path.join(p.staging, 'precious'), 'utf8'), 'data');
    await d.client.nodeUnstageVolume({ volume_id: v.volume_id, staging_target_path: p.staging });
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('the log has one line per RPC and never the secrets', async () => {
    const secret = 'S3CRET-do-not-log';
    await d.client.createVolume({ name: 'with-secret', volume_capabilities: [blockCap()], capacity_range: { required_bytes: String(MiB) }, secrets: { password: secret } });
    const v = (await d.client.createVolume({ name: 'with-secret', volume_capabilities: [blockCap()], capacity_range: { required_bytes: String(MiB) }, secrets: { password: secret } })).volume!;
    await d.client.deleteVolume({ volume_id: v.volume_id, secrets: { password: secret } });
    // The log lines arrive over a pipe: wait (bounded) for the last one.
    for (let i = 0; i < 100 && !d.logs.some((l) => l.includes('"method":"DeleteVolume"') && l.includes(v.volume_id)); i++) await new Promise((r) => setTimeout(r, 50));
    assert.ok(!d.logs.some((l) => l.includes(secret)));
    const lines = d.logs.filter((l) => l.includes('"message":"rpc"')).map((l) => JSON.parse(l) as Record<string, unknown>);
    const creates = lines.filter((l) => l.method === 'CreateVolume' && l.volume === 'with-secret');
    assert.equal(creates.length, 2);
    for (const l of creates) {
      assert.equal(l.code, 'OK');
      assert.equal(typeof l.ms, 'number');
    }
    const del = lines.find((l) => l.method === 'DeleteVolume' && l.volume === v.volume_id);
    assert.equal(del?.code, 'OK');
  });
});
