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
    return { env: { ...process.env, NODE_OPTIONS: `--import=${RECORDER}`, VPOOL_IMPORT_LOG: log }, read: async () => throughBundle((await readFile(log, 'utf8').catch(() => '')).split('\n').filter(Boolean)) };
  };
  // A person's commands run from the bundle (scripts/bundle-cli.mjs): a file of it loaded stands for the modules it holds.
  const throughBundle = async (urls: string[]) => {
    const held = JSON.parse(await readFile(path.join(PROJECT_ROOT, 'dist', 'cli', 'modules.json'), 'utf8')) as Record<string, string[]>;
    return urls.flatMap((u) => {
      const file = /\/dist\/cli\/([^/]+)$/.exec(u)?.[1];
      return file && held[file] ? [u, ...held[file].map((m) => `file://${PROJECT_ROOT}/${m}`)] : [u];
    });
  };
  const loads = (urls: string[], what: RegExp) => urls.some((u) => what.test(u));
  const HEAVY: Record<string, RegExp> = {
    'the Kubernetes client': /@kubernetes\/client-node/,
    'gRPC': /@grpc\//,
    'protobufjs': /\/protobufjs\//,
    'the lvm pool': /\/src\/pool\/lvm\//,
    'the libvirt pool': /\/src\/pool\/libvirt\//,
    'the file pool': /\/src\/pool\/file\//,
    'metrics': /prom-client|\/src\/metrics\.js/,
    'the cluster code': /\/src\/cluster\//,
  };

  it('--version loads none of the pools, gRPC, protobufjs, the cluster client or metrics, nor any other command', async () => {
    const r = recording('version');
    const { stdout } = await execFileP(BIN, ['--version'], { env: r.env });
    assert.equal(stdout.trim(), JSON.parse(await readFile(path.join(PROJECT_ROOT, 'package.json'), 'utf8')).version);
    const urls = await r.read();
    assert.ok(urls.some((u) => u.endsWith('/dist/cli/main.js')), 'the recorder saw the process, run from the bundle');
    for (const [what, re] of Object.entries(HEAVY)) assert.ok(!loads(urls, re), `--version loads ${what}`);
    assert.ok(!loads(urls, /\/src\/cli\/(client|status|pool|serve)/), '--version loads a command\'s code');
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

  it('client and status load their own codec and HTTP/2 call: not grpc-js, protobufjs, the pools, the cluster client or another command', async () => {
    for (const args of [['client', '--endpoint', `unix://${dir}/nobody.sock`, 'info'], ['status', '--endpoint', `unix://${dir}/nobody.sock`]]) {
      const r = recording(args[0]!);
      const failed = await execFileP(BIN, args, { env: r.env }).then(() => null, (e: { code?: number; stderr?: string }) => e);
      assert.equal(failed?.code, 4, `${args[0]}: no driver there (${failed?.stderr})`);
      const urls = await r.read();
      assert.ok(urls.some((u) => u.endsWith('/dist/cli/main.js')), `${args[0]} runs from the bundle`);
      assert.ok(loads(urls, /\/src\/csi\/wire\/unary-call\.js$/), `${args[0]} loads the CLI's HTTP/2 call`);
      for (const what of ['gRPC', 'protobufjs', 'the Kubernetes client', 'the lvm pool', 'the libvirt pool', 'the file pool', 'metrics', 'the cluster code']) assert.ok(!loads(urls, HEAVY[what]), `${args[0]} loads ${what}`);
      assert.ok(!loads(urls, args[0] === 'client' ? /\/src\/cli\/(status|pool|serve|backup)/ : /\/src\/cli\/(client|pool|serve|backup)/), `${args[0]} loads another command's code`);
    }
  });
});
