import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PROJECT_ROOT } from '../../src/project.js';
import { PLUGIN_READ_TYPES, type FakeApiServer } from '../helpers/fake-apiserver.js';
import { matchGolden, transcript, type Run } from '../helpers/golden.js';
import { startFakeCluster } from '../helpers/kube.js';

const GiB = 1024 ** 3;
const TiB = 1024 * GiB;
const PLUGIN_DIR = path.join(PROJECT_ROOT, 'dist', 'kubectl-plugin');
const KUBECTL_DIR = path.join(PROJECT_ROOT, '.tools', 'bin');

/**
 * kubectl-vpool run by the real kubectl (v1.32 from the npm registry, scripts/helm-from-npm.sh), which
 * finds it on PATH as it finds any plugin, against the FAKE API server (no API server runs here) holding
 * what a two-node cluster would: VolumePools with each node's status, CSIStorageCapacity objects, PVs
 * and their claims, a VolumeAttachment, VolumeSnapshotContents, pods, and the Events the node plugins'
 * orphan checks write. Whole outputs are compared with test/golden/cli/kubectl-*.txt (ages as <age>).
 */
describe('kubectl vpool (the kubectl plugin) against a FAKE API server with two nodes', () => {
  let fake: FakeApiServer;
  let dir = '';
  let kubeconfig = '';
  const run = (args: string[], env: Record<string, string> = {}): Promise<Run> =>
    new Promise((resolve) => {
      execFile('kubectl', args, { env: { ...process.env, PATH: `${PLUGIN_DIR}:${KUBECTL_DIR}:${process.env.PATH}`, KUBECONFIG: kubeconfig, ...env }, timeout: 60_000 }, (err, stdout, stderr) =>
        resolve({ args, stdout, stderr, code: err ? Number((err as { code?: number }).code ?? 1) : 0 }),
      );
    });
  const show = (runs: Run[]) =>
    runs
      .map((r) => transcript(r).replace(/^\$ vpool-csi /, '$ kubectl '))
      .join('\n')
      .replaceAll(dir, '<dir>')
      .replace(/(   |^)(\d+[smhdy](\d+[smhd])?|<invalid>)$/gm, '$1<age>')
      .replace(/127\.0\.0\.1:\d+/g, '127.0.0.1:<port>');

  before(async () => {
    ({ fake } = await startFakeCluster());
    for (const t of PLUGIN_READ_TYPES) fake.addType(t);
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-kplugin-'));
    // Two contexts: the current one points at a port nobody serves, so only --context reaches the fake.
    const dead = await new Promise<number>((r) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const port = (s.address() as net.AddressInfo).port;
        s.close(() => r(port));
      });
    });
    kubeconfig = path.join(dir, 'kubeconfig');
    await writeFile(
      kubeconfig,
      JSON.stringify({
        apiVersion: 'v1',
        kind: 'Config',
        clusters: [
          { name: 'fake', cluster: { server: fake.url } },
          { name: 'gone', cluster: { server: `http://127.0.0.1:${dead}` } },
        ],
        users: [{ name: 'fake', user: { token: 'fake-token' } }],
        contexts: [
          { name: 'fake', context: { cluster: 'fake', user: 'fake', namespace: 'team-a' } },
          { name: 'gone', context: { cluster: 'gone', user: 'fake' } },
        ],
        'current-context': 'gone',
      }),
    );

    const sc = (name: string, provisioner: string) => fake.create('storageclasses', { apiVersion: 'storage.k8s.io/v1', kind: 'StorageClass', metadata: { name }, provisioner } as never);
    sc('vpool-lvm', 'vpool.csi.dev');
    sc('vpool-file', 'vpool.csi.dev');
    sc('other', 'other.csi.example.com');
    fake.create('volumepools', { apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name: 'fast' }, spec: { backend: 'lvm', devices: ['/dev/sdb'] } } as never);
    fake.updateStatus('volumepools', 'fast', (o) => {
      (o as { status?: unknown }).status = {
        ready: '1/2',
        nodes: [
          { node: 'node-a', phase: 'Ready', sizeBytes: 100 * GiB, freeBytes: 60 * GiB + 400 * 1024 ** 2, volumes: 3, snapshots: 1, thinPool: { name: 'thin', dataPercent: 45, metadataPercent: 12 } },
          { node: 'node-b', phase: 'Failed', sizeBytes: 2.5 * TiB, freeBytes: 0, volumes: 0, snapshots: 0, lastError: 'device /dev/sdb is missing' },
        ],
      };
    });
    const cap = (name: string, node: string, storageClassName: string, capacity: string) =>
      fake.create('csistoragecapacities', { apiVersion: 'storage.k8s.io/v1', kind: 'CSIStorageCapacity', metadata: { name, namespace: 'vpool-csi' }, nodeTopology: { matchLabels: { 'topology.vpool.dev/node': node } }, storageClassName, capacity } as never);
    cap('csisc-a', 'node-a', 'vpool-lvm', '60Gi');
    cap('csisc-c', 'node-c', 'vpool-file', '10Pi');
    cap('csisc-c-other', 'node-c', 'other', '1Ti');
    const pv = (name: string, driver: string, node: string, size: string, claim: [string, string] | null, phase: string) => {
      fake.create('persistentvolumes', {
        apiVersion: 'v1',
        kind: 'PersistentVolume',
        metadata: { name },
        spec: {
          csi: { driver, volumeHandle: `vol-${name}-0123456789abcdef` },
          capacity: { storage: size },
          storageClassName: driver === 'vpool.csi.dev' ? 'vpool-lvm' : 'other',
          ...(claim ? { claimRef: { namespace: claim[0], name: claim[1] } } : {}),
          nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'topology.vpool.dev/node', operator: 'In', values: [node] }] }] } },
        },
      } as never);
      fake.updateStatus('persistentvolumes', name, (o) => ((o as { status?: unknown }).status = { phase }));
    };
    pv('pvc-1111', 'vpool.csi.dev', 'node-a', '10Gi', ['team-a', 'data'], 'Bound');
    pv('pvc-2222', 'vpool.csi.dev', 'node-b', '0', ['team-b', 'logs'], 'Released');
    pv(`pvc-${'9'.repeat(60)}`, 'vpool.csi.dev', 'node-a', '768Mi', ['team-a', 'a-claim-with-a-rather-long-name-for-a-table'], 'Bound');
    pv('pvc-3333', 'other.csi.example.com', 'node-a', '1Gi', ['team-a', 'not-ours'], 'Bound');
    fake.create('volumeattachments', { apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttachment', metadata: { name: 'csi-aaaa' }, spec: { attacher: 'vpool.csi.dev', nodeName: 'node-a', source: { persistentVolumeName: 'pvc-1111' } } } as never);
    fake.updateStatus('volumeattachments', 'csi-aaaa', (o) => ((o as { status?: unknown }).status = { attached: true }));
    for (const n of ['nightly', 'weekly'])
      fake.create('volumesnapshotcontents', { apiVersion: 'snapshot.storage.k8s.io/v1', kind: 'VolumeSnapshotContent', metadata: { name: `snapcontent-${n}` }, spec: { driver: 'vpool.csi.dev', source: { volumeHandle: 'vol-pvc-1111-0123456789abcdef' }, deletionPolicy: 'Delete', volumeSnapshotRef: { namespace: 'team-a', name: n } } } as never);
    const pod = (name: string, namespace: string, claim: string, phase: string) => {
      fake.create('pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace }, spec: { nodeName: 'node-a', volumes: [{ name: 'v', persistentVolumeClaim: { claimName: claim } }] } } as never);
      fake.updateStatus('pods', name, (o) => ((o as { status?: unknown }).status = { phase }), namespace);
    };
    pod('web-0', 'team-a', 'data', 'Running');
    pod('backup-job', 'team-a', 'data', 'Succeeded');
    const event = (name: string, kind: string, object: string, reason: string, message: string, at: string, component = 'vpool-csi-node') =>
      fake.create('events', { apiVersion: 'v1', kind: 'Event', metadata: { name, namespace: 'default' }, involvedObject: { apiVersion: 'v1', kind, name: object }, type: 'Warning', reason, message, lastTimestamp: at, source: { component, host: object }, reportingComponent: component } as never);
    event('e1', 'Node', 'node-a', 'OrphanVolume', 'volume vol-gone-0123456789abcdef (gone, 1073741824 bytes, created 2026-11-01T00:00:00Z) has no PersistentVolume: not deleted (dry run)', '2026-11-02T00:00:00Z');
    event('e2', 'Node', 'node-a', 'OrphanVolume', 'volume vol-gone-0123456789abcdef (gone, 1073741824 bytes, created 2026-11-01T00:00:00Z) has no PersistentVolume: reported', '2026-11-03T00:00:00Z');
    event('e3', 'Node', 'node-b', 'UnfinishedVolume', 'volume vol-half-fedcba9876543210 (half, 536870912 bytes, created 2026-11-01T00:00:00Z) is what a crashed clone or restore left unfinished: deleted', '2026-11-03T00:00:00Z');
    event('e4', 'PersistentVolume', 'pvc-2222', 'VolumeMissing', 'volume vol-pvc-2222-0123456789abcdef is not in the pool on node node-b', '2026-11-03T00:00:00Z');
    event('e5', 'Node', 'node-b', 'OrphanSnapshot', 'snapshot snap-old-00112233aabbccdd (old, created 2026-10-01T00:00:00Z) has no VolumeSnapshotContent: reported', '2026-11-03T00:00:00Z');
    event('e6', 'Node', 'node-a', 'Scheduled', 'not ours', '2026-11-03T00:00:00Z');
    // Anyone may write an Event with the driver's reasons: one from another component is not shown, nor its escape sequence.
    event('e7', 'Node', 'node-a', 'OrphanVolume', 'volume vol-fake-0123456789abcdef (x) has no PersistentVolume: \u001b]0;pwned\u0007reported', '2026-11-03T00:00:00Z', 'someone-else');
    event('e8', 'Node', 'node-b', 'OrphanVolume', 'volume vol-esc-0123456789abcdef (x) has no PersistentVolume: \u001b[31mreported', '2026-11-03T00:00:00Z', 'vpool-csi-reconcile');
  });
  after(async () => {
    await fake?.stop();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('pools: each node of each VolumePool, and a node the scheduler sees capacity on from flags; --context honoured', async () => {
    const runs = [await run(['vpool', 'pools', '--context', 'fake']), await run(['vpool', 'pools', '--context', 'fake', '-o', 'wide']), await run(['vpool', 'pools', '--context', 'fake', '-o', 'json'])];
    assert.deepEqual(runs.map((r) => r.code), [0, 0, 0], runs.map((r) => r.stderr).join(''));
    await matchGolden('kubectl-pools', show(runs));
  });

  it("volumes: the context's namespace by default, -n, -A; attachments, running pods, snapshots; other drivers' PVs left out", async () => {
    const runs = [
      await run(['vpool', 'volumes', '--context', 'fake']),
      await run(['vpool', 'volumes', '--context', 'fake', '-n', 'team-b', '-o', 'wide']),
      await run(['vpool', 'volumes', '--context', 'fake', '-A']),
      await run(['vpool', 'volumes', '--context', 'fake', '-A', '-o', 'name']),
      await run(['vpool', 'volumes', '--context', 'fake', '-n', 'nobody']),
    ];
    assert.deepEqual(runs.map((r) => r.code), [0, 0, 0, 0, 0], runs.map((r) => r.stderr).join(''));
    await matchGolden('kubectl-volumes', show(runs));
  });

  it("orphans: the newest report of each, from the Events the driver's node plugins and reconcile wrote (no one else's), control characters shown as '?'", async () => {
    const runs = [await run(['vpool', 'orphans', '--context', 'fake']), await run(['vpool', 'orphans', '--context', 'fake', '-o', 'wide'])];
    assert.deepEqual(runs.map((r) => r.code), [0, 0]);
    assert.doesNotMatch(runs[1]!.stdout, /vol-fake|\u001b/, "another component's Event is not shown; no escape sequence reaches the terminal");
    assert.match(runs[1]!.stdout, /vol-esc-0123456789abcdef .*\?\[31mreported/);
    await matchGolden('kubectl-orphans', show(runs));
  });

  it('refusals: no API (exit 4, kubectl\'s reason), an unknown command and an unknown flag (exit 2)', async () => {
    const runs = [await run(['vpool', 'pools']), await run(['vpool', 'snapshots', '--context', 'fake']), await run(['vpool', 'pools', '--bogus'])];
    assert.deepEqual(runs.map((r) => r.code), [4, 2, 2]);
    assert.match(runs[0]!.stderr, /^kubectl vpool: reading the Kubernetes API failed: .*refused/);
    await matchGolden('kubectl-refusals', show(runs));
  });
});
