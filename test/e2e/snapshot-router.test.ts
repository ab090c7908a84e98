import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readFile } from 'node:fs/promises';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { splitPem } from '../../src/transfer/pki.js';
import { blockCap } from '../helpers/csi.js';
import { readAt, writeAt } from '../helpers/data.js';
import { codeOf, MiB, needsRoot, pattern, type Driver } from '../helpers/driver.js';
import { pollUntil } from '../helpers/libvirt.js';
import { resizerStartup, snapshotterCreateGroupSnapshot } from '../helpers/sidecars.js';
import { render } from '../helpers/manifests.js';
import { DRIVER, NAMESPACE, ROUTER_SA, ROUTER_SELECTOR, transferNodes, type Router, type TransferNodes } from '../helpers/transfer-nodes.js';

const SIZE = 16 * MiB;
const execFileP = promisify(execFile);
/** The new flags of each process as the chart renders them for a file pool with group snapshots. */
async function chartFlags(): Promise<{ router: string[]; node: string[]; signer: string[] }> {
  const objects = await render(['groupSnapshots.enabled=true']);
  type C = { name: string; args?: string[] };
  const containers = (name: string) => (objects.find((o) => (o.kind === 'Deployment' || o.kind === 'DaemonSet') && o.metadata.name === name)!.spec as { template: { spec: { containers: C[] } } }).template.spec.containers;
  const router = containers('vpool-csi-controller').find((c) => c.name === 'snapshot-router')!.args!;
  const nodeDriver = containers('vpool-csi-node').find((c) => c.name === 'driver')!.args!;
  const signer = containers('vpool-csi-transfer-signer')[0]!.args!;
  return {
    router,
    node: nodeDriver.filter((a) => a.startsWith('--transfer-router-')),
    signer: signer.filter((a) => a.startsWith('--router-')),
  };
}
let ROUTER_FLAGS: string[] = [];

async function volumeWith(d: Driver, name: string, text: string): Promise<string> {
  const id = (await d.client.createVolume({ name, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: {} })).volume!.volume_id;
  await writeAt(path.join(d.poolDir, 'volumes', `${id}.img`), MiB, pattern(text, 64 * 1024));
  return id;
}

/** A request on a node's transfer listener with a credential directory's certificate, from this host. */
function post(listen: string, dir: { key: string; cert: string; ca: string[] }, urlPath: string, body: unknown, method = 'POST'): Promise<{ status: number; reason: string; body: string }> {
  const [host, port] = listen.split(':');
  return new Promise((resolve, reject) => {
    const payload = Buffer.from(JSON.stringify(body));
    const req = https.request({ host, port: Number(port), method, path: urlPath, key: dir.key, cert: dir.cert, ca: dir.ca, rejectUnauthorized: false, agent: false, minVersion: 'TLSv1.3', timeout: 10_000, headers: { 'content-type': 'application/json', 'content-length': method === 'POST' ? payload.length : 0 } });
    req.once('response', (r) => {
      const chunks: Buffer[] = [];
      r.on('data', (c: Buffer) => chunks.push(c));
      r.once('end', () => resolve({ status: r.statusCode ?? 0, reason: decodeURIComponent(String(r.headers['x-vpool-error'] ?? '')), body: Buffer.concat(chunks).toString() }));
    });
    req.once('error', reject);
    req.end(method === 'POST' ? payload : undefined);
  });
}

const credential = async (dir: string) => ({ key: await readFile(path.join(dir, 'tls.key'), 'utf8'), cert: await readFile(path.join(dir, 'tls.crt'), 'utf8'), ca: splitPem(await readFile(path.join(dir, 'ca.crt'), 'utf8')) });

