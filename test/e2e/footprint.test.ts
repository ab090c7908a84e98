import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { PROJECT_ROOT } from '../../src/project.js';
import { BIN, finish, needsRoot, startDriver } from '../helpers/driver.js';

const execFileP = promisify(execFile);
const RECORDER = path.join(PROJECT_ROOT, 'dist', 'test', 'helpers', 'import-recorder.js');

// Each command loads the code it uses and no more (the time and memory figures are in
// bench/footprint.ts; this checks the cause, by recording every module a real process resolves).
describe('what each command loads', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-imports-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const recording = (name: string) => {
    const log = path.join(dir, `${name}.log`);
    return { env: { ...process.env, NODE_OPTIONS: `--import=${RECORDER}`, VPOOL_IMPORT_LOG: log }, read: async () => (await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean) };
  };
  const loads = (urls: string[], what: RegExp) => urls.some((u) => what.test(u));
  const HEAVY: Record<string, RegExp> = {
    'the Kubernetes client': /@kubernetes\/client-node/,
    'gRPC': /@grpc\//,
    'the lvm pool': /\/src\/pool\/lvm\//,
    'the libvirt pool': /\/src\/pool\/libvirt\//,
    'the file pool': /\/src\/pool\/file\//,
    'metrics': /prom-client|\/src\/metrics\.js/,
    'the cluster code': /\/src\/cluster\//,
  };

  it('--version loads none of the pools, gRPC, the cluster client or metrics', async () => {
    const r = recording('version');
    const { stdout } = await execFileP(BIN, ['--version'], { env: r.env });
    assert.equal(stdout.trim(), JSON.parse(await readFile(path.join(PROJECT_ROOT, 'package.json'), 'utf8')).version);
    const urls = await r.read();
    assert.ok(urls.some((u) => u.endsWith('/src/main.js')), 'the recorder saw the process');
    for (const [what, re] of Object.entries(HEAVY)) assert.ok(!loads(urls, re), `--version loads ${what}`);
  });

  it('serve on the file pool without a cluster or metrics loads the file pool and gRPC only', needsRoot(), async () => {
    const r = recording('serve-file');
    const d = await startDriver({ env: { NODE_OPTIONS: r.env.NODE_OPTIONS!, VPOOL_IMPORT_LOG: r.env.VPOOL_IMPORT_LOG! } });
    try {
      await d.client.listVolumes({});
      const urls = await r.read();
      assert.ok(loads(urls, HEAVY['the file pool']) && loads(urls, HEAVY.gRPC));
      for (const what of ['the Kubernetes client', 'the lvm pool', 'the libvirt pool', 'metrics', 'the cluster code']) assert.ok(!loads(urls, HEAVY[what]), `serve --backend file loads ${what}`);
    } finally {
      assert.deepEqual(await finish(d), []);
    }
  });

  it('client loads gRPC, not the pools or the cluster client', async () => {
    const r = recording('client');
    await execFileP(BIN, ['client', '--endpoint', `unix://${dir}/nobody.sock`, 'info'], { env: r.env }).catch(() => undefined);
    const urls = await r.read();
    assert.ok(loads(urls, HEAVY.gRPC));
    for (const what of ['the Kubernetes client', 'the lvm pool', 'the libvirt pool', 'the file pool', 'metrics']) assert.ok(!loads(urls, HEAVY[what]), `client loads ${what}`);
  });
});
