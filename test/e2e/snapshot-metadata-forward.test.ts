import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import https from 'node:https';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import type { GetMetadataAllocatedResponse__Output } from '../../gen/csi/v1/GetMetadataAllocatedResponse.js';
import { splitPem } from '../../src/transfer/pki.js';
import { blockCap } from '../helpers/csi.js';
import { writeAt } from '../helpers/data.js';
import { codeOf, MiB, needsRoot, pattern } from '../helpers/driver.js';
import { transferNodes, type TransferNodes } from '../helpers/transfer-nodes.js';

const SIZE = 32 * MiB;
const execFileP = promisify(execFile);
const tuples = (ms: GetMetadataAllocatedResponse__Output[]) => ({
  capacity: ms.map((m) => m.volume_capacity_bytes),
  ranges: ms.flatMap((m) => m.block_metadata.map((b) => [Number(b.byte_offset), Number(b.size_bytes)])),
});

// Two node plugins in their own network namespaces, in a cluster the FAKE API server models
// (transfer-nodes.ts): B is asked for the block metadata of snapshots A holds (what happens when the
// external-snapshot-metadata sidecar a backup tool reached sits on another node than the snapshot),
// forwards to A over the node-to-node channel and relays A's answer.
describe('SnapshotMetadata forwarded to the node holding the snapshot, over the node-to-node channel', needsRoot(), () => {
  let nodes: TransferNodes;
  let s1 = '';
  let s2 = '';
  let vol = '';
  before(async () => {
    nodes = await transferNodes('vpm');
    const { a } = nodes;
    vol = (await a.client.createVolume({ name: 'src', capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: {} })).volume!.volume_id;
    const image = path.join(a.poolDir, 'volumes', `${vol}.img`);
    // 1,200 separate 4 KiB runs: more than one line (1,024 ranges) of the forwarded answer.
    for (let i = 0; i < 1200; i++) await writeAt(image, i * 16 * 1024, pattern(`one-${i}`, 4096));
    s1 = (await a.client.createSnapshot({ name: 'one', source_volume_id: vol, parameters: {} })).snapshot!.snapshot_id;
    await writeAt(image, 24 * MiB, pattern('two', MiB));
    s2 = (await a.client.createSnapshot({ name: 'two', source_volume_id: vol, parameters: {} })).snapshot!.snapshot_id;
  });
  after(async () => {
    if (!nodes) return;
    for (const s of [s2, s1].filter(Boolean)) await nodes.a.client.deleteSnapshot({ snapshot_id: s });
    if (vol) await nodes.a.client.deleteVolume({ volume_id: vol });
    assert.deepEqual(await nodes.remove(), []);
  });

  it('B answers for A\'s snapshots exactly as A does: allocated, delta, paging and resumption; unknown snapshots NOT_FOUND', async () => {
    const { a, b } = nodes;
    const local = await a.client.getMetadataAllocated({ snapshot_id: s1, starting_offset: '0', max_results: 0 });
    const forwarded = await b.client.getMetadataAllocated({ snapshot_id: s1, starting_offset: '0', max_results: 0 });
    assert.equal(tuples(local).ranges.length, 1200);
    assert.deepEqual(tuples(forwarded), tuples(local), 'the same ranges and capacity through B');
    assert.deepEqual(tuples(await b.client.getMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: s2, starting_offset: '0', max_results: 0 })), tuples(await a.client.getMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: s2, starting_offset: '0', max_results: 0 })));
    // Paged by B (at most 7 a message) and resumed mid-way: the spec's rules hold end to end.
    const paged = await b.client.getMetadataAllocated({ snapshot_id: s1, starting_offset: String(8 * MiB + 1), max_results: 7 });
    assert.ok(paged.every((m) => m.block_metadata.length <= 7));
    assert.deepEqual(tuples(paged).ranges, tuples(local).ranges.filter(([s, n]) => s + n > 8 * MiB + 1).map(([s, n]) => (s < 8 * MiB + 1 ? [8 * MiB + 1, s + n - 8 * MiB - 1] : [s, n])));
    assert.deepEqual(
      {
        unknown: await codeOf(b.client.getMetadataAllocated({ snapshot_id: 'snap-nope-0123456789abcdef', starting_offset: '0', max_results: 0 })),
        unknownTarget: await codeOf(b.client.getMetadataDelta({ base_snapshot_id: s1, target_snapshot_id: 'snap-nope-0123456789abcdef', starting_offset: '0', max_results: 0 })),
        hostile: await codeOf(b.client.getMetadataAllocated({ snapshot_id: '../../x', starting_offset: '0', max_results: 0 })),
        pastEnd: await codeOf(b.client.getMetadataAllocated({ snapshot_id: s1, starting_offset: String(SIZE + 1), max_results: 0 })),
        backwards: await codeOf(b.client.getMetadataDelta({ base_snapshot_id: s2, target_snapshot_id: s1, starting_offset: '0', max_results: 0 })),
      },
      { unknown: 'NOT_FOUND', unknownTarget: 'NOT_FOUND', hostile: 'INVALID_ARGUMENT', pastEnd: 'OUT_OF_RANGE', backwards: 'INVALID_ARGUMENT' },
    );
  });

  it('A refuses a node credential used from another address than its pod, and a request with no credential never gets past the handshake', async (t) => {
    const dir = await nodes.credentialDir('node-b');
    const cred = { key: await readFile(path.join(dir, 'tls.key'), 'utf8'), cert: await readFile(path.join(dir, 'tls.crt'), 'utf8'), ca: splitPem(await readFile(path.join(dir, 'ca.crt'), 'utf8')) };
    const [host, port] = nodes.listen.split(':');
    // This machine reaches A's listener through A's link to it, from an address that is no node plugin pod's.
    const insideA = nodes.hosts.host!.fromA.replace(/\.1$/, '.2');
    await execFileP('ip', ['route', 'replace', `${nodes.hosts.a.addr}/32`, 'via', insideA]);
    t.after(() => execFileP('ip', ['route', 'del', `${nodes.hosts.a.addr}/32`]).catch(() => undefined));
    const ask = (withCert: boolean) =>
      new Promise<{ status: number; reason: string }>((resolve, reject) => {
        const req = https.request({
          host,
          port: Number(port),
          method: 'GET',
          path: `/v1/metadata/allocated?snapshot=${s1}&from=0`,
          ...(withCert ? { key: cred.key, cert: cred.cert } : {}),
          ca: cred.ca,
          // What is tested is the listener's check of this client, not this client's of the listener.
          rejectUnauthorized: false,
          agent: false,
          minVersion: 'TLSv1.3',
          timeout: 10_000,
        });
        req.once('response', (r) => {
          r.resume();
          resolve({ status: r.statusCode ?? 0, reason: decodeURIComponent(String(r.headers['x-vpool-error'] ?? '')) });
        });
        req.once('error', reject);
        req.end();
      });
    // B's own credential, but from the host's address, not B's pod's.
    const refused = await ask(true);
    assert.equal(refused.status, 403, JSON.stringify(refused));
    assert.match(refused.reason, /used from .*, not from its pod/);
    await assert.rejects(ask(false), /certificate|handshake|socket hang up|ECONNRESET|alert/i);
  });

  it('with A gone, B answers UNAVAILABLE (it cannot tell the snapshot is nowhere), not NOT_FOUND', async () => {
    // A fresh B remembers no holder: it asks every node, and A does not answer.
    await nodes.restartB();
    await nodes.a.stop();
    try {
      assert.equal(await codeOf(nodes.b.client.getMetadataAllocated({ snapshot_id: s1, starting_offset: '0', max_results: 0 })), 'UNAVAILABLE');
    } finally {
      await nodes.restartA();
    }
  });
});