// Two node plugins (file pools) in their own network namespaces and the snapshot router (run with the
// args the chart renders for it, and the nodes and the signer with the chart's router flags), in a cluster
// the FAKE API server models (transfer-nodes.ts), with the real transfer signer issuing the router's
// certificate. The calls are csi-snapshotter v8.3.0's as it makes them when it runs centrally with
// --feature-gates=CSIVolumeGroupSnapshot=true (a MODEL, from its source, pkg/sidecar-controller and
// pkg/group_snapshotter: the request of snapshotterCreateGroupSnapshot, the create re-sent until the group
// is ready, ListSnapshots by ID for each member's content, DeleteVolumeGroupSnapshot with the members'
// handles, never DeleteSnapshot of a member; CreateSnapshot and DeleteSnapshot for single contents).
describe('the snapshot router: a central csi-snapshotter\'s calls handed to the node holding the volumes', needsRoot(), () => {
  let nodes: TransferNodes;
  let router: Router;
  let routerArgs: string[] = [];
  const vols = { a: [] as string[], b: [] as string[] };
  before(async () => {
    // Each process with the router's flags exactly as the chart renders them.
    const chart = await chartFlags();
    ROUTER_FLAGS = chart.node;
    assert.deepEqual(chart.node, [`--transfer-router-from-cluster=${ROUTER_SELECTOR}`, '--transfer-router-takes=snapshots,modify'], 'the chart\'s selector is the one the FAKE pods are labelled for; groups and classes on: both kinds of call');
    assert.deepEqual(chart.signer, [`--router-service-account=${ROUTER_SA}`, `--router-selector=${ROUTER_SELECTOR}`]);
    routerArgs = chart.router;
    // The snapshot import labels group members' contents for their node (1 s here; 30 s by default).
    const importing = ['--snapshot-import-interval', '1s'];
    // And a third node plugin with no pool at all (its VolumePool is not here: the CRD is missing), as on a node no
    // VolumePool selects: the DaemonSet wants it too, and it must count as holding nothing, not as silent.
    nodes = await transferNodes('vpr', {
      bPort: 9811,
      aArgs: [...ROUTER_FLAGS, ...importing],
      bArgs: [...ROUTER_FLAGS, ...importing],
      signerArgs: chart.signer,
      more: [{ node: 'node-c', side: 'b', port: 9812, args: [...ROUTER_FLAGS, '--pool-from-cluster', 'fast'] }],
    });
    assert.match(nodes.others.get('node-c')!.logs.join('\n'), /VolumePool CRD is not installed/);
    for (const i of [0, 1]) {
      vols.a.push(await volumeWith(nodes.a, `a${i}`, `a-${i}`));
      vols.b.push(await volumeWith(nodes.b, `b${i}`, `b-${i}`));
    }
    // Their PVs, as external-provisioner makes them for a node-local pool (pinned to the node by the topology key):
    // the router believes a node's claim to a volume only where the volume's PV agrees.
    for (const [node, ids] of [['node-a', vols.a], ['node-b', vols.b]] as const) {
      for (const id of ids) nodes.api.create('persistentvolumes', { metadata: { name: `pv-${id}` }, spec: { csi: { driver: DRIVER, volumeHandle: id }, nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'topology.vpool.dev/node', operator: 'In', values: [node] }] }] } } } });
    }
    router = await nodes.startRouter(routerArgs);
  });
  after(async () => {
    if (!nodes) return;
    for (const [d, ids] of [[nodes.a, vols.a], [nodes.b, vols.b]] as const) {
      for (const e of (await d.client.listSnapshots({})).entries) {
        if (e.snapshot!.group_snapshot_id) await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: e.snapshot!.group_snapshot_id, snapshot_ids: [] });
        else await d.client.deleteSnapshot({ snapshot_id: e.snapshot!.snapshot_id });
      }
      for (const v of ids) await d.client.deleteVolume({ volume_id: v });
    }
    assert.deepEqual(await nodes.remove(), []);
  });

  it('answers the sidecar\'s start-up as a controller with snapshots and groups, cuts each group on the node that holds its volumes, and its members restore on either node', async () => {
    const r = router.client;
    assert.equal((await r.getPluginInfo({})).name, DRIVER);
    assert.equal((await r.probe({})).ready?.value, true);
    assert.deepEqual((await r.getPluginCapabilities({})).capabilities.map((c) => c.service?.type).sort(), ['CONTROLLER_SERVICE', 'GROUP_CONTROLLER_SERVICE']);
    assert.deepEqual((await r.controllerGetCapabilities({})).capabilities.map((c) => c.rpc?.type).sort(), ['CREATE_DELETE_SNAPSHOT', 'LIST_SNAPSHOTS', 'MODIFY_VOLUME']);
    assert.deepEqual((await r.groupControllerGetCapabilities({})).capabilities.map((c) => c.rpc?.type), ['CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT']);

    for (const [side, holder, other] of [['a', nodes.a, nodes.b], ['b', nodes.b, nodes.a]] as const) {
      const req = snapshotterCreateGroupSnapshot({ uid: `6c3f1e2a-0000-4000-8000-00000000000${side === 'a' ? 1 : 2}`, name: `db-${side}`, namespace: 'apps', contentName: `groupsnapcontent-${side}`, volumeHandles: vols[side] });
      const made = (await r.createVolumeGroupSnapshot(req)).group_snapshot!;
      assert.equal(made.snapshots.length, 2);
      // The sidecar re-sends the create until ready_to_use: the same group, from the same node.
      const again = (await r.createVolumeGroupSnapshot(req)).group_snapshot!;
      assert.equal(again.group_snapshot_id, made.group_snapshot_id);
      assert.equal(again.ready_to_use, true);
      assert.deepEqual(again.snapshots.map((s) => s.snapshot_id).sort(), made.snapshots.map((s) => s.snapshot_id).sort());
      // Made by the holder, in its pool; the other node has no such group.
      assert.equal((await holder.client.getVolumeGroupSnapshot({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: [] })).group_snapshot!.snapshots.length, 2);
      assert.equal(await codeOf(other.client.getVolumeGroupSnapshot({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: [] })), 'NOT_FOUND');
      // Each member's content: ListSnapshots by its ID, as the sidecar asks for members it did not make.
      for (const m of made.snapshots) {
        const listed = (await r.listSnapshots({ snapshot_id: m.snapshot_id })).entries.map((e) => e.snapshot!);
        assert.equal(listed.length, 1);
        assert.equal(listed[0]!.group_snapshot_id, made.group_snapshot_id);
        assert.equal(listed[0]!.ready_to_use, true);
        assert.equal(listed[0]!.source_volume_id, m.source_volume_id);
      }
      assert.equal((await r.getVolumeGroupSnapshot({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: made.snapshots.map((s) => s.snapshot_id) })).group_snapshot!.group_snapshot_id, made.group_snapshot_id);
      // A member restores on its node with the data its volume had.
      const m0 = made.snapshots.find((s) => s.source_volume_id === vols[side][0])!;
      const restored = (await holder.client.createVolume({ name: `restored-${side}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { snapshot: { snapshot_id: m0.snapshot_id } } })).volume!.volume_id;
      assert.deepEqual(await readAt(path.join(holder.poolDir, 'volumes', `${restored}.img`), MiB, 64 * 1024), pattern(`${side}-0`, 64 * 1024));
      await holder.client.deleteVolume({ volume_id: restored });
      // And on the other node, through the transfer, from the member's content as the snapshot-controller makes it
      // (MODEL, external-snapshotter v8.3.0 buildVolumeSnapshotContentSpecForGroupSnapshot: the group handle
      // annotation, spec.source.volumeHandle, status.snapshotHandle, no node label): the holder's snapshot
      // import labels it for its node, which is how the reader finds where to ask.
      const content = `snapcontent-member-${side}`;
      const vsName = `member-${side}`;
      const vs = nodes.api.create('volumesnapshots', { metadata: { name: vsName, namespace: NAMESPACE }, spec: { source: { volumeSnapshotContentName: content } } });
      nodes.api.create('volumesnapshotcontents', { metadata: { name: content, annotations: { 'groupsnapshot.storage.k8s.io/volumeGroupSnapshotHandle': made.group_snapshot_id } }, spec: { driver: DRIVER, deletionPolicy: 'Delete', source: { volumeHandle: m0.source_volume_id }, volumeSnapshotRef: { kind: 'VolumeSnapshot', name: vsName, namespace: NAMESPACE, uid: vs.metadata.uid } } });
      nodes.api.updateStatus('volumesnapshotcontents', content, (c) => void (c.status = { snapshotHandle: m0.snapshot_id, volumeGroupSnapshotHandle: made.group_snapshot_id, readyToUse: true }));
      nodes.api.updateStatus('volumesnapshots', vsName, (x) => void (x.status = { boundVolumeSnapshotContentName: content, readyToUse: true }), NAMESPACE);
      const holderNode = side === 'a' ? 'node-a' : 'node-b';
      const otherNode = side === 'a' ? 'node-b' : 'node-a';
      await pollUntil(async () => ((nodes.api.get('volumesnapshotcontents', content) as { metadata: { labels?: Record<string, string> } }).metadata.labels?.['snapshot.storage.kubernetes.io/managed-by'] === holderNode ? true : undefined), 30_000, async () => `the member's content was not labelled for ${holderNode}`);
      const claim = `member-restore-${side}`;
      const dataSource = { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: vsName };
      nodes.api.create('persistentvolumeclaims', { metadata: { name: claim, namespace: NAMESPACE, annotations: { 'volume.kubernetes.io/selected-node': otherNode } }, spec: { accessModes: ['ReadWriteOnce'], dataSource, dataSourceRef: dataSource, resources: { requests: { storage: '1Gi' } } } });
      const far = (await other.client.createVolume({ name: claim, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: { 'csi.storage.k8s.io/pvc/name': claim, 'csi.storage.k8s.io/pvc/namespace': NAMESPACE, 'csi.storage.k8s.io/pv/name': `pv-${claim}` }, volume_content_source: { snapshot: { snapshot_id: m0.snapshot_id } } })).volume!.volume_id;
      assert.deepEqual(await readAt(path.join(other.poolDir, 'volumes', `${far}.img`), MiB, 64 * 1024), pattern(`${side}-0`, 64 * 1024), 'the member restored on the other node holds its data');
      await other.client.deleteVolume({ volume_id: far });
      // The sidecar deletes a group with its members' handles; twice is OK; the members went with it.
      await r.deleteVolumeGroupSnapshot({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: made.snapshots.map((s) => s.snapshot_id) });
      await r.deleteVolumeGroupSnapshot({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: made.snapshots.map((s) => s.snapshot_id) });
      assert.deepEqual((await holder.client.listSnapshots({})).entries, []);
      assert.equal(await codeOf(r.getVolumeGroupSnapshot({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: [] })), 'NOT_FOUND');
    }
  });

  it('routes single snapshots too (the central sidecar takes every content): made, listed across nodes page by page, deleted on their node', async () => {
    const r = router.client;
    const sa = (await r.createSnapshot({ name: 'single-a', source_volume_id: vols.a[0]!, parameters: {}, secrets: {} })).snapshot!;
    assert.equal((await r.createSnapshot({ name: 'single-a', source_volume_id: vols.a[0]!, parameters: {}, secrets: {} })).snapshot!.snapshot_id, sa.snapshot_id, 'a retried create lands on the same snapshot');
    const sb = (await r.createSnapshot({ name: 'single-b', source_volume_id: vols.b[1]!, parameters: {}, secrets: {} })).snapshot!;
    // A name's snapshot ID is the name's: taken on A, it is ALREADY_EXISTS for a volume of B (and nothing is made on B).
    assert.equal(await codeOf(r.createSnapshot({ name: 'single-a', source_volume_id: vols.b[0]!, parameters: {}, secrets: {} })), 'ALREADY_EXISTS');
    assert.equal((await nodes.a.client.listSnapshots({ snapshot_id: sa.snapshot_id })).entries.length, 1, 'made on A');
    assert.equal((await nodes.b.client.listSnapshots({ snapshot_id: sb.snapshot_id })).entries.length, 1, 'made on B');
    assert.deepEqual((await r.listSnapshots({ source_volume_id: vols.b[1]! })).entries.map((e) => e.snapshot!.snapshot_id), [sb.snapshot_id]);
    const all = (await r.listSnapshots({})).entries.map((e) => e.snapshot!.snapshot_id);
    assert.deepEqual(all, [sa.snapshot_id, sb.snapshot_id].sort(), 'one list over both nodes, in ID order');
    const paged: string[] = [];
    let token = '';
    do {
      const page = await r.listSnapshots({ max_entries: 1, starting_token: token });
      assert.ok(page.entries.length <= 1);
      paged.push(...page.entries.map((e) => e.snapshot!.snapshot_id));
      token = page.next_token;
    } while (token);
    assert.deepEqual(paged, all);
    assert.deepEqual(
      {
        badToken: await codeOf(r.listSnapshots({ starting_token: 'not-a-token' })),
        unknownId: (await r.listSnapshots({ snapshot_id: 'snap-nope-0123456789abcdef' })).entries.length,
        unknownVolume: await codeOf(r.createSnapshot({ name: 'x', source_volume_id: 'vol-nope-0123456789abcdef', parameters: {}, secrets: {} })),
        hostileVolume: await codeOf(r.createSnapshot({ name: 'x', source_volume_id: '../../etc', parameters: {}, secrets: {} })),
        badName: await codeOf(r.createSnapshot({ name: '../x', source_volume_id: vols.a[0]!, parameters: {}, secrets: {} })),
        deleteUnknown: await codeOf(r.deleteSnapshot({ snapshot_id: 'snap-nope-0123456789abcdef', secrets: {} })),
        noVolumes: await codeOf(r.createVolumeGroupSnapshot({ name: 'g', source_volume_ids: [], parameters: {}, secrets: {} })),
        getUnknownGroup: await codeOf(r.getVolumeGroupSnapshot({ group_snapshot_id: 'group-nope-0123456789abcdef', snapshot_ids: [], secrets: {} })),
        deleteUnknownGroup: await codeOf(r.deleteVolumeGroupSnapshot({ group_snapshot_id: 'group-nope-0123456789abcdef', snapshot_ids: [], secrets: {} })),
        volumes: await codeOf(r.createVolume({ name: 'v', capacity_range: { required_bytes: String(MiB) }, volume_capabilities: [blockCap()], parameters: {} })),
      },
      { badToken: 'ABORTED', unknownId: 0, unknownVolume: 'NOT_FOUND', hostileVolume: 'INVALID_ARGUMENT', badName: 'INVALID_ARGUMENT', deleteUnknown: 'OK', noVolumes: 'INVALID_ARGUMENT', getUnknownGroup: 'NOT_FOUND', deleteUnknownGroup: 'OK', volumes: 'UNIMPLEMENTED' },
    );
    for (const s of [sa, sb]) {
      await r.deleteSnapshot({ snapshot_id: s.snapshot_id, secrets: {} });
      await r.deleteSnapshot({ snapshot_id: s.snapshot_id, secrets: {} });
    }
    assert.deepEqual([...(await nodes.a.client.listSnapshots({})).entries, ...(await nodes.b.client.listSnapshots({})).entries], []);
  });

  it('hands the central csi-resizer\'s ControllerModifyVolume to the node holding the volume (MODEL: external-resizer v2.0.0\'s start-up and modify controller, the chart\'s)', async () => {
    const r = router.client;
    // The resizer's start-up (cmd/csi-resizer, pkg/resizer): a controller service; no controller EXPAND_VOLUME, so
    // NodeGetCapabilities on the same socket must say EXPAND_VOLUME (the trivial resizer: resizes stay the kubelet's)
    // or it exits; MODIFY_VOLUME is what its modify controller calls for.
    const model = await resizerStartup(r);
    assert.deepEqual([model.driverName, model.kind], [DRIVER, 'trivial']);
    assert.ok((await r.controllerGetCapabilities({})).capabilities.some((c) => c.rpc?.type === 'MODIFY_VOLUME'));
    const record = async (d: typeof nodes.a, id: string) => JSON.parse(await readFile(path.join(d.poolDir, 'volumes', `${id}.json`), 'utf8')).parameters as Record<string, string>;
    // pkg/modifycontroller callModifyVolumeOnPlugin: the class's parameters, plus the claim's and PV's names with --extra-modify-metadata.
    const meta = { 'csi.storage.k8s.io/pvc/name': 'db', 'csi.storage.k8s.io/pvc/namespace': 'apps', 'csi.storage.k8s.io/pv/name': `pv-${vols.b[0]}` };
    // These node plugins run in network namespaces whose /sys has no cgroup filesystem: they take no limits, and
    // their refusal comes back through the router as it is, naming the node: INVALID_ARGUMENT, which the resizer
    // marks Infeasible (and retries slowly). The holding of limits is test/vm/io-limits.vm-test.ts's.
    const refused = r.controllerModifyVolume({ volume_id: vols.b[0], mutable_parameters: { readIOPS: '800', writeBytesPerSecond: '10Mi', ...meta }, secrets: {} });
    await assert.rejects(refused, (e: { code?: number; details?: string }) => e.code === 3 && /node node-b: this node cannot hold a volume to I\/O limits/.test(e.details ?? ''));
    assert.equal((await record(nodes.b, vols.b[0])).readIOPS, undefined, 'refused: nothing recorded');
    const bad = r.controllerModifyVolume({ volume_id: vols.a[0], mutable_parameters: { readIOPS: 'lots' }, secrets: {} });
    await assert.rejects(bad, (e: { code?: number; details?: string }) => e.code === 3 && /node node-a: .*readIOPS="lots"/.test(e.details ?? ''));
    assert.equal(await codeOf(r.controllerModifyVolume({ volume_id: 'vol-nowhere-0123456789abcdef', mutable_parameters: { readIOPS: '2' }, secrets: {} })), 'NOT_FOUND');
    assert.equal(await codeOf(r.controllerModifyVolume({ volume_id: 'non-existing-volume-id', mutable_parameters: { readIOPS: '2' }, secrets: {} })), 'NOT_FOUND');
    assert.equal(await codeOf(r.controllerModifyVolume({ volume_id: '', mutable_parameters: { readIOPS: '2' }, secrets: {} })), 'INVALID_ARGUMENT');
    // A class that lifts limits is taken by such a node (a no-op here), and the sidecar's own keys with it.
    await r.controllerModifyVolume({ volume_id: vols.b[0], mutable_parameters: { readIOPS: 'unlimited', writeBytesPerSecond: 'unlimited', ...meta }, secrets: {} });
    assert.deepEqual(Object.keys(await record(nodes.b, vols.b[0])).filter((k) => k.includes('IOPS') || k.includes('csi.storage')), []);
  });

  it('refuses a group over two nodes\' volumes FAILED_PRECONDITION naming them, and makes nothing', async () => {
    const err = await router.client.createVolumeGroupSnapshot({ name: 'spread', source_volume_ids: [vols.a[0]!, vols.b[0]!], parameters: {}, secrets: {} }).catch((e: Error & { code?: number; details?: string }) => e);
    assert.ok(err instanceof Error);
    assert.equal(await codeOf(Promise.reject(err)), 'FAILED_PRECONDITION');
    assert.match((err as { details?: string }).details ?? '', /node-a: .*node-b: |node-b: .*node-a: /);
    assert.equal(await codeOf(router.client.createVolumeGroupSnapshot({ name: 'half', source_volume_ids: [vols.a[0]!, 'vol-nope-0123456789abcdef'], parameters: {}, secrets: {} })), 'NOT_FOUND');
    // A node claiming a volume whose PV is pinned elsewhere is not handed its snapshot (here A holds it and the PV says B:
    // as a node that lies about another node's volume would look to the router).
    const odd = await volumeWith(nodes.a, 'odd', 'odd');
    nodes.api.create('persistentvolumes', { metadata: { name: `pv-${odd}` }, spec: { csi: { driver: DRIVER, volumeHandle: odd }, nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'topology.vpool.dev/node', operator: 'In', values: ['node-b'] }] }] } } } });
    try {
      const refused = await router.client.createSnapshot({ name: 'odd', source_volume_id: odd, parameters: {}, secrets: {} }).catch((e: { details?: string }) => e);
      assert.match((refused as { details?: string }).details ?? '', /node node-a claims volume .*whose PersistentVolume is on node node-b/);
    } finally {
      await nodes.a.client.deleteVolume({ volume_id: odd });
    }
    assert.deepEqual([...(await nodes.a.client.listSnapshots({})).entries, ...(await nodes.b.client.listSnapshots({})).entries], []);
  });

  it('nodes take commands from a live router pod\'s certificate only: a node\'s is refused, the router\'s reads nothing, a deleted pod\'s speaks for no one', async (t) => {
    // This machine reaches A's listener through A's link to it, from an address that is no pod's.
    const insideA = nodes.hosts.host!.fromA.replace(/\.1$/, '.2');
    await execFileP('ip', ['route', 'replace', `${nodes.hosts.a.addr}/32`, 'via', insideA]);
    t.after(() => execFileP('ip', ['route', 'del', `${nodes.hosts.a.addr}/32`]).catch(() => undefined));
    const create = { name: 'forged', source_volume_id: vols.a[0]!, parameters: {}, secrets: {} };
    // A node plugin's own certificate (B's), on A's listener: never a command.
    const fromNode = await post(nodes.listen, await credential(await nodes.credentialDir('node-b')), '/v1/commands/CreateSnapshot', create);
    assert.equal(fromNode.status, 403, JSON.stringify(fromNode));
    assert.match(fromNode.reason, /snapshot router's certificate only/);
    // A router pod's certificate, used from this host rather than from its pod: refused by address.
    const pod = nodes.routerPod();
    const routerCred = await credential(await nodes.credentialOfPod(pod.name, 'snapshot-router'));
    const fromHost = await post(nodes.listen, routerCred, '/v1/commands/CreateSnapshot', create);
    assert.equal(fromHost.status, 403, JSON.stringify(fromHost));
    assert.match(fromHost.reason, /used from .*, not from its pod/);
    // The router's certificate names no node: it reads no volume and asks for no metadata.
    const read = await post(nodes.listen, routerCred, `/v1/volumes/${vols.a[0]}`, {}, 'HEAD');
    assert.equal(read.status, 403);
    const meta = await post(nodes.listen, routerCred, `/v1/metadata/snapshots/snap-nope-0123456789abcdef`, {}, 'HEAD');
    assert.equal(meta.status, 403);
    // Its pod deleted: the certificate speaks for no one, wherever it is used from.
    nodes.api.delete('pods', pod.name, 'vpool');
    const gone = await post(nodes.listen, routerCred, '/v1/commands/CreateSnapshot', create);
    assert.equal(gone.status, 403);
    assert.match(gone.reason, /no longer exists/);
    // The signer gives no router certificate to a pod of the router's account without the router's labels.
    const stray = nodes.routerPod({ 'app.kubernetes.io/name': 'vpool-csi', 'app.kubernetes.io/component': 'debug' });
    await assert.rejects(nodes.credentialOfPod(stray.name, 'snapshot-router'), /denied .*not a snapshot router pod/);
    // A router pod's certificate used from its pod's node (a pod's connection masqueraded as its node's address, as
    // host-network node plugins see it behind a CNI that SNATs) is the router's.
    const onHost = nodes.routerPod();
    nodes.api.updateStatus('pods', onHost.name, (p) => void ((p.status as Record<string, unknown>).hostIP = nodes.hosts.host!.fromA), 'vpool');
    const fromItsNode = await post(nodes.listen, await credential(await nodes.credentialOfPod(onHost.name, 'snapshot-router')), '/v1/commands/Holds', { volumes: [vols.a[0]] });
    assert.equal(fromItsNode.status, 200, JSON.stringify(fromItsNode));
    assert.deepEqual(JSON.parse(fromItsNode.body), { ok: { volumes: [vols.a[0]], snapshots: [], groups: [] } });
    nodes.api.delete('pods', onHost.name, 'vpool');
    assert.deepEqual((await nodes.a.client.listSnapshots({})).entries, [], 'nothing was made');
  });

  it('with the holder down the router answers UNAVAILABLE, not NOT_FOUND; a restarted holder and a restarted router serve the re-sent create', async () => {
    const req = snapshotterCreateGroupSnapshot({ uid: '6c3f1e2a-0000-4000-8000-000000000009', name: 'late', namespace: 'apps', contentName: 'groupsnapcontent-late', volumeHandles: vols.a });
    await nodes.a.stop();
    try {
      assert.equal(await codeOf(router.client.createVolumeGroupSnapshot(req)), 'UNAVAILABLE');
      assert.equal(await codeOf(router.client.deleteSnapshot({ snapshot_id: 'snap-nope-0123456789abcdef', secrets: {} })), 'UNAVAILABLE', 'a delete of what may be on the silent node is not OK');
      // A's pod gone, its successor not yet there (a rolling update, an eviction): the DaemonSet still wants two plugins,
      // so "on no node" is still not an answer, for a delete, a get or a listing.
      for (const p of nodes.api.list('pods', NAMESPACE)) if ((p.spec as { nodeName?: string }).nodeName === 'node-a') nodes.api.delete('pods', p.metadata.name, NAMESPACE);
      const gone = await router.client.deleteSnapshot({ snapshot_id: 'snap-nope-0123456789abcdef', secrets: {} }).catch((e: { code?: number; details?: string }) => e);
      assert.match((gone as { details?: string }).details ?? '', /2 of the 3 node plugins are running/);
      assert.equal(await codeOf(router.client.getVolumeGroupSnapshot({ group_snapshot_id: 'group-nope-0123456789abcdef', snapshot_ids: [], secrets: {} })), 'UNAVAILABLE');
      assert.equal(await codeOf(router.client.listSnapshots({ snapshot_id: 'snap-nope-0123456789abcdef' })), 'UNAVAILABLE');
      assert.equal(await codeOf(router.client.listSnapshots({})), 'UNAVAILABLE');
    } finally {
      await nodes.restartA(ROUTER_FLAGS);
    }
    await router.stop();
    router = await nodes.startRouter(routerArgs);
    // The sidecar retries with backoff: the router finds A's new pod once it lists it.
    const made = await pollUntil(async () => router.client.createVolumeGroupSnapshot(req).then((r) => r.group_snapshot!, () => undefined), 60_000, async () => `the re-sent create never succeeded: ${router.logs.slice(-5).join('\n')}`);
    assert.equal(made.ready_to_use, true);
    assert.equal((await nodes.a.client.getVolumeGroupSnapshot({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: [] })).group_snapshot!.snapshots.length, 2);
    await router.client.deleteVolumeGroupSnapshot({ group_snapshot_id: made.group_snapshot_id, snapshot_ids: made.snapshots.map((s) => s.snapshot_id), secrets: {} });
    assert.deepEqual((await nodes.a.client.listSnapshots({})).entries, []);
  });
});
