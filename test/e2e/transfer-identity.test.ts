import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { makeCsr, newKeyPair, splitPem } from '../../src/transfer/pki.js';
import { writeAt } from '../helpers/data.js';
import { blockCap } from '../helpers/csi.js';
import { codeOf, MiB, needsRoot, pattern, sha256File } from '../helpers/driver.js';
import { pollUntil } from '../helpers/libvirt.js';
import { httpBase, samples } from '../helpers/metrics.js';
import { NAMESPACE, transferNodes, type TransferNodes } from '../helpers/transfer-nodes.js';

const execFileP = promisify(execFile);

// Who may read what, with the two plugins of transfer-nodes.ts (each its own pod, token and
// certificate from the real transfer signer, the cluster in the FAKE API server), and a third "node"
// played by this test: a credential the signer issues to a pod on node-c, used from this machine.
describe('cross-node reads: each node proves who it is and reads only for its own claims', needsRoot(), () => {
  let nodes: TransferNodes;
  let srcId = '';
  let snapId = '';
  let otherSnap = '';

  before(async () => {
    nodes = await transferNodes('vpi', { signerArgs: ['--overlap', '15s'], aArgs: ['--metrics-address', '127.0.0.1:0'], bArgs: ['--metrics-address', '127.0.0.1:0'] });
    const { a } = nodes;
    srcId = (await a.client.createVolume({ name: 'src', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: {} })).volume!.volume_id;
    await writeAt(path.join(a.poolDir, 'volumes', `${srcId}.img`), MiB, pattern('x', MiB));
    snapId = (await a.client.createSnapshot({ name: 'snap', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
    otherSnap = (await a.client.createSnapshot({ name: 'other', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
    // This machine reaches A's listener through A's link to it (what a third node's pod would do).
    const insideA = nodes.hosts.host!.fromA.replace(/\.1$/, '.2');
    await execFileP('ip', ['route', 'replace', `${nodes.hosts.a.addr}/32`, 'via', insideA]);
  });
  after(async () => {
    await execFileP('ip', ['route', 'del', `${nodes.hosts.a.addr}/32`]).catch(() => undefined);
    for (const s of [snapId, otherSnap].filter(Boolean)) await nodes.a.client.deleteSnapshot({ snapshot_id: s });
    if (srcId) await nodes.a.client.deleteVolume({ volume_id: srcId });
    assert.deepEqual(nodes ? await nodes.remove() : [], []);
  });

  it("a node reads a source for its own selected claim; what was sent and received reaches Prometheus", async () => {
    const { a, b } = nodes;
    const got = await nodes.restore('mine', { snapshot: snapId }, { size: 8 * MiB });
    assert.equal(await sha256File(path.join(b.poolDir, 'volumes', `${got.volume_id}.img`)), await sha256File(path.join(a.poolDir, 'snapshots', `${snapId}.img`)));
    // Each plugin's metrics listen inside its namespace: fetched from there.
    const scrape = async (d: typeof a) => (await execFileP('ip', ['netns', 'exec', d === a ? nodes.hosts.a.ns : nodes.hosts.b.ns, process.execPath, '-e', `fetch(${JSON.stringify(`${httpBase(d)}/metrics`)}).then((r) => r.text()).then((t) => process.stdout.write(t))`])).stdout;
    assert.equal(samples(await scrape(a), 'vpool_csi_transfer_bytes_total').get('{direction="sent"}'), MiB);
    assert.equal(samples(await scrape(b), 'vpool_csi_transfer_bytes_total').get('{direction="received"}'), MiB);
    await b.client.deleteVolume({ volume_id: got.volume_id });
  });

  it("another claim's source, a claim selected onto another node, and a request naming no claim are PERMISSION_DENIED, logged by node and claim", async () => {
    const { a } = nodes;
    // The claim restores `snap`; a CreateVolume for it names `other`: B refuses before asking anyone (A's own check is below, with node-c's credential).
    nodes.claim('asks-other', { snapshot: snapId });
    const wrong = nodes.restore('asks-other', { snapshot: otherSnap }, { size: 8 * MiB, claim: false });
    assert.equal(await codeOf(wrong), 'PERMISSION_DENIED');
    assert.ok(!a.logs.some((l) => l.includes(otherSnap) && l.includes('sending')), 'nothing of the other snapshot was sent');
    // A claim the scheduler put on node-c: B has no business reading for it.
    nodes.claim('on-c', { snapshot: snapId }, { node: 'node-c' });
    assert.equal(await codeOf(nodes.restore('on-c', { snapshot: snapId }, { size: 8 * MiB, claim: false })), 'PERMISSION_DENIED');
    // No claim named (a provisioner without --extra-create-metadata): B does not even ask.
    assert.equal(await codeOf(nodes.restore('anonymous', { snapshot: snapId }, { size: 8 * MiB, anonymous: true })), 'NOT_FOUND');
    const refused = a.logs.filter((l) => l.includes('refused a transfer read'));
    assert.ok(refused.some((l) => l.includes('"node":"node-b"') && l.includes(`${NAMESPACE}/on-c`) && l.includes('selected onto node node-c')), refused.join('\n'));
    assert.equal((await nodes.b.client.listVolumes({})).entries.length, 0, 'nothing made on B');
  });

  it('a pre-provisioned (imported) snapshot resolves the same way: its content names the handle in spec.source', async () => {
    const { api, a, b } = nodes;
    const vs = api.create('volumesnapshots', { metadata: { name: 'imported', namespace: NAMESPACE }, spec: { source: { volumeSnapshotContentName: 'imported-content' } } });
    api.create('volumesnapshotcontents', { metadata: { name: 'imported-content', labels: { 'snapshot.storage.kubernetes.io/managed-by': 'node-a' } }, spec: { driver: 'vpool.csi.dev', deletionPolicy: 'Retain', source: { snapshotHandle: otherSnap }, volumeSnapshotRef: { name: 'imported', namespace: NAMESPACE, uid: vs.metadata.uid } } });
    api.updateStatus('volumesnapshots', 'imported', (o) => void (o.status = { boundVolumeSnapshotContentName: 'imported-content', readyToUse: true }), NAMESPACE);
    api.create('persistentvolumeclaims', { metadata: { name: 'from-imported', namespace: NAMESPACE, annotations: { 'volume.kubernetes.io/selected-node': 'node-b' } }, spec: { accessModes: ['ReadWriteOnce'], dataSource: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: 'imported' }, resources: { requests: { storage: '1Gi' } } } });
    const got = await nodes.restore('from-imported', { snapshot: otherSnap }, { size: 8 * MiB, claim: false });
    assert.equal(await sha256File(path.join(b.poolDir, 'volumes', `${got.volume_id}.img`)), await sha256File(path.join(a.poolDir, 'snapshots', `${otherSnap}.img`)));
    await b.client.deleteVolume({ volume_id: got.volume_id });
  });

  /** A credential for a pod on node-c, issued by the signer through the CSR API with that pod's token; used from this machine. */
  async function nodeC(ip: string) {
    const { api } = nodes;
    const name = `vpool-csi-node-node-c-${Date.now()}`;
    const pod = api.create('pods', { metadata: { name, namespace: NAMESPACE, labels: { 'app.kubernetes.io/name': 'vpool-csi', 'app.kubernetes.io/component': 'node' } }, spec: { nodeName: 'node-c', serviceAccountName: 'vpool-csi-node', containers: [{ name: 'driver', image: 'x' }] } });
    api.updateStatus('pods', name, (p) => void (p.status = { phase: 'Running', podIP: ip, podIPs: [{ ip }] }), NAMESPACE);
    const token = `token-${name}`;
    api.identify(token, { username: `system:serviceaccount:${NAMESPACE}:vpool-csi-node`, extra: { 'authentication.kubernetes.io/pod-name': [name], 'authentication.kubernetes.io/pod-uid': [pod.metadata.uid!], 'authentication.kubernetes.io/node-name': ['node-c'] } });
    const key = await newKeyPair();
    const csr = `c-${name}`;
    const res = await fetch(`${api.url.replace('0.0.0.0', '127.0.0.1')}/apis/certificates.k8s.io/v1/certificatesigningrequests`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
      // The body's claim to be someone else is overwritten by the API server with the token's identity.
      body: JSON.stringify({ metadata: { name: csr }, spec: { request: Buffer.from(await makeCsr(key, 'node-c')).toString('base64'), signerName: 'vpool.dev/transfer', usages: ['digital signature', 'client auth', 'server auth'], username: 'system:admin' } }),
    });
    assert.equal(res.status, 201);
    const cert = await pollUntil(async () => {
      const c = api.get('certificatesigningrequests', csr) as { status?: { certificate?: string } } | undefined;
      return c?.status?.certificate ? Buffer.from(c.status.certificate, 'base64').toString() : undefined;
    }, 15_000, async () => 'the signer did not issue node-c its certificate');
    return { name, key: key.keyPem, cert };
  }

  const trust = () => (nodes.api.get('configmaps', 'vpool-csi-transfer-trust', NAMESPACE) as unknown as { data: Record<string, string> }).data['ca.crt'];
  /** A HEAD for a snapshot, for a claim, with a credential; the status and the reason given. */
  const ask = (cred: { key: string; cert: string }, id: string, claim: string) =>
    new Promise<{ status: number; reason: string }>((resolve, reject) => {
      const [host, port] = nodes.listen.split(':');
      const req = https.request({ host, port: Number(port), method: 'HEAD', path: `/v1/snapshots/${id}?claim=${encodeURIComponent(`${NAMESPACE}/${claim}`)}`, key: cred.key, cert: cred.cert, ca: splitPem(trust()), checkServerIdentity: () => undefined, agent: false, minVersion: 'TLSv1.3', timeout: 10_000 });
      req.once('response', (r) => {
        r.resume();
        resolve({ status: r.statusCode ?? 0, reason: decodeURIComponent(String(r.headers['x-vpool-error'] ?? '')) });
      });
      req.once('error', reject);
      req.end();
    });

  it("a third node's credential works for its own claim only, not from another address, and stops working once its pod is deleted (no restart)", async () => {
    const { a, api } = nodes;
    const pid = a.proc.pid;
    const here = nodes.hosts.host!.fromA;
    const c = await nodeC(here);
    nodes.claim('c-claim', { snapshot: snapId }, { node: 'node-c' });
    assert.equal((await ask(c, snapId, 'c-claim')).status, 200);
    // Another source than the claim's.
    const otherSource = await ask(c, otherSnap, 'c-claim');
    assert.equal(otherSource.status, 403);
    assert.match(otherSource.reason, /restores snapshot .*, not snapshot/);
    // B's claim, asked for with C's credential: refused.
    nodes.claim('b-claim', { snapshot: snapId }, { node: 'node-b' });
    const other = await ask(c, snapId, 'b-claim');
    assert.equal(other.status, 403);
    assert.match(other.reason, /selected onto node node-b, not node-c/);
    // The same credential used from an address that is not its pod's (a stolen key and certificate).
    api.updateStatus('pods', c.name, (p) => void (p.status = { phase: 'Running', podIP: '10.250.0.9', podIPs: [{ ip: '10.250.0.9' }] }), NAMESPACE);
    const stolen = await ask(c, snapId, 'c-claim');
    assert.equal(stolen.status, 403);
    assert.match(stolen.reason, /used from .*not from its pod/);
    api.updateStatus('pods', c.name, (p) => void (p.status = { phase: 'Running', podIP: here, podIPs: [{ ip: here }] }), NAMESPACE);
    assert.equal((await ask(c, snapId, 'c-claim')).status, 200);
    // Claims that do not qualify, whatever they name: a data source in another namespace, a claim bound already, another driver's content.
    const { api: cl } = nodes;
    cl.create('persistentvolumeclaims', { metadata: { name: 'c-cross', namespace: NAMESPACE, annotations: { 'volume.kubernetes.io/selected-node': 'node-c' } }, spec: { accessModes: ['ReadWriteOnce'], dataSourceRef: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: 'x', namespace: 'elsewhere' }, resources: { requests: { storage: '1Gi' } } } });
    assert.match((await ask(c, snapId, 'c-cross')).reason, /another namespace/);
    nodes.claim('c-bound', { snapshot: snapId }, { node: 'node-c' });
    cl.update('persistentvolumeclaims', 'c-bound', (o) => void ((o.spec as { volumeName?: string }).volumeName = 'pv-x'), NAMESPACE);
    assert.match((await ask(c, snapId, 'c-bound')).reason, /bound already/);
    const vs = cl.create('volumesnapshots', { metadata: { name: 'foreign', namespace: NAMESPACE }, spec: {} });
    cl.create('volumesnapshotcontents', { metadata: { name: 'foreign-content' }, spec: { driver: 'other.csi.example', source: { snapshotHandle: snapId }, volumeSnapshotRef: { name: 'foreign', namespace: NAMESPACE, uid: vs.metadata.uid } } });
    cl.updateStatus('volumesnapshots', 'foreign', (o) => void (o.status = { boundVolumeSnapshotContentName: 'foreign-content' }), NAMESPACE);
    cl.create('persistentvolumeclaims', { metadata: { name: 'c-foreign', namespace: NAMESPACE, annotations: { 'volume.kubernetes.io/selected-node': 'node-c' } }, spec: { accessModes: ['ReadWriteOnce'], dataSource: { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: 'foreign' }, resources: { requests: { storage: '1Gi' } } } });
    assert.match((await ask(c, snapId, 'c-foreign')).reason, /of driver other\.csi\.example/);
    // A content whose status handle was rewritten (a node may write content status) does not win over its spec's.
    cl.updateStatus('volumesnapshotcontents', 'foreign-content', (o) => void (o.status = { snapshotHandle: otherSnap }));
    cl.update('volumesnapshotcontents', 'foreign-content', (o) => void ((o.spec as { driver: string }).driver = 'vpool.csi.dev'));
    assert.match((await ask(c, otherSnap, 'c-foreign')).reason, /status\.snapshotHandle .* not its spec's/);
    // Revoked: the pod is deleted (its token and certificate name its UID).
    api.delete('pods', c.name, NAMESPACE);
    const revoked = await ask(c, snapId, 'c-claim');
    assert.equal(revoked.status, 403);
    assert.match(revoked.reason, /no longer exists/);
    assert.equal(a.proc.pid, pid, 'A was not restarted');
    assert.ok(a.logs.some((l) => l.includes('refused a transfer read') && l.includes('"node":"node-c"') && l.includes('no longer exists')));
  });

  it('the signer denies a request from another identity or a pod that is not a node plugin', async () => {
    const { api } = nodes;
    api.identify('token-intruder', { username: 'system:serviceaccount:default:builder', extra: {} });
    const key = await newKeyPair();
    const post = async (name: string, token: string) =>
      fetch(`${api.url.replace('0.0.0.0', '127.0.0.1')}/apis/certificates.k8s.io/v1/certificatesigningrequests`, {
        method: 'POST',
        headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
        body: JSON.stringify({ metadata: { name }, spec: { request: Buffer.from(await makeCsr(key, 'node-a')).toString('base64'), signerName: 'vpool.dev/transfer', usages: ['client auth'] } }),
      });
    assert.equal((await post('intruder', 'token-intruder')).status, 201);
    // A pod of the right ServiceAccount but not of the node DaemonSet (its labels).
    const pod = api.create('pods', { metadata: { name: 'impostor', namespace: NAMESPACE, labels: { app: 'other' } }, spec: { nodeName: 'node-a', serviceAccountName: 'vpool-csi-node', containers: [{ name: 'x', image: 'x' }] } });
    api.identify('token-impostor', { username: `system:serviceaccount:${NAMESPACE}:vpool-csi-node`, extra: { 'authentication.kubernetes.io/pod-name': ['impostor'], 'authentication.kubernetes.io/pod-uid': [pod.metadata.uid!] } });
    assert.equal((await post('impostor', 'token-impostor')).status, 201);
    for (const [name, why] of [['intruder', /not the node plugins' ServiceAccount/], ['impostor', /not a node plugin pod/]] as const) {
      const denied = await pollUntil(async () => {
        const c = api.get('certificatesigningrequests', name) as { status?: { certificate?: string; conditions?: Array<{ type: string; message?: string }> } };
        return c.status?.conditions?.find((x) => x.type === 'Denied');
      }, 15_000, async () => `the signer did not answer ${name}`);
      assert.match(denied.message ?? '', why);
      assert.equal((api.get('certificatesigningrequests', name) as { status?: { certificate?: string } }).status?.certificate, undefined);
    }
  });

  it('a rotated CA is taken up by the running plugins: both CAs trusted during the overlap, restores go on, nothing restarts; the old CA is dropped after it', async () => {
    const { a, b, api } = nodes;
    const pids = [a.proc.pid, b.proc.pid];
    const old = await nodeC(nodes.hosts.host!.fromA); // issued by the old CA
    nodes.claim('old-c', { snapshot: snapId }, { node: 'node-c' });
    const issued = (d: typeof a) => d.logs.filter((l) => l.includes('transfer credential: certificate issued')).length;
    const before = [issued(a), issued(b)];
    api.update('secrets', 'vpool-csi-transfer-ca', (s) => void (s.metadata.annotations = { ...(s.metadata.annotations as object), 'vpool.dev/rotate-ca': 'now' }), NAMESPACE);
    await pollUntil(async () => (splitPem(trust()).length === 2 ? true : undefined), 15_000, async () => 'the trust bundle did not take the new CA');
    // Each plugin renews from the new CA within its refresh.
    await pollUntil(async () => (issued(a) > before[0] && issued(b) > before[1] ? true : undefined), 30_000, async () => 'the plugins did not renew');
    const during = await nodes.restore('during-rotation', { snapshot: snapId }, { size: 8 * MiB });
    await b.client.deleteVolume({ volume_id: during.volume_id });
    assert.equal((await ask(old, snapId, 'old-c')).status, 200, 'the old CA is still trusted during the overlap');
    // After the overlap (15 s here) the bundle holds the new CA alone, and A refuses the old credential at the handshake.
    await pollUntil(async () => (splitPem(trust()).length === 1 ? true : undefined), 40_000, async () => 'the old CA was not dropped');
    await pollUntil(async () => ((await ask(old, snapId, 'old-c').then(() => 'answered', () => 'refused')) === 'refused' ? true : undefined), 15_000, async () => 'A still accepts the old CA');
    const afterwards = await nodes.restore('after-rotation', { snapshot: snapId }, { size: 8 * MiB });
    await b.client.deleteVolume({ volume_id: afterwards.volume_id });
    assert.deepEqual([a.proc.pid, b.proc.pid], pids, 'no plugin restarted');
  });
});
