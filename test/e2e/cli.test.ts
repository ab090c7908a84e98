import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { paths } from '../helpers/csi.js';
import { BIN, type Driver, needsRoot, useDriver } from '../helpers/driver.js';

const execFileP = promisify(execFile);

describe('vpool-csi client', needsRoot(), () => {
  let d: Driver;
  const cli = async (...args: string[]) => (await execFileP(BIN, ['client', '--endpoint', d.endpoint, ...args])).stdout;
  const json = async (...args: string[]) => JSON.parse(await cli(...args)) as Record<string, unknown>;
  useDriver((x) => (d = x));

  it('drives a whole lifecycle from the command line, JSON by default and tables on request', async () => {
    assert.equal((await json('info')).name, 'vpool.csi.dev');
    const created = (await json('create-volume', '--name', 'cli-vol', '--size', '16Mi', '--fs-type', 'ext4')) as { volume: { volume_id: string; capacity_bytes: string } };
    assert.equal(created.volume.capacity_bytes, String(16 * 1024 * 1024));
    const id = created.volume.volume_id;
    const table = await cli('-o', 'table', 'list-volumes');
    assert.match(table, /^VOLUME\.ACCESSIBLE_TOPOLOGY.*VOLUME\.VOLUME_ID/m);
    assert.match(table, new RegExp(`${id}`));
    const p = await paths(d, 'cli');
    await cli('stage', '--id', id, '--staging-path', p.staging, '--fs-type', 'ext4');
    await cli('publish', '--id', id, '--staging-path', p.staging, '--target-path', p.target, '--fs-type', 'ext4');
    const stats = (await json('stats', '--id', id, '--path', p.target)) as { usage: Array<{ unit: string }> };
    assert.deepEqual(stats.usage.map((u) => u.unit), ['BYTES', 'INODES']);
    const snap = (await json('create-snapshot', '--name', 'cli-snap', '--source', id)) as { snapshot: { snapshot_id: string } };
    assert.match(await cli('-o', 'table', 'list-snapshots', '--source', id), new RegExp(snap.snapshot.snapshot_id));
    await cli('expand', '--id', id, '--path', p.target, '--size', '32Mi').catch((e: { stderr: string }) => assert.match(e.stderr, /FAILED_PRECONDITION: online ext4 resize/));
    await cli('unpublish', '--id', id, '--target-path', p.target);
    await cli('unstage', '--id', id, '--staging-path', p.staging);
    await cli('delete-snapshot', '--id', snap.snapshot.snapshot_id);
    await cli('delete-volume', '--id', id);
    assert.match(await cli('-o', 'table', 'list-volumes'), /\(none\)/);
  });

  it('reports gRPC errors by code name with exit status 1', async () => {
    const res = await execFileP(BIN, ['client', '--endpoint', d.endpoint, 'get-volume', '--id', 'vol-none-0123456789abcdef']).catch((e: { code: number; stderr: string }) => e);
    assert.equal((res as { code: number }).code, 1);
    assert.match((res as { stderr: string }).stderr, /NOT_FOUND: volume vol-none-0123456789abcdef does not exist/);
  });
});
