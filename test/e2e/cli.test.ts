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

  it('drives a whole lifecycle from the command line: JSON when piped, tables that show where a volume is mounted', async () => {
    assert.equal((await json('info')).name, 'vpool.csi.dev', 'standard output is a pipe: JSON by default');
    const created = (await json('create-volume', '--name', 'cli-vol', '--size', '16Mi', '--fs-type', 'ext4')) as { volume: { volumeId: string; capacityBytes: string } };
    assert.equal(created.volume.capacityBytes, String(16 * 1024 * 1024));
    const id = created.volume.volumeId;
    const p = await paths(d, 'cli');
    assert.match(await cli('-o', 'table', 'stage', '--id', id, '--staging-path', p.staging, '--fs-type', 'ext4'), new RegExp(`^volume/${id} staged at ${p.staging}\n$`));
    await cli('publish', '--id', id, '--staging-path', p.staging, '--target-path', p.target, '--fs-type', 'ext4');
    const wide = await cli('-o', 'wide', 'list-volumes');
    const row = wide.split('\n').find((l) => l.startsWith(id))!;
    // ID NAME CLAIM SIZE ALLOCATED SOURCE ACCESS ATTACHED-TO MOUNTS MOUNT-PATHS HEALTH MESSAGE AGE
    const cells = row.split(/ {3,}/);
    assert.equal(cells[3], '16Mi');
    assert.match(cells[4]!, /^[0-9.]+[KM]i$/, 'mkfs wrote something: the sparse file holds more than nothing');
    assert.equal(cells[6], 'ext4', 'ACCESS: how it is mounted');
    assert.equal(cells[8], '2', 'staged and published');
    assert.equal(cells[9], `${p.staging},${p.target}`);
    const stats = await cli('-o', 'table', 'stats', '--id', id, '--path', p.target);
    assert.match(stats, /^UNIT +TOTAL +USED +AVAILABLE +USE%\nbytes +[0-9.]+Mi +[0-9.]+[KM]i +[0-9.]+Mi +\d+%\ninodes +\d+ +\d+ +\d+ +\d+%\n$/);
    const status = await execFileP(BIN, ['status', '--endpoint', d.endpoint, '-o', 'json']);
    assert.deepEqual((JSON.parse(status.stdout) as { volumes: unknown }).volumes, { count: 1, attached: 0, staged: 1, abnormal: 0 });
    const snap = (await json('create-snapshot', '--name', 'cli-snap', '--source', id)) as { snapshot: { snapshotId: string } };
    assert.match(await cli('-o', 'table', 'list-snapshots', '--source', id), new RegExp(`^${snap.snapshot.snapshotId} +${id} +16Mi +true +<none> +\\d+s$`, 'm'));
    await cli('expand', '--id', id, '--path', p.target, '--size', '32Mi').catch((e: { stderr: string }) => assert.match(e.stderr, /online ext4 resize.*\(FAILED_PRECONDITION\)/));
    await cli('unpublish', '--id', id, '--target-path', p.target);
    await cli('unstage', '--id', id, '--staging-path', p.staging);
    assert.equal((await cli('-o', 'wide', 'list-volumes')).split('\n').find((l) => l.startsWith(id))!.split(/ {3,}/)[8], '0', 'no mount left');
    await cli('delete-snapshot', '--id', snap.snapshot.snapshotId);
    await cli('delete-volume', '--id', id);
    assert.deepEqual(await json('list-volumes'), { entries: [], nextToken: '' });
  });
});
