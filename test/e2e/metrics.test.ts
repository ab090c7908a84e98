import assert from 'node:assert/strict';
import { rename } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { createVolume, mountCap, paths, stageAndPublish, unpublishAndUnstage } from '../helpers/csi.js';
import { codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { samples } from '../helpers/metrics.js';

describe('metrics and health endpoints', needsRoot(), () => {
  let d: Driver;
  let base = '';
  const get = async (p: string) => {
    const res = await fetch(`${base}${p}`);
    return { status: res.status, text: await res.text(), type: res.headers.get('content-type') ?? '' };
  };
  before(async () => {
    d = await startDriver({ args: ['--metrics-address', '127.0.0.1:0', '--health-address', '127.0.0.1:0'] });
    const lines = d.logs.filter((l) => l.includes('"serving http"')).map((l) => JSON.parse(l) as { port: number; metrics: boolean; health: boolean });
    assert.equal(lines.length, 1, 'one address given twice: one server for both');
    assert.ok(lines[0].metrics && lines[0].health);
    base = `http://127.0.0.1:${lines[0].port}`;
  });
  after(async () => {
    assert.deepEqual(await finish(d), []);
  });

  it('counts RPCs by method and code, times the commands, and reads the pool at scrape time', async () => {
    const empty = samples((await get('/metrics')).text, 'vpool_csi_pool_available_bytes').get('{backend="file"}')!;
    const v = await createVolume(d, 'pvc-metrics', 64 * MiB, mountCap('ext4'));
    const other = await createVolume(d, 'pvc-metrics-2', 32 * MiB, mountCap('ext4'));
    const p = await paths(d, 'metrics');
    await stageAndPublish(d, v.volume_id, p, mountCap('ext4'));
    assert.equal(await codeOf(d.client.controllerGetVolume({ volume_id: 'vol-nope-0000000000000000' })), 'NOT_FOUND');

    const scrape = await get('/metrics');
    assert.equal(scrape.status, 200);
    assert.match(scrape.type, /^text\/plain; version=0\.0\.4/);
    const rpcs = samples(scrape.text, 'vpool_csi_rpc_duration_seconds_count');
    assert.equal(rpcs.get('{method="CreateVolume",code="OK"}'), 2);
    assert.equal(rpcs.get('{method="NodeStageVolume",code="OK"}'), 1);
    assert.equal(rpcs.get('{method="NodePublishVolume",code="OK"}'), 1);
    assert.ok((samples(scrape.text, 'vpool_csi_rpc_duration_seconds_sum').get('{method="NodeStageVolume",code="OK"}') ?? 0) > 0);
    assert.equal(samples(scrape.text, 'vpool_csi_rpc_errors_total').get('{method="ControllerGetVolume",code="NOT_FOUND"}'), 1);
    assert.equal(samples(scrape.text, 'vpool_csi_rpc_errors_total').get('{method="CreateVolume",code="OK"}'), undefined, 'successes are not errors');
    assert.ok((samples(scrape.text, 'vpool_csi_command_duration_seconds_count').get('{command="mkfs.ext4",result="ok"}') ?? 0) >= 1);
    assert.equal(samples(scrape.text, 'vpool_csi_pool_volumes').get('{backend="file"}'), 2);
    assert.equal(samples(scrape.text, 'vpool_csi_pool_up').get('{backend="file"}'), 1);
    assert.ok(samples(scrape.text, 'vpool_csi_pool_size_bytes').get('{backend="file"}')! > 0);
    const avail = samples(scrape.text, 'vpool_csi_pool_available_bytes').get('{backend="file"}')!;
    assert.ok(empty - avail >= 90 * MiB, `two volumes (96 MiB) taken from the available space: ${empty} → ${avail}`);
    assert.ok(samples(scrape.text, 'vpool_csi_process_resident_memory_bytes').get('')! > 10 * MiB, 'process metrics');

    await unpublishAndUnstage(d, v.volume_id, p);
    for (const id of [v.volume_id, other.volume_id]) await d.client.deleteVolume({ volume_id: id });
    const after = await get('/metrics');
    assert.equal(samples(after.text, 'vpool_csi_pool_volumes').get('{backend="file"}'), 0);
    assert.equal(samples(after.text, 'vpool_csi_rpc_duration_seconds_count').get('{method="DeleteVolume",code="OK"}'), 2);
  });

  it('/healthz says ok while the pool answers and 503 with the reason when it does not', async () => {
    assert.deepEqual(await get('/healthz').then((r) => [r.status, r.text]), [200, 'ok\n']);
    const volumes = path.join(d.poolDir, 'volumes');
    await rename(volumes, `${volumes}.away`);
    try {
      const sick = await get('/healthz');
      assert.equal(sick.status, 503);
      assert.match(sick.text, /ENOENT/);
      assert.equal(samples((await get('/metrics')).text, 'vpool_csi_pool_up').get('{backend="file"}'), 0, 'the gauge sees it too');
    } finally {
      await rename(`${volumes}.away`, volumes);
    }
    assert.equal((await get('/healthz')).status, 200);
    assert.equal(samples((await get('/metrics')).text, 'vpool_csi_pool_up').get('{backend="file"}'), 1);
    assert.equal((await get('/nope')).status, 404);
  });
});
