import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { kindOfStatus, toStatus } from '../../src/csi/rpc.js';
import { DriverError, type ErrorKind } from '../../src/errors.js';
import { CommandClient, commandRoute, parseHolds, type CommandPeer } from '../../src/transfer/commands.js';
import { TransferCredentials } from '../../src/transfer/credentials.js';
import { identityFromSan, routerFromSan } from '../../src/transfer/identity.js';
import { uriPki } from '../helpers/certs.js';

const VOL = 'vol-one-0123456789abcdef';
const SNAP = 'snap-one-0123456789abcdef';
const UID: Record<string, string> = { 'node-a': 'aaaa-0001', 'node-c': 'cccc-0003' };
const kindOf = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof DriverError ? `${e.kind}: ${e.message}` : `other: ${String(e)}`));

describe('snapshot commands: the route, the router identity, and what the router accepts from a node (FAKE nodes)', () => {
  let dir: string;
  let creds: TransferCredentials;
  let nodeCert: { key: string; cert: string };
  let routerCert: { key: string; cert: string };
  const servers: https.Server[] = [];
  const peers: CommandPeer[] = [];
  /** What each FAKE node answers (a real plugin's answers are in test/e2e/snapshot-router.test.ts). */
  const scripts: Array<(path: string, body: string, res: import('node:http').ServerResponse) => void> = [];

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-cmd-'));
    const p = await uriPki(dir);
    routerCert = await p.issueRouter('vpool-csi-controller-1', 'dddd-0004');
    nodeCert = await p.issue('node-b', 'bbbb-0002');
    creds = new TransferCredentials();
    creds.set({ key: routerCert.key, cert: routerCert.cert, trust: [p.ca] });
    for (const [i, node] of ['node-a', 'node-c'].entries()) {
      const c = await p.issue(node, UID[node]!);
      const server = https.createServer({ key: c.key, cert: c.cert, ca: [p.ca], requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (req, res) => {
        const chunks: Buffer[] = [];
        req.on('data', (d: Buffer) => chunks.push(d));
        req.on('end', () => scripts[i]!(req.url ?? '', Buffer.concat(chunks).toString(), res));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      servers.push(server);
      peers.push({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, node, pod: { uid: UID[node]!, name: `plugin-${node}` } });
    }
  });
  after(async () => {
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    await rm(dir, { recursive: true, force: true });
  });

  const json = (res: import('node:http').ServerResponse, o: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(o));
  const holdsOnA = (answer: (path: string, body: string, res: import('node:http').ServerResponse) => void) => {
    scripts[0] = (p, body, res) => (p === '/v1/commands/Holds' ? json(res, { ok: { volumes: [VOL], snapshots: [], groups: [] } }) : answer(p, body, res));
    scripts[1] = (_p, _b, res) => json(res, { ok: { volumes: [], snapshots: [], groups: [] } });
  };
  const signal = () => new AbortController().signal;

  it('a router certificate names a role and a pod, never a node; a node\'s is never a router\'s', () => {
    const router = routerFromSan(new X509Certificate(routerCert.cert).subjectAltName);
    assert.deepEqual(router, { pod: { namespace: 'vpool', name: 'vpool-csi-controller-1', uid: 'dddd-0004' } });
    assert.equal(identityFromSan(new X509Certificate(routerCert.cert).subjectAltName), null, 'the router reads no volume and asks for no metadata');
    assert.equal(routerFromSan(new X509Certificate(nodeCert.cert).subjectAltName), null);
    // Anything more or less than the role and one pod is no one.
    assert.equal(routerFromSan('URI:urn:vpool-csi:role:snapshot-router'), null);
    assert.equal(routerFromSan('URI:urn:vpool-csi:role:snapshot-router, URI:urn:vpool-csi:node:n1'), null);
    assert.equal(routerFromSan('URI:urn:vpool-csi:role:snapshot-router, URI:urn:vpool-csi:pod:vpool:p:u, URI:urn:vpool-csi:node:n1'), null);
    assert.equal(routerFromSan('URI:urn:vpool-csi:role:snapshot-router, URI:urn:vpool-csi:pod:vpool:../x:u1'), null);
    assert.equal(routerFromSan('URI:urn:vpool-csi:role:snapshot-routers, URI:urn:vpool-csi:pod:vpool:p:u1'), null);
  });

  it('a node takes from the router only the calls of the features it was started with (--transfer-router-takes)', async () => {
    const { answerCommand } = await import('../../src/transfer/commands.js');
    const { commandsOf } = await import('../../src/transfer/command-groups.js');
    assert.deepEqual([...commandsOf('modify')], ['ControllerModifyVolume']);
    assert.equal(commandsOf('snapshots,modify').size, 7);
    assert.throws(() => commandsOf('snapshots,everything'), /--transfer-router-takes names snapshots and modify, not "everything"/);
    const san = new X509Certificate(routerCert.cert).subjectAltName;
    const ask = async (command: 'ControllerModifyVolume' | 'DeleteSnapshot' | 'Holds', allowed: string) => {
      let status = 0;
      let reason = '';
      let authorized = false;
      const req = { resume() {}, socket: { getPeerCertificate: () => ({ subjectaltname: san }), remoteAddress: '10.0.0.9' } } as unknown as import('node:http').IncomingMessage;
      const res = { writeHead(code: number, headers: Record<string, string>) { status = code; reason = decodeURIComponent(headers['x-vpool-error'] ?? ''); return { end() {} }; } } as unknown as import('node:http').ServerResponse;
      const commands = { holds: async () => ({ volumes: [], snapshots: [], groups: [] }), run: async () => ({}) };
      await answerCommand(req, { command, deadlineMs: 1000 }, res, { commands, allowed: commandsOf(allowed), authorizeRouter: async () => ((authorized = true), 'stop here'), admit: () => () => undefined, peer: () => 'test' });
      return { status, reason, authorized };
    };
    // Refused before the router is even looked up: the node does not take it at all.
    assert.deepEqual(await ask('DeleteSnapshot', 'modify'), { status: 403, reason: 'this node takes no DeleteSnapshot from the router (--transfer-router-takes)', authorized: false });
    assert.deepEqual(await ask('ControllerModifyVolume', 'snapshots'), { status: 403, reason: 'this node takes no ControllerModifyVolume from the router (--transfer-router-takes)', authorized: false });
    // A call it takes goes on to the router's authorization (refused here by the test's gate), and Holds goes with any.
    assert.deepEqual(await ask('ControllerModifyVolume', 'modify'), { status: 403, reason: 'stop here', authorized: true });
    assert.deepEqual(await ask('Holds', 'modify'), { status: 403, reason: 'stop here', authorized: true });
  });

  it('routes: the six calls and Holds by POST only, a bounded deadline, nothing else', () => {
    assert.deepEqual(commandRoute('POST', '/v1/commands/CreateVolumeGroupSnapshot?deadline=300000'), { command: 'CreateVolumeGroupSnapshot', deadlineMs: 300_000 });
    assert.deepEqual(commandRoute('POST', '/v1/commands/Holds'), { command: 'Holds', deadlineMs: 900_000 });
    assert.equal((commandRoute('POST', '/v1/commands/DeleteSnapshot?deadline=99999999') as { deadlineMs: number }).deadlineMs, 900_000, 'capped at 15 minutes');
    for (const [m, u] of [['GET', '/v1/commands/CreateSnapshot'], ['POST', '/v1/commands/CreateVolume'], ['POST', '/v1/commands/NodeStageVolume'], ['POST', '/v1/commands/CreateSnapshot?deadline=0'], ['POST', '/v1/commands/CreateSnapshot?deadline=-1'], ['POST', '/v1/commands/CreateSnapshot?x=1'], ['POST', '/v1/commands/'], ['POST', '/v1/commands/CreateSnapshot/x']]) {
      assert.equal(commandRoute(m, u), 'bad', `${m} ${u}`);
    }
    assert.equal(commandRoute('GET', '/v1/metadata/allocated?snapshot=x&from=0'), null, 'another route');
    assert.equal(commandRoute('POST', '/v1/commands/../volumes/x'), null, 'a path that leaves /v1/commands/ is no command (the volume route then refuses a POST)');
  });

  it('a Holds body is three lists of well-formed IDs, bounded; anything else is refused', () => {
    assert.deepEqual(parseHolds({ volumes: [VOL] }), { volumes: [VOL], snapshots: [], groups: [] });
    for (const bad of [null, [], 'x', { volumes: ['../etc'] }, { volumes: [SNAP] }, { snapshots: [VOL] }, { groups: [42] }, { volumes: [VOL], extra: [] }, { volumes: Array(10_001).fill(VOL) }]) {
      assert.equal(parseHolds(bad), null, JSON.stringify(bad).slice(0, 60));
    }
  });

  it('a node\'s error comes back as the same kind, and so the same gRPC code, named with the node', async () => {
    const kinds: ErrorKind[] = ['invalid', 'not-found', 'conflict', 'out-of-range', 'exhausted', 'precondition', 'busy', 'unsupported', 'unavailable', 'internal'];
    for (const kind of kinds) {
      holdsOnA((_p, _b, res) => json(res, { error: { kind, message: 'as the node said' } }));
      const c = new CommandClient(creds, () => peers, () => 2);
      const [peer] = (await c.holders({ volumes: [VOL], snapshots: [], groups: [] }, signal())).found.values();
      const got = await c.run(peer!, 'CreateSnapshot', { name: 'x', source_volume_id: VOL }, 5_000, signal()).catch((e: DriverError) => e);
      assert.ok(got instanceof DriverError);
      assert.equal(got.kind, kind);
      assert.equal(got.message, 'node node-a: as the node said');
      assert.equal(kindOfStatus(toStatus(got).code), kind, `${kind}: the code the router answers is the node's`);
    }
    assert.equal(kindOfStatus(status.DEADLINE_EXCEEDED), 'cancelled');
    assert.equal(kindOfStatus(status.UNKNOWN), 'internal');
  });

  it('refuses what no node should say: a claim it was not asked about, two claims of one ID, no answer, a non-answer', async () => {
    const q = { volumes: [VOL], snapshots: [], groups: [] };
    const missing = async (c: CommandClient) => (await c.holders(q, signal())).missing ?? '';
    scripts[0] = (_p, _b, res) => json(res, { ok: { volumes: [VOL, 'vol-two-0123456789abcdef'], snapshots: [], groups: [] } });
    scripts[1] = (_p, _b, res) => json(res, { ok: { volumes: [], snapshots: [], groups: [] } });
    const stray = await new CommandClient(creds, () => peers, () => 2).holders(q, signal());
    assert.equal(stray.found.size, 0, 'none of a stray answer is taken');
    assert.match(stray.missing ?? '', /node node-a: it claims vol-two/);
    scripts[1] = (_p, _b, res) => json(res, { ok: { volumes: [VOL], snapshots: [], groups: [] } });
    scripts[0] = scripts[1];
    const twice = await new CommandClient(creds, () => peers, () => 2).holders(q, signal());
    assert.equal(twice.found.size, 0, 'an ID two nodes claim is neither\'s');
    assert.deepEqual(twice.contested?.get(VOL)?.map((p) => p.node), ['node-a', 'node-c'].filter((n) => twice.contested!.get(VOL)!.some((p) => p.node === n)));
    assert.equal(twice.contested?.get(VOL)?.length, 2);
    // Silent, then a 503: not "on no node" but "not now".
    scripts[0] = (_p, _b, res) => res.writeHead(503, { 'x-vpool-error': 'busy' }).end();
    scripts[1] = (_p, _b, res) => json(res, { ok: { volumes: [], snapshots: [], groups: [] } });
    assert.match(await missing(new CommandClient(creds, () => peers, () => 2)), /not every node answered: node node-a: node node-a answered 503: busy/);
    // Every node answered and none holds it: absent, final.
    scripts[0] = scripts[1];
    assert.deepEqual(await new CommandClient(creds, () => peers, () => 2).holders(q, signal()), { found: new Map(), missing: undefined });
    // ...unless the DaemonSet wants more node plugins than are running (one being replaced): not final.
    assert.match(await missing(new CommandClient(creds, () => peers, () => 3)), /2 of the 3 node plugins are running/);
    // The count unknown (no DaemonSet status yet, the API away): nothing is final.
    assert.match(await kindOf(new CommandClient(creds, () => peers, () => Promise.reject(new Error('no up-to-date status yet'))).holders(q, signal())), /^unavailable: the node plugins cannot be counted now: no up-to-date status yet/);
    assert.match(await kindOf(new CommandClient(creds, () => peers, () => 3).everywhere('DeleteSnapshot', { snapshot_id: SNAP }, 5_000, signal())), /^unavailable: DeleteSnapshot is answered once every node has: 2 of the 3/);
    // A body that is no answer.
    holdsOnA((_p, _b, res) => res.writeHead(200).end('not json'));
    const c = new CommandClient(creds, () => peers, () => 2);
    const [peer] = (await c.holders(q, signal())).found.values();
    assert.match(await kindOf(c.run(peer!, 'DeleteSnapshot', { snapshot_id: SNAP }, 5_000, signal())), /^unavailable: node node-a sent an answer that is not JSON/);
    holdsOnA((_p, _b, res) => json(res, {}));
    assert.match(await kindOf(c.run(peer!, 'DeleteSnapshot', { snapshot_id: SNAP }, 5_000, signal())), /^unavailable: .*neither an answer nor an error/);
    holdsOnA((_p, _b, res) => res.writeHead(403, { 'x-vpool-error': encodeURIComponent('not from its pod') }).end());
    assert.match(await kindOf(c.run(peer!, 'DeleteSnapshot', { snapshot_id: SNAP }, 5_000, signal())), /^denied: node node-a refused the snapshot router: not from its pod/);
  });

  it('talks only to the node the pod list names: a listener whose certificate is another node\'s or another pod\'s is not asked', async () => {
    holdsOnA((_p, _b, res) => json(res, { ok: {} }));
    const swapped = [{ ...peers[0]!, node: 'node-c', pod: peers[1]!.pod }, { ...peers[1]!, pod: { uid: 'eeee-0005', name: 'plugin-node-c' } }];
    const got = await new CommandClient(creds, () => swapped, () => 2).holders({ volumes: [VOL], snapshots: [], groups: [] }, signal());
    assert.equal(got.found.size, 0);
    assert.match(got.missing ?? '', /is node node-a \(pod plugin-node-a\), not node node-c/);
  });
});
