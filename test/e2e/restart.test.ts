import assert from 'node:assert/strict';
import { open, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { blockCap, createVolume, mountCap, paths, stageAndPublish, unpublishAndUnstage } from '../helpers/csi.js';
import { finish, MiB, needsRoot, startDriver } from '../helpers/driver.js';

// The node keeps no state file: after kill -9 the new process finds everything in the kernel and the pool.
describe('restart after kill -9', needsRoot(), () => {
  it('between create and stage, and between stage and publish, the lifecycle finishes cleanly', async () => {
    let d = await startDriver();
    const cap = mountCap('ext4');
    const vol = await createVolume(d, 'survivor', 16 * MiB, cap);
    const blk = await createVolume(d, 'survivor-block', 8 * MiB, blockCap());

    await d.stop('SIGKILL');
    d = await d.restart();
    assert.equal((await d.client.controllerGetVolume({ volume_id: vol.volume_id })).volume?.capacity_bytes, String(16 * MiB));
    const p = await paths(d, 'survivor');
    const bp = await paths(d, 'survivor-block');
    await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, volume_capability: cap });
    await d.client.nodeStageVolume({ volume_id: blk.volume_id, staging_target_path: bp.staging, volume_capability: blockCap() });

    await d.stop('SIGKILL');
    d = await d.restart();
    // A retried stage after the crash is recognized as done, not redone or refused.
    await d.client.nodeStageVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, volume_capability: cap });
    await d.client.nodeStageVolume({ volume_id: blk.volume_id, staging_target_path: bp.staging, volume_capability: blockCap() });
    await d.client.nodePublishVolume({ volume_id: vol.volume_id, staging_target_path: p.staging, target_path: p.target, volume_capability: cap });
    await d.client.nodePublishVolume({ volume_id: blk.volume_id, staging_target_path: bp.staging, target_path: bp.target, volume_capability: blockCap() });
    const fh = await open(path.join(p.target, 'f'), 'w');
    await fh.writeFile('after two crashes');
    await fh.sync();
    await fh.close();

    await d.stop('SIGKILL');
    d = await d.restart();
    const stats = await d.client.nodeGetVolumeStats({ volume_id: vol.volume_id, volume_path: p.target });
    assert.equal(stats.volume_condition?.abnormal, false);
    await unpublishAndUnstage(d, vol.volume_id, p);
    await unpublishAndUnstage(d, blk.volume_id, bp);
    await stageAndPublish(d, vol.volume_id, p, cap);
    assert.equal(await readFile(path.join(p.target, 'f'), 'utf8'), 'after two crashes');
    await unpublishAndUnstage(d, vol.volume_id, p);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
    await d.client.deleteVolume({ volume_id: blk.volume_id });
    assert.deepEqual(await finish(d), []);
  });

  it('an image a crash left without metadata is swept at start and never listed', async () => {
    let d = await startDriver();
    const { writeFile } = await import('node:fs/promises');
    const stray = path.join(d.poolDir, 'volumes', 'vol-stray-0123456789abcdef.img');
    await writeFile(stray, '');
    await writeFile(path.join(d.poolDir, '.tmp', 'vol-half-0123456789abcdef.img'), 'partial copy');
    assert.equal((await d.client.listVolumes({})).entries.length, 0);
    await d.stop('SIGKILL');
    d = await d.restart();
    assert.deepEqual(await finish(d), [], 'startup removed the stray image and the temporary');
  });
});
