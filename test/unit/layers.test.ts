import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { PROJECT_ROOT } from '../../src/project.js';

/**
 * The floors of src/, each importing only from its own floor and those below (type imports count):
 * shared terms at the root, host primitives, pools, the driver's operations (which speak pool and
 * host terms), then the CSI edge (which speaks gRPC and reaches the pools and the host only through
 * the driver) and the cluster side (the two never import each other), then metrics (which observes
 * the CSI edge's calls), the backup client (a caller of the APIs) and the CLI, and the kubectl plugin above it. gen/ (the CSI types) is the CSI edge's alone.
 */
const SRC = path.join(PROJECT_ROOT, 'src');
const ROOT_SHARED = ['errors', 'ids', 'locks', 'exec', 'log', 'units', 'filesystems', 'records', 'paging', 'call-context', 'project', 'heartbeat', 'shutdown-hooks', 'operations'];

function layerOf(file: string): string {
  const rel = path.relative(PROJECT_ROOT, file).replace(/\.(ts|js)$/, '');
  if (rel.startsWith('gen/')) return 'gen';
  const [top, sub] = rel.split('/').slice(1);
  if (sub === undefined) return ROOT_SHARED.includes(top) ? 'shared' : top === 'metrics' ? 'metrics' : 'cli';
  return top;
}

const MAY_IMPORT: Record<string, string[]> = {
  shared: ['shared'],
  host: ['shared', 'host'],
  pool: ['shared', 'host', 'pool'],
  transfer: ['shared', 'host', 'transfer'],
  driver: ['shared', 'host', 'pool', 'transfer', 'driver'],
  // The cluster side issues and checks the transfer's credentials and authorizes its reads.
  cluster: ['shared', 'host', 'pool', 'transfer', 'cluster'],
  csi: ['shared', 'driver', 'csi', 'gen'],
  metrics: ['shared', 'pool', 'csi', 'transfer', 'metrics'],
  // The backup client: a caller of the CSI and Kubernetes SnapshotMetadata APIs, never of the driver's insides.
  backup: ['shared', 'host', 'transfer', 'csi', 'backup'],
  cli: ['shared', 'host', 'pool', 'transfer', 'driver', 'cluster', 'csi', 'metrics', 'backup', 'cli', 'gen'],
  // The kubectl plugin: a reader of the Kubernetes API through kubectl, printing with the CLI's views; bundled alone.
  kubectl: ['shared', 'cli', 'kubectl'],
};

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (p.endsWith('.ts')) out.push(p);
  }
  return out;
}

describe('layers', () => {
  it('no module imports from a floor above its own', async () => {
    const wrong: string[] = [];
    const files = await sources(SRC);
    assert.ok(files.length > 50);
    for (const f of files) {
      const from = layerOf(f);
      assert.ok(MAY_IMPORT[from], `${f}: no floor`);
      for (const m of (await readFile(f, 'utf8')).matchAll(/(?:from|import)\s*\(?\s*'(\.{1,2}\/[^']+)'/g)) {
        const to = layerOf(path.resolve(path.dirname(f), m[1]));
        if (!MAY_IMPORT[from].includes(to)) wrong.push(`${path.relative(PROJECT_ROOT, f)} (${from}) imports ${m[1]} (${to})`);
      }
    }
    assert.deepEqual(wrong, []);
  });

  it('the CSI edge reaches the pool, the node\'s devices and paths, and the locks only through the driver\'s operations', async () => {
    const reaching: string[] = [];
    for (const f of await sources(path.join(SRC, 'csi'))) {
      for (const m of (await readFile(f, 'utf8')).matchAll(/\bctx\.(backend|controllerAttacher|volumeView|blockDevices|paths|locks)\b/g)) {
        reaching.push(`${path.relative(PROJECT_ROOT, f)}: ctx.${m[1]}`);
      }
    }
    assert.deepEqual(reaching, []);
  });
});
