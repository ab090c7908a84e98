import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { finish, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { matchGolden, runCli, runOnTerminal, transcript, type Run } from '../helpers/golden.js';

const execFileP = promisify(execFile);
/** Every layout choice of mke2fs given, not left to /etc/mke2fs.conf: the free space the goldens print is the same wherever they run. */
const MKFS = ['-q', '-F', '-m', '0', '-b', '4096', '-I', '256', '-N', '4096', '-J', 'size=4', '-O', '^resize_inode,^metadata_csum_seed,sparse_super,extent,flex_bg,huge_file,dir_nlink,extra_isize,64bit,metadata_csum', '-G', '16', '-E', 'lazy_itable_init=0,lazy_journal_init=0'];

/**
 * The command line as a person and a script see it: the real binary against a real driver, whole
 * outputs compared with test/golden/cli/*.txt. The pool is a file pool on a 512 MiB ext4 filesystem
 * of its own (a loop device), so every size it reports is the same on every run. What changes from run
 * to run is replaced before the comparison: the test directory (<dir>), ages and uptimes (<age>) and
 * RFC 3339 times (<time>).
 */
describe('vpool-csi client and status: whole outputs (golden files)', needsRoot(), () => {
  let d: Driver;
  let dir = '';
  const norm = (s: string) =>
    s
      .replaceAll(dir, '<dir>')
      .replace(/\/dev\/loop\d+/g, '/dev/loopN')
      .replace(/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z/g, '<time>')
      .replace(/(   |^)(\d+[smhdy](\d+[smhd])?|<invalid>)$/gm, '$1<age>')
      .replace(/ up \d+[smhdy](\d+[smhd])?$/gm, ' up <age>')
      .replace(/^  \d+[smhdy](\d+[smhd])? ago/gm, '  <age> ago');
  const cli = (...args: string[]) => runCli(['client', '--endpoint', d.endpoint, ...args]);
  const show = (runs: Run[]) => norm(runs.map((r) => transcript({ ...r, args: r.args.map((a) => (a === d.endpoint ? 'unix://<dir>/csi.sock' : a)) })).join('\n'));

  before(async () => {
    dir = await mkdtemp('/var/tmp/vpool-golden-');
    // A filesystem of its own: the same size and the same free space on every run.
    await execFileP('truncate', ['-s', '512M', path.join(dir, 'pool.img')]);
    await execFileP('mkfs.ext4', MKFS.concat(path.join(dir, 'pool.img')));
    await mkdir(path.join(dir, 'pool'));
    await execFileP('mount', ['-o', 'loop', path.join(dir, 'pool.img'), path.join(dir, 'pool')]);
    d = await startDriver({ dir, nodeId: 'node-a' });
  });
  after(async () => {
    // The pool's own filesystem is the test's, not a leftover of the driver's (finish unmounts it).
    if (d) assert.deepEqual((await finish(d)).filter((l) => !l.endsWith(`${dir}/pool.img`) && l !== `mount ${dir}/pool`), []);
  });

  it('empty lists: a table says so on stderr; json, yaml and name print an empty list', async () => {
    await matchGolden(
      'empty',
      show([await cli('-o', 'table', 'list-volumes'), await cli('-o', 'json', 'list-volumes'), await cli('-o', 'yaml', 'list-volumes'), await cli('-o', 'name', 'list-volumes'), await cli('-o', 'table', '--no-headers', 'list-volumes'), await cli('-o', 'table', 'list-snapshots')]),
    );
  });

  const longName = `pvc-${'0123456789abcdef'.repeat(7)}`;
  it('volumes and snapshots: made, then listed in every format; a very long ID whole', async () => {
    const made = [
      await cli('-o', 'table', 'create-volume', '--name', 'data', '--size', '64Mi', '--fs-type', 'ext4'),
      await cli('-o', 'table', 'create-volume', '--name', 'raw-disk', '--size', '200Mi', '--block'),
      await cli('-o', 'name', 'create-volume', '--name', longName, '--size', '1Mi'),
      await cli('-o', 'table', 'create-volume', '--name', 'data-clone', '--size', '64Mi', '--from-volume', 'vol-data-67ae3df09650e1b4'),
    ];
    assert.deepEqual(made.map((r) => r.code), [0, 0, 0, 0], made.map((r) => r.stderr).join(''));
    const snap = await cli('-o', 'json', 'create-snapshot', '--name', 'nightly', '--source', 'vol-data-67ae3df09650e1b4');
    const snapId = (JSON.parse(snap.stdout) as { snapshot: { snapshotId: string } }).snapshot.snapshotId;
    made.push(snap, await cli('-o', 'table', 'create-volume', '--name', 'restored', '--from-snapshot', snapId));
    assert.equal(made.at(-1)!.code, 0, `a restore without a size is the snapshot's size: ${made.at(-1)!.stderr}`);
    await matchGolden('create', show(made));
    await matchGolden(
      'volumes',
      show([
        await cli('-o', 'table', 'list-volumes'),
        await cli('-o', 'wide', 'list-volumes'),
        await cli('-o', 'name', 'list-volumes'),
        await cli('-o', 'table', '--no-headers', 'list-volumes'),
        await cli('-o', 'json', 'list-volumes'),
        await cli('-o', 'yaml', 'get-volume', '--id', 'vol-data-clone-c5e8ce6e6f068e0e'),
        await cli('-o', 'table', 'get-volume', '--id', 'vol-data-67ae3df09650e1b4'),
        await cli('-o', 'table', 'list-volumes', '--max', '2'),
      ]),
    );
    await matchGolden(
      'snapshots',
      show([await cli('-o', 'table', 'list-snapshots'), await cli('-o', 'json', 'list-snapshots'), await cli('-o', 'yaml', 'get-snapshot', '--id', snapId), await cli('-o', 'name', 'list-snapshots')]),
    );
  });

  it('the pool, the node and the driver', async () => {
    await matchGolden(
      'pool',
      show([
        await cli('-o', 'table', 'capacity'),
        await cli('-o', 'json', 'capacity'),
        await cli('-o', 'table', 'node-info'),
        await cli('-o', 'table', 'info'),
        await cli('-o', 'table', 'plugin-capabilities'),
        await cli('-o', 'table', 'controller-capabilities'),
        await cli('-o', 'table', 'node-capabilities'),
        await cli('-o', 'table', 'probe'),
        await runCli(['status', '--endpoint', d.endpoint, '-o', 'table']),
      ]),
    );
  });

  it('a terminal of 80 columns: a table by default, long IDs cut in their middle, whole in -o wide and -o name', async () => {
    const runs = [await runOnTerminal(['client', '--endpoint', d.endpoint, 'list-volumes'], 80), await runOnTerminal(['client', '--endpoint', d.endpoint, 'list-snapshots'], 80), await runOnTerminal(['client', '--endpoint', d.endpoint, '-o', 'name', 'list-volumes'], 80)];
    for (const r of runs.slice(0, 2)) for (const line of r.stdout.split('\n')) assert.ok([...line].length <= 80, `wider than 80 columns: ${line}`);
    assert.match(runs[2]!.stdout, new RegExp(`volume/vol-${longName}`.slice(0, 40)));
    await matchGolden('terminal-80', show(runs));
  });

  it('errors a person acts on, with an exit code a script can test', async () => {
    const runs = [
      await cli('create-volume', '--name', 'huge', '--size', '5Ti'),
      await cli('--verbose', 'create-volume', '--name', 'huge', '--size', '1Gi', '--limit', '1Mi'),
      await cli('create-volume', '--name', 'huge', '--size', '10Pi'),
      await cli('create-volume', '--name', 'huge', '--size', '5Tx'),
      await cli('get-volume', '--id', 'vol-none-0123456789abcdef'),
      await cli('-o', 'xml', 'list-volumes'),
      await cli('list-volumes', '--bogus'),
      await runCli(['client', '--endpoint', `unix://${dir}/nobody.sock`, 'list-volumes']),
    ];
    assert.deepEqual(runs.map((r) => r.code), [1, 2, 2, 2, 3, 2, 2, 4]);
    await matchGolden('errors', show(runs));
  });

  it('deletes, as kubectl says it', async () => {
    const runs = [
      await cli('-o', 'table', 'delete-volume', '--id', 'vol-data-67ae3df09650e1b4'),
      await cli('-o', 'name', 'delete-snapshot', '--id', 'snap-nightly-cfd8e86f41d1f0f4'),
    ];
    for (const id of (await cli('-o', 'name', 'list-volumes')).stdout.trim().split('\n')) runs.push(await cli('-o', 'table', 'delete-volume', '--id', id.replace('volume/', '')));
    runs.push(await cli('-o', 'table', 'list-volumes'));
    await matchGolden('delete', show(runs));
  });

  it('a stopped driver (killed, its socket left behind) and a full pool', async () => {
    // Its own 64 MiB filesystem too, and a reserve larger than it: nothing is free.
    await execFileP('truncate', ['-s', '64M', path.join(dir, 'full.img')]);
    await execFileP('mkfs.ext4', MKFS.concat(path.join(dir, 'full.img')));
    await mkdir(path.join(dir, 'full', 'pool'), { recursive: true });
    await execFileP('mount', ['-o', 'loop', path.join(dir, 'full.img'), path.join(dir, 'full', 'pool')]);
    const full = await startDriver({ dir: path.join(dir, 'full'), nodeId: 'node-b', args: ['--reserve', '1Gi'] });
    const runs: Run[] = [];
    try {
      const c = (...a: string[]) => runCli(['client', '--endpoint', full.endpoint, ...a]);
      runs.push(await c('-o', 'table', 'capacity'), await c('create-volume', '--name', 'any', '--size', '1Mi'));
      const st = await runCli(['status', '--endpoint', full.endpoint, '-o', 'table']);
      runs.push(st);
      assert.equal(st.code, 5, 'status exits 5 when something needs attention');
      await full.stop('SIGKILL');
      runs.push(await c('list-volumes'));
      assert.equal(runs.at(-1)!.code, 4);
    } finally {
      await finish(full);
    }
    await matchGolden('stopped-and-full', show(runs).replaceAll('unix://<dir>/full/csi.sock', 'unix://<dir>/csi.sock'));
  });
});
