import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { DriverError } from '../../src/errors.js';
import { TransferCredentials } from '../../src/transfer/credentials.js';
import { MetadataClient, metadataRoute, type MetadataPeer } from '../../src/transfer/metadata.js';
import { uriPki } from '../helpers/certs.js';

const SNAP = 'snap-one-0123456789abcdef';
/** Pod UIDs as the API server makes them (hex and dashes): a certificate naming anything else speaks for no one. */
const UID: Record<string, string> = { 'node-a': 'aaaa-0001', 'node-c': 'cccc-0003' };

/** A FAKE holder: a TLS listener whose answers each test scripts (a real plugin's are in test/e2e/snapshot-metadata-forward.test.ts). */
type Script = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => void;

describe('snapshot metadata forwarding: the route, and what the forwarding side accepts from a holder (FAKE holders)', () => {
  let dir: string;
  let creds: TransferCredentials;
  const servers: https.Server[] = [];
  const holders: MetadataPeer[] = [];
  const scripts: Script[] = [];

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-mdfwd-'));
    const p = await uriPki(dir);
    const self = await p.issue('node-b', 'b0b0b0b0');
    creds = new TransferCredentials();
    creds.set({ key: self.key, cert: self.cert, trust: [p.ca] });
    for (const [i, node] of ['node-a', 'node-c'].entries()) {
      const c = await p.issue(node, UID[node]!);
      const server = https.createServer({ key: c.key, cert: c.cert, ca: [p.ca], requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (req, res) => scripts[i]!(req, res));
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      servers.push(server);
      holders.push({ host: '127.0.0.1', port: (server.address() as AddressInfo).port, node, pod: { uid: UID[node]!, name: `plugin-${node}` } });
    }
  });
  after(async () => {
    for (const s of servers) {
      s.closeAllConnections();
      await new Promise((r) => s.close(r));
    }
    await rm(dir, { recursive: true, force: true });
  });

  const holdsOnA = (body: string): void => {
    scripts[0] = (req, res) => (req.method === 'HEAD' ? res.writeHead(200).end() : res.writeHead(200).end(body));
    scripts[1] = (_req, res) => res.writeHead(404).end();
  };
  const collect = async (c: MetadataClient) => {
    const s = await c.allocated(SNAP, 0, new AbortController().signal);
    const out: Array<readonly [number, number]> = [];
    for await (const r of s.ranges) out.push(r);
    return { capacity: s.capacityBytes, out };
  };
  const kindOf = async (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof DriverError ? e.kind : `not a DriverError: ${String(e)}`));
  const failure = async (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof DriverError ? `${e.kind}: ${e.message}` : `not a DriverError: ${String(e)}`));

  it('parses its routes strictly: IDs checked, offsets whole numbers, nothing else taken', () => {
    assert.deepEqual(metadataRoute('HEAD', `/v1/metadata/snapshots/${SNAP}`), { op: 'held', snapshot: SNAP, from: 0 });
    assert.deepEqual(metadataRoute('GET', `/v1/metadata/allocated?snapshot=${SNAP}&from=4096`), { op: 'allocated', snapshot: SNAP, from: 4096 });
    assert.deepEqual(metadataRoute('GET', `/v1/metadata/delta?base=${SNAP}&target=snap-two-0123456789abcdef&from=0`), { op: 'delta', snapshot: 'snap-two-0123456789abcdef', base: SNAP, from: 0 });
    assert.equal(metadataRoute('GET', '/v1/snapshots/x'), null, 'another route');
    for (const bad of [
      `/v1/metadata/allocated?snapshot=../../etc&from=0`,
      `/v1/metadata/allocated?snapshot=${SNAP}&from=-1`,
      `/v1/metadata/allocated?snapshot=${SNAP}&from=1e3`,
      `/v1/metadata/allocated?snapshot=${SNAP}&from=99999999999999999`,
      `/v1/metadata/allocated?snapshot=${SNAP}`,
      `/v1/metadata/allocated?snapshot=${SNAP}&from=0&claim=x`,
      `/v1/metadata/delta?target=${SNAP}&from=0`,
      `/v1/metadata/other?snapshot=${SNAP}&from=0`,
    ]) assert.equal(metadataRoute('GET', bad), 'bad', bad);
    assert.equal(metadataRoute('POST', `/v1/metadata/allocated?snapshot=${SNAP}&from=0`), 'bad');
    assert.equal(metadataRoute('HEAD', `/v1/metadata/snapshots/%2e%2e`), 'bad');
  });

  it('relays a complete answer; finds the holder among the peers and remembers it', async () => {
    holdsOnA('{"capacity":1048576}\n{"r":[0,4096,8192,12288]}\n{"r":[65536,131072]}\n{"end":true}\n');
    let heads = 0;
    const c = new MetadataClient(creds, () => holders);
    const counted = scripts[0]!;
    scripts[0] = (req, res) => ((heads += req.method === 'HEAD' ? 1 : 0), counted(req, res));
    assert.deepEqual(await collect(c), { capacity: 1048576, out: [[0, 4096], [8192, 12288], [65536, 131072]] });
    await collect(c);
    assert.equal(heads, 1, 'the holder was asked once where the snapshot is, then remembered');
  });

  it('refuses what is not a complete, well-formed answer: a cut body, ranges out of order or past the volume, a line that is not JSON', async () => {
    const cases: Record<string, [string, RegExp]> = {
      cut: ['{"capacity":1048576}\n{"r":[0,4096]}\n', /ended before it was complete/],
      backwards: ['{"capacity":1048576}\n{"r":[8192,12288,0,4096]}\n{"end":true}\n', /out of order or past the volume/],
      overlapping: ['{"capacity":1048576}\n{"r":[0,8192,4096,12288]}\n{"end":true}\n', /out of order or past the volume/],
      pastEnd: ['{"capacity":4096}\n{"r":[0,8192]}\n{"end":true}\n', /out of order or past the volume/],
      empty: ['{"capacity":1048576}\n{"r":[4096,4096]}\n{"end":true}\n', /out of order or past the volume/],
      odd: ['{"capacity":1048576}\n{"r":[0,4096,8192]}\n{"end":true}\n', /malformed line/],
      notJson: ['{"capacity":1048576}\nnope\n{"end":true}\n', /not JSON/],
      noCapacity: ['{"r":[0,4096]}\n{"end":true}\n', /no capacity/],
    };
    for (const [name, [body, want]] of Object.entries(cases)) {
      holdsOnA(body);
      const got = await failure(collect(new MetadataClient(creds, () => holders)));
      assert.match(got, /^unavailable: /, name);
      assert.match(got, want, name);
    }
  });

  it("keeps the holder's error kinds; NOT_FOUND only when every peer answered, UNAVAILABLE when one could not be asked", async () => {
    holdsOnA('{"error":{"kind":"out-of-range","message":"starting_offset past the end"}}\n');
    assert.equal(await kindOf(collect(new MetadataClient(creds, () => holders))), 'out-of-range');
    holdsOnA('{"capacity":1048576}\n{"error":{"kind":"precondition","message":"take a full backup"}}\n');
    assert.equal(await kindOf(collect(new MetadataClient(creds, () => holders))), 'precondition');
    holdsOnA('{"error":{"kind":"made-up","message":"?"}}\n');
    assert.equal(await kindOf(collect(new MetadataClient(creds, () => holders))), 'internal');

    scripts[0] = (_req, res) => res.writeHead(404).end();
    scripts[1] = (_req, res) => res.writeHead(404).end();
    assert.equal(await kindOf(collect(new MetadataClient(creds, () => holders))), 'not-found');
    const gone: MetadataPeer = { host: '127.0.0.1', port: 1, node: 'node-d', pod: { uid: 'uid-d', name: 'plugin-node-d' } };
    assert.equal(await kindOf(collect(new MetadataClient(creds, () => [...holders, gone]))), 'unavailable');
    // A peer whose certificate names another node than the listing says is not asked anything.
    holdsOnA('{"capacity":4096}\n{"end":true}\n');
    const impostor: MetadataPeer = { ...holders[0]!, node: 'node-x' };
    assert.match(await failure(collect(new MetadataClient(creds, () => [impostor, holders[1]!]))), /^unavailable: .*is node node-a \(pod [^)]+\), not node node-x/);
  });

  it('asks every peer again when the remembered holder no longer has the snapshot', async () => {
    holdsOnA('{"capacity":4096}\n{"r":[0,4096]}\n{"end":true}\n');
    const c = new MetadataClient(creds, () => holders);
    await collect(c);
    // Moved to node-c.
    scripts[0] = (req, res) => (req.method === 'HEAD' ? res.writeHead(404).end() : res.writeHead(200).end('{"error":{"kind":"not-found","message":"no such snapshot","moved":true}}\n'));
    scripts[1] = (req, res) => (req.method === 'HEAD' ? res.writeHead(200).end() : res.writeHead(200).end('{"capacity":8192}\n{"r":[4096,8192]}\n{"end":true}\n'));
    assert.deepEqual(await collect(c), { capacity: 8192, out: [[4096, 8192]] });
  });

  it('a base the holder lacks is its answer (NOT_FOUND), not a move: no peer is asked again; heartbeats (empty lines) are taken', async () => {
    let heads = 0;
    scripts[0] = (req, res) => {
      if (req.method === 'HEAD') return (heads++, res.writeHead(200).end());
      res.writeHead(200).end(req.url!.includes('/delta') ? '{"error":{"kind":"not-found","message":"base_snapshot_id x: no such snapshot"}}\n' : '{"capacity":8192}\n{"r":[]}\n{"r":[]}\n{"r":[0,4096]}\n{"end":true}\n');
    };
    scripts[1] = (_req, res) => res.writeHead(404).end();
    const c = new MetadataClient(creds, () => holders);
    assert.deepEqual(await collect(c), { capacity: 8192, out: [[0, 4096]] });
    const delta = c.delta('snap-gone-0123456789abcdef', SNAP, 0, new AbortController().signal);
    assert.match(await failure(delta), /^not-found: .*base_snapshot_id/);
    assert.equal(heads, 1, 'the remembered holder answered; nobody was asked again');
  });

  it('refuses to guess when two nodes claim one snapshot, and a line longer than any holder sends', async () => {
    scripts[0] = (req, res) => (req.method === 'HEAD' ? res.writeHead(200).end() : res.writeHead(200).end('{"capacity":4096}\n{"end":true}\n'));
    scripts[1] = (req, res) => (req.method === 'HEAD' ? res.writeHead(200).end() : res.writeHead(200).end('{"capacity":4096}\n{"end":true}\n'));
    assert.match(await failure(collect(new MetadataClient(creds, () => holders))), /^unavailable: nodes node-a, node-c each claim/);
    holdsOnA(`{"capacity":1048576}\n{"r":[${'0,'.repeat(200_000)}0]}\n{"end":true}\n`);
    assert.match(await failure(collect(new MetadataClient(creds, () => holders))), /^unavailable: .*longer than/);
  });
});

describe('heartbeats of a slow stream', () => {
  it('marks each silence of the period between items, passes every item through, and ends (and cleans up) with its source', async () => {
    const { HEARTBEAT, withHeartbeat } = await import('../../src/heartbeat.js');
    let closed = false;
    const slow = async function* () {
      try {
        yield 1;
        await new Promise((r) => setTimeout(r, 120));
        yield 2;
      } finally {
        closed = true;
      }
    };
    const got: Array<number | string> = [];
    for await (const x of withHeartbeat(slow(), 25)) got.push(x === HEARTBEAT ? 'beat' : (x as number));
    assert.equal(got[0], 1);
    assert.equal(got.at(-1), 2);
    assert.ok(got.filter((x) => x === 'beat').length >= 2, `heartbeats in a 120 ms silence at 25 ms: ${got.join(',')}`);
    assert.ok(closed);
  });
});
