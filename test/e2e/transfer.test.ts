import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadCsi } from '../../src/csi/proto.js';
import { promisify } from 'node:util';
import { blockCap } from '../helpers/csi.js';
import { makeCa } from '../helpers/certs.js';
import { writeAt } from '../helpers/data.js';
import { codeOf, finish, MiB, needsRoot, pattern, sha256File, startDriver, tempDir, type Driver } from '../helpers/driver.js';
import { pollUntil } from '../helpers/libvirt.js';
import { twoHosts, type TwoHosts } from '../helpers/netns.js';
import { BUILTIN_TYPES, FakeApiServer } from '../helpers/fake-apiserver.js';
import { render } from '../helpers/manifests.js';
import { httpBase, samples } from '../helpers/metrics.js';

const execFileP = promisify(execFile);
const PORT = 9810;
const SIZE = 64 * MiB;

// Two node plugins, each in its own network namespace (a veth pair between them, nothing else on
// that network) and with its own file pool: what B does when the source of a CreateVolume is in A's
// pool. The peers are named by flag, as a test may; the chart names them from the cluster.
describe('restore and clone across nodes: file pool to file pool over mutual TLS', needsRoot(), () => {
  let hosts: TwoHosts;
  let certs: string;
  let a: Driver;
  let b: Driver;
  let tlsA: string;
  let tlsB: string;
  const imageOf = (d: Driver, kind: 'volumes' | 'snapshots', id: string) => path.join(d.poolDir, kind, `${id}.img`);
  const startA = (extra: string[] = [], dir?: string) =>
    startDriver({ dir, nodeId: 'node-a', wrap: hosts.wrap(hosts.a.ns), args: ['--transfer-listen', `${hosts.a.addr}:${PORT}`, '--transfer-tls-dir', tlsA, '--transfer-stall-timeout', '3s', ...extra] });
  const startB = (tls = tlsB, dir?: string) => startDriver({ dir, nodeId: 'node-b', wrap: hosts.wrap(hosts.b.ns), args: ['--transfer-peer', `${hosts.a.addr}:${PORT}`, '--transfer-tls-dir', tls, '--transfer-stall-timeout', '3s'] });
  const create = (d: Driver, name: string, source: { snapshot?: string; volume?: string }) =>
    d.client.createVolume({
      name,
      capacity_range: { required_bytes: String(SIZE) },
      volume_capabilities: [blockCap()],
      parameters: {},
      volume_content_source: source.snapshot ? { snapshot: { snapshot_id: source.snapshot } } : { volume: { volume_id: source.volume! } },
    });
  /** Bytes the image allocates on disk. */
  const allocated = async (file: string) => (await stat(file)).blocks * 512;

  before(async () => {
    hosts = await twoHosts('vpt');
    certs = await tempDir('vpool-certs-');
    const ca = await makeCa(certs, 'driver');
    tlsA = await ca.node('node-a');
    tlsB = await ca.node('node-b');
    a = await startA();
    b = await startB();
  });
  after(async () => {
    const left = [...(a ? await finish(a) : []), ...(b ? await finish(b) : [])];
    await hosts?.remove();
    if (certs) await rm(certs, { recursive: true, force: true });
    assert.deepEqual(left, []);
  });

  let srcId = '';
  let snapId = '';
  it('restores on B a snapshot A holds, and clones on B a volume A holds: the same bytes, holes kept as holes', async () => {
    srcId = (await a.client.createVolume({ name: 'src', capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: {} })).volume!.volume_id;
    // Data in two places of a sparse 64 MiB volume: 3 MiB at 0 and 12 MiB at 40 MiB (15 frames, each
    // past the socket's buffer: the sender waits for it to drain 15 times).
    await writeAt(imageOf(a, 'volumes', srcId), 0, pattern('head', 3 * MiB));
    await writeAt(imageOf(a, 'volumes', srcId), 40 * MiB, pattern('tail', 12 * MiB));
    snapId = (await a.client.createSnapshot({ name: 'snap', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
    // Written after the snapshot: the restore must not have it, the clone must.
    await writeAt(imageOf(a, 'volumes', srcId), 20 * MiB, pattern('later', MiB));

    const restored = (await create(b, 'restored', { snapshot: snapId })).volume!;
    assert.equal(restored.content_source?.snapshot?.snapshot_id, snapId);
    // Its 15 MiB went to B's disk around the page cache (aligned frames are written O_DIRECT); read before the checksum reads it into the cache.
    const { stdout: cached } = await execFileP('fincore', ['--bytes', '--noheadings', '--output', 'RES', imageOf(b, 'volumes', restored.volume_id)]);
    assert.ok(Number(cached.trim()) < MiB, `B's page cache holds ${cached.trim()} bytes of the restored volume`);
    assert.equal(await sha256File(imageOf(b, 'volumes', restored.volume_id)), await sha256File(imageOf(a, 'snapshots', snapId)));
    const [had, got] = [await allocated(imageOf(a, 'snapshots', snapId)), await allocated(imageOf(b, 'volumes', restored.volume_id))];
    assert.ok(Math.abs(got - had) <= had * 0.05, `allocated on B ${got} within 5% of A's ${had}`);
    assert.ok(got < 20 * MiB, 'the holes stayed holes');
    // Each wait for the socket to drain takes its listeners away with it (Node warns past ten left behind).
    assert.ok(!a.logs.some((l) => l.includes('MaxListenersExceededWarning')), 'no listener left behind on the sender');

    const clone = (await create(b, 'clone', { volume: srcId })).volume!;
    assert.equal(await sha256File(imageOf(b, 'volumes', clone.volume_id)), await sha256File(imageOf(a, 'volumes', srcId)));
    // Retried (the provisioner's retry after a lost answer): the same volume, nothing streamed again.
    const again = (await create(b, 'clone', { volume: srcId })).volume!;
    assert.equal(again.volume_id, clone.volume_id);
    assert.ok(b.logs.some((l) => l.includes('received a volume from a peer') && l.includes(srcId)));
    // A's copy of the volume for the stream is gone; A's pool holds what it held.
    assert.deepEqual(await readdir(path.join(a.poolDir, '.tmp')), []);
    for (const v of [restored, clone]) await b.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('a source no node holds is NOT_FOUND, and a peer of another CA or with no certificate is refused and logged', async () => {
    assert.equal(await codeOf(create(b, 'nowhere', { snapshot: snapId.replace(/.$/, (c) => (c === '0' ? '1' : '0')) })), 'NOT_FOUND');
    const rogue = await makeCa(certs, 'rogue');
    const rogueB = await startB(await rogue.node('node-b'));
    try {
      assert.equal(await codeOf(create(rogueB, 'stolen', { snapshot: snapId })), 'NOT_FOUND');
    } finally {
      await finish(rogueB);
    }
    // No client certificate at all: the handshake fails.
    const plain = await execFileP('ip', ['netns', 'exec', hosts.b.ns, 'openssl', 's_client', '-connect', `${hosts.a.addr}:${PORT}`, '-servername', 'vpool-csi-transfer', '-CAfile', path.join(tlsB, 'ca.crt')], { timeout: 20_000 }).then(
      (r) => r.stdout,
      (e: { stdout?: string }) => e.stdout ?? '',
    );
    assert.doesNotMatch(plain, /HTTP\/1\.1 200/);
    const refused = a.logs.filter((l) => l.includes('refused a transfer peer'));
    assert.ok(refused.length >= 2, `A logged both refusals: ${refused.join('\n')}`);
  });

  it('DeleteSnapshot on A waits for a stream of that snapshot to end', async () => {
    // A slow sender (--transfer-rate) keeps the stream open for a few seconds.
    await a.stop();
    a = await startA(['--transfer-rate', `${4 * MiB}`], a.dir);
    const restoring = create(b, 'restored-slow', { snapshot: snapId });
    await new Promise((r) => setTimeout(r, 500));
    let deletedAt = 0;
    const deleting = a.client.deleteSnapshot({ snapshot_id: snapId }).then(() => (deletedAt = Date.now()));
    const restored = (await restoring).volume!;
    const restoredAt = Date.now();
    await deleting;
    assert.ok(deletedAt >= restoredAt - 200, 'the delete finished after the stream');
    assert.ok(b.logs.some((l) => l.includes('received a volume from a peer') && l.includes(snapId)));
    await b.client.deleteVolume({ volume_id: restored.volume_id });
  });

  // external-provisioner calls CreateVolume with a deadline (the chart: --timeout=120s) and retries
  // with the same name after DEADLINE_EXCEEDED; a restore of a large volume takes longer than that.
  it("a restore that outlasts its call's deadline goes on: retries are ABORTED until it is done, then get the volume", async () => {
    const snap = (await a.client.createSnapshot({ name: 'snap-deadline', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
    const want = await sha256File(imageOf(a, 'snapshots', snap));
    const ctl = new (loadCsi().csi.v1.Controller)(`unix://${b.socket}`, grpc.credentials.createInsecure());
    const req = { name: 'restored-late', capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { snapshot: { snapshot_id: snap } } };
    const call = (deadlineMs: number) => new Promise<{ code: number; id?: string }>((resolve) => ctl.CreateVolume(req, { deadline: Date.now() + deadlineMs }, (err, res) => resolve({ code: err?.code ?? grpc.status.OK, id: res?.volume?.volume_id })));
    try {
      // 16 MiB at 4 MiB/s: about four seconds; the first call gives up after one.
      assert.equal((await call(1000)).code, grpc.status.DEADLINE_EXCEEDED);
      const meanwhile = await call(500);
      assert.notEqual(meanwhile.code, grpc.status.OK, 'a retry while the restore runs is not answered with a volume');
      let done: { code: number; id?: string } = { code: -1 };
      for (let i = 0; i < 60 && done.code !== grpc.status.OK; i++) {
        done = await call(2000);
        if (done.code !== grpc.status.OK) {
          assert.ok([grpc.status.ABORTED, grpc.status.DEADLINE_EXCEEDED].includes(done.code), `a retry in the meantime: ABORTED or out of time, not ${done.code}`);
          await new Promise((r) => setTimeout(r, 500));
        }
      }
      assert.equal(done.code, grpc.status.OK);
      assert.equal(await sha256File(imageOf(b, 'volumes', done.id!)), want);
      assert.equal(b.logs.filter((l) => l.includes('received a volume from a peer') && l.includes(snap)).length, 1, 'streamed once, not once per retry');
      await b.client.deleteVolume({ volume_id: done.id! });
      await a.client.deleteSnapshot({ snapshot_id: snap });
    } finally {
      ctl.close();
    }
  });

  it('a cut link: both sides give up after --transfer-stall-timeout, B lists nothing, A lets go of the snapshot, and the retry after the link is back is right', async () => {
    const snap = (await a.client.createSnapshot({ name: 'snap-cut', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
    const want = await sha256File(imageOf(a, 'snapshots', snap));
    const started = Date.now();
    const first = codeOf(create(b, 'after-cut', { snapshot: snap }));
    await new Promise((r) => setTimeout(r, 700));
    await hosts.link(false); // no reset reaches either side: only the stall timeout (3 s here) ends the stream
    try {
      assert.equal(await first, 'UNAVAILABLE');
      assert.ok(Date.now() - started < 15_000, 'B gave up within the stall timeout');
      assert.equal((await b.client.listVolumes({})).entries.length, 0, 'nothing listed on B');
      assert.deepEqual(await readdir(path.join(b.poolDir, '.tmp')), [], 'nothing half-written left on B');
      await pollUntil(async () => (a.logs.some((l) => l.includes('a transfer failed on the sending side') && l.includes(snap)) ? true : undefined), 15_000, async () => 'A did not give up the stream');
    } finally {
      await hosts.link(true);
    }
    // A released the snapshot (a stream still holding it would keep this one waiting on its lock).
    const again = (await create(b, 'after-cut', { snapshot: snap })).volume!;
    assert.equal(await sha256File(imageOf(b, 'volumes', again.volume_id)), want);
    await b.client.deleteVolume({ volume_id: again.volume_id });
    await a.client.deleteSnapshot({ snapshot_id: snap });
    assert.deepEqual(await readdir(path.join(a.poolDir, '.tmp')), [], 'nothing left on A');
  });

  it('kill -9 of A or of B mid-stream: B lists nothing of it, and the retry after the restart is right', async () => {
    snapId = (await a.client.createSnapshot({ name: 'snap-2', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
    const want = await sha256File(imageOf(a, 'snapshots', snapId));
    // A dies while sending.
    const first = codeOf(create(b, 'after-kill', { snapshot: snapId }));
    await new Promise((r) => setTimeout(r, 700));
    await a.stop('SIGKILL');
    assert.equal(await first, 'UNAVAILABLE');
    assert.equal((await b.client.listVolumes({})).entries.length, 0, 'nothing listed on B');
    assert.deepEqual(await readdir(path.join(b.poolDir, '.tmp')), [], 'nothing half-written left on B');
    a = await startA(['--transfer-rate', `${4 * MiB}`], a.dir);
    // B dies while receiving.
    const second = create(b, 'after-kill', { snapshot: snapId }).then(() => 'answered', () => 'cut off');
    await new Promise((r) => setTimeout(r, 700));
    await b.stop('SIGKILL');
    assert.equal(await second, 'cut off');
    // A notices at its next write (it may be pausing for --transfer-rate), and releases the snapshot.
    await pollUntil(async () => (a.logs.some((l) => l.includes('a transfer failed on the sending side') && l.includes(snapId)) ? true : undefined), 10_000, async () => 'A did not see the receiver go');
    b = await startB(tlsB, b.dir);
    assert.equal((await b.client.listVolumes({})).entries.length, 0, 'nothing listed on B after its restart');
    const done = (await create(b, 'after-kill', { snapshot: snapId })).volume!;
    assert.equal(await sha256File(imageOf(b, 'volumes', done.volume_id)), want);
    await b.client.deleteVolume({ volume_id: done.volume_id });
    await a.client.deleteSnapshot({ snapshot_id: snapId });
    await a.client.deleteVolume({ volume_id: srcId });
    assert.deepEqual(await readdir(path.join(a.poolDir, '.tmp')), [], 'nothing left on A');
  });
});

// The chart's way of naming peers: the node plugin pods, from the Kubernetes API (a FAKE API server:
// none can run here; it lists pods by label selector as the real one does). Both plugins on this
// host's network, A at 127.0.0.1, as a pod IP would be.
describe('transfer peers from the cluster: the running node plugin pods of the driver, at their transfer port', needsRoot(), () => {
  it('B finds A\'s pod by label and restores A\'s snapshot; its own pod, a pending pod and other pods are not asked', async () => {
    const certsDir = await tempDir('vpool-certs-');
    const api = await new FakeApiServer([...BUILTIN_TYPES, { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, statusSubresource: true }]).start();
    const ca = await makeCa(certsDir, 'driver');
    const port = 19000 + (process.pid % 1000);
    const pod = (name: string, node: string, phase: string, labels: Record<string, string>, ip = '127.0.0.1') => {
      api.create('pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: 'vpool', labels }, spec: { nodeName: node, containers: [{ name: 'driver', image: 'x', ports: [{ name: 'transfer', containerPort: port }] }] } });
      api.updateStatus('pods', name, (o) => void (o.status = { phase, podIP: ip }), 'vpool');
    };
    const labels = { 'app.kubernetes.io/name': 'vpool-csi', 'app.kubernetes.io/component': 'node' };
    pod('node-a-plugin', 'node-a', 'Running', labels);
    pod('node-b-plugin', 'node-b', 'Running', labels, '127.0.0.9'); // B itself
    pod('node-c-plugin', 'node-c', 'Pending', labels, '127.0.0.8');
    pod('other', 'node-d', 'Running', { 'app.kubernetes.io/name': 'something-else' }, '127.0.0.7');
    const a = await startDriver({ nodeId: 'node-a', args: ['--transfer-listen', `127.0.0.1:${port}`, '--transfer-tls-dir', await ca.node('node-a'), '--metrics-address', '127.0.0.1:0'] });
    const b = await startDriver({
      nodeId: 'node-b',
      env: { POD_NAMESPACE: 'vpool' },
      args: ['--kubeconfig', await api.kubeconfig(certsDir), '--transfer-peers-from-cluster', 'app.kubernetes.io/name=vpool-csi,app.kubernetes.io/component=node', '--transfer-tls-dir', await ca.node('node-b'), '--volume-pools', 'off', '--metrics-address', '127.0.0.1:0'],
    });
    try {
      const src = (await a.client.createVolume({ name: 'src', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: {} })).volume!;
      await writeAt(path.join(a.poolDir, 'volumes', `${src.volume_id}.img`), MiB, pattern('x', MiB));
      const snap = (await a.client.createSnapshot({ name: 'snap', source_volume_id: src.volume_id, parameters: {} })).snapshot!;
      const got = (await b.client.createVolume({ name: 'restored', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { snapshot: { snapshot_id: snap.snapshot_id } } })).volume!;
      assert.equal(await sha256File(path.join(b.poolDir, 'volumes', `${got.volume_id}.img`)), await sha256File(path.join(a.poolDir, 'snapshots', `${snap.snapshot_id}.img`)));
      assert.ok(!b.logs.some((l) => l.includes('a transfer peer did not answer')), 'only A was asked (the others would not answer)');
      // What was sent and received reaches Prometheus: the one MiB of data, once each way.
      const scrape = async (d: Driver) => (await (await fetch(`${httpBase(d)}/metrics`)).text());
      assert.equal(samples(await scrape(a), 'vpool_csi_transfer_bytes_total').get('{direction="sent"}'), MiB);
      assert.equal(samples(await scrape(b), 'vpool_csi_transfer_bytes_total').get('{direction="received"}'), MiB);
      assert.equal(samples(await scrape(b), 'vpool_csi_transfer_duration_seconds_count').get('{direction="received",result="ok"}'), 1);
      await b.client.deleteVolume({ volume_id: got.volume_id });
      await a.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
      await a.client.deleteVolume({ volume_id: src.volume_id });
    } finally {
      const left = [...(await finish(a)), ...(await finish(b))];
      await api.stop();
      await rm(certsDir, { recursive: true, force: true });
      assert.deepEqual(left, []);
    }
  });
});

// The chart's certificates (Helm's genCA and genSignedCert, as `helm template` renders them) are ones
// the transfer's mutual TLS accepts: written out as the Secret volume would mount them.
describe('transfer with the TLS Secret the chart renders', needsRoot(), () => {
  it('a restore between two node plugins using the chart\'s CA and certificate', async () => {
    const objects = await render([]);
    const secret = objects.find((o) => o.kind === 'Secret' && o.metadata?.name === 'vpool-csi-transfer-tls') as { data: Record<string, string> } | undefined;
    assert.ok(secret);
    const dir = await tempDir('vpool-chart-tls-');
    for (const [k, v] of Object.entries(secret.data)) await writeFile(path.join(dir, k), Buffer.from(v, 'base64'), { mode: 0o400 });
    const port = 20000 + (process.pid % 1000);
    const a = await startDriver({ nodeId: 'node-a', args: ['--transfer-listen', `127.0.0.1:${port}`, '--transfer-tls-dir', dir] });
    const b = await startDriver({ nodeId: 'node-b', args: ['--transfer-peer', `127.0.0.1:${port}`, '--transfer-tls-dir', dir] });
    try {
      const src = (await a.client.createVolume({ name: 'src', capacity_range: { required_bytes: String(4 * MiB) }, volume_capabilities: [blockCap()], parameters: {} })).volume!;
      await writeAt(path.join(a.poolDir, 'volumes', `${src.volume_id}.img`), 0, pattern('chart', MiB));
      const clone = (await b.client.createVolume({ name: 'clone', capacity_range: { required_bytes: String(4 * MiB) }, volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { volume: { volume_id: src.volume_id } } })).volume!;
      assert.equal(await sha256File(path.join(b.poolDir, 'volumes', `${clone.volume_id}.img`)), await sha256File(path.join(a.poolDir, 'volumes', `${src.volume_id}.img`)));
      await b.client.deleteVolume({ volume_id: clone.volume_id });
      await a.client.deleteVolume({ volume_id: src.volume_id });
    } finally {
      const left = [...(await finish(a)), ...(await finish(b))];
      await rm(dir, { recursive: true, force: true });
      assert.deepEqual(left, []);
    }
  });
});
