import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { copyFile, mkdir, readdir, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadCsi } from '../../src/csi/proto.js';
import { connectInspect } from '../../src/csi/inspect-client.js';
import { promisify } from 'node:util';
import { blockCap } from '../helpers/csi.js';
import { makeCa } from '../helpers/certs.js';
import { NAMESPACE, transferNodes, type TransferNodes } from '../helpers/transfer-nodes.js';
import { writeAt } from '../helpers/data.js';
import { BIN, codeOf, MiB, needsRoot, pattern, sha256File, tempDir, type Driver } from '../helpers/driver.js';
import { pollUntil } from '../helpers/libvirt.js';

const execFileP = promisify(execFile);
const SIZE = 64 * MiB;
const FAKE_PEER = fileURLToPath(new URL('../helpers/fake-transfer-peer.js', import.meta.url));

// Two node plugins, each in its own network namespace (a veth pair between them, nothing else on
// that network) and with its own file pool, in a cluster the FAKE API server models (transfer-nodes.ts):
// what B does when the source of a CreateVolume for one of its claims is in A's pool.
describe('restore and clone across nodes: file pool to file pool, per-node certificates, reads authorized by the claim', needsRoot(), () => {
  let nodes: TransferNodes;
  let a: Driver;
  let b: Driver;
  const imageOf = (d: Driver, kind: 'volumes' | 'snapshots', id: string) => path.join(d.poolDir, kind, `${id}.img`);
  const startA = async (extra: string[] = []) => (a = await nodes.restartA(extra));
  const startB = async (extra: string[] = []) => (b = await nodes.restartB(extra));
  const create = (_d: Driver, name: string, source: { snapshot?: string; volume?: string }) => nodes.restore(name, source, { size: SIZE }).then((volume) => ({ volume }));
  /** The index of the first line of d's log that `match` takes, if any. */
  const indexOf = (d: Driver, match: (l: string) => boolean) => {
    const i = d.logs.findIndex(match);
    return i < 0 ? undefined : i;
  };
  /** Waits until A has begun to stream this source (its lock is held and bytes are moving). */
  const sendingOf = (id: string) => pollUntil(async () => (a.logs.some((l) => l.includes('sending a volume to a peer') && l.includes(id)) ? true : undefined), 60_000, async () => `A did not begin sending ${id}`);
  /** Bytes the image allocates on disk. */
  const allocated = async (file: string) => (await stat(file)).blocks * 512;

  before(async () => {
    nodes = await transferNodes('vpt');
    ({ a, b } = nodes);
  });
  after(async () => {
    const left = nodes ? await nodes.remove() : [];
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

  it("a source the holder does not have is NOT_FOUND; a peer that trusts A but shows another CA's certificate, or none, is refused by A and logged", async () => {
    assert.equal(await codeOf(create(b, 'nowhere', { snapshot: snapId.replace(/.$/, (c) => (c === '0' ? '1' : '0')) })), 'NOT_FOUND');
    // Probes from B's namespace that trust A (the cluster's trust bundle) and check A's certificate, so a
    // refusal they see is A's own. The control, with B's own credential, gets an HTTP answer.
    const certs = await tempDir('vpool-rogue-');
    const probe = async (dir: string) => {
      const { stdout } = await execFileP('ip', ['netns', 'exec', nodes.hosts.b.ns, process.execPath, FAKE_PEER, nodes.listen, dir, 'probe', `/v1/snapshots/${snapId}`], { timeout: 60_000 });
      return stdout;
    };
    try {
      const own = await nodes.credentialDir('node-b');
      const control = await probe(own);
      assert.match(control, /server verified/);
      assert.match(control, /answered \d{3}/, 'with a credential of the cluster, the probe gets an HTTP answer');
      const rogue = await (await makeCa(certs, 'rogue')).node('node-b');
      const foreign = path.join(certs, 'foreign');
      const anonymous = path.join(certs, 'anonymous');
      for (const dir of [foreign, anonymous]) {
        await mkdir(dir);
        await copyFile(path.join(own, 'ca.crt'), path.join(dir, 'ca.crt'));
      }
      await copyFile(path.join(rogue, 'tls.crt'), path.join(foreign, 'tls.crt'));
      await copyFile(path.join(rogue, 'tls.key'), path.join(foreign, 'tls.key'));
      // No certificate: an empty one (Node then presents none).
      await writeFile(path.join(anonymous, 'tls.crt'), '');
      await writeFile(path.join(anonymous, 'tls.key'), '');
      for (const dir of [foreign, anonymous]) {
        const out = await probe(dir);
        assert.match(out, /server verified/, `${path.basename(dir)}: the probe accepted A`);
        assert.doesNotMatch(out, /answered/, `${path.basename(dir)}: no HTTP answer`);
        assert.match(out, /error .*(alert|certificate|socket hang up|ECONNRESET)/i, `${path.basename(dir)}: A ended the handshake: ${out}`);
      }
    } finally {
      await rm(certs, { recursive: true, force: true });
    }
    await pollUntil(async () => (a.logs.filter((l) => l.includes('refused a transfer peer')).length >= 2 ? true : undefined), 10_000, async () => `A logged: ${a.logs.slice(-5).join('\n')}`);
  });

  it('DeleteSnapshot on A waits for a stream of that snapshot to end', async () => {
    // A slow sender (--transfer-rate) keeps the stream open for a few seconds.
    await startA(['--transfer-rate', `${4 * MiB}`]);
    const restoring = create(b, 'restored-slow', { snapshot: snapId });
    await sendingOf(snapId);
    const deleting = a.client.deleteSnapshot({ snapshot_id: snapId });
    const restored = (await restoring).volume!;
    await deleting;
    // A's own log, in its order: the stream ended, then the delete answered.
    const deleted = await pollUntil(async () => indexOf(a, (l) => l.includes('"method":"DeleteSnapshot"') && l.includes(snapId) && l.includes('"code":"OK"')), 10_000, async () => 'A did not log the delete');
    const sent = indexOf(a, (l) => l.includes('sent a volume to a peer') && l.includes(snapId));
    assert.ok(sent !== undefined && sent < deleted, 'the delete finished after the stream');
    assert.ok(b.logs.some((l) => l.includes('received a volume from a peer') && l.includes(snapId)));
    await b.client.deleteVolume({ volume_id: restored.volume_id });
  });

  // external-provisioner calls CreateVolume with a deadline (the chart: --timeout=120s) and retries
  // with the same name after DEADLINE_EXCEEDED; a restore of a large volume takes longer than that.
  it("a restore that outlasts its call's deadline goes on: retries are ABORTED until it is done, then get the volume", async () => {
    const snap = (await a.client.createSnapshot({ name: 'snap-deadline', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
    const want = await sha256File(imageOf(a, 'snapshots', snap));
    const ctl = new (loadCsi().csi.v1.Controller)(`unix://${b.socket}`, grpc.credentials.createInsecure());
    nodes.claim('restored-late', { snapshot: snap });
    const req = { name: 'restored-late', capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: { 'csi.storage.k8s.io/pvc/name': 'restored-late', 'csi.storage.k8s.io/pvc/namespace': NAMESPACE }, volume_content_source: { snapshot: { snapshot_id: snap } } };
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

  // `vpool-csi client create-volume --from-snapshot` on B while A sends slowly (--transfer-rate 2 MiB/s, 28 s):
  // B's Inspect service lists the copy and how far it has come, and the client, its output a
  // pipe as in a log, prints a progress line every 10 s while it waits, then the volume.
  it('a restore seen from the client: the copy under way on B with its bytes, a progress line with rate and time left, then the volume', async () => {
    await startA(['--transfer-rate', `${2 * MiB}`]);
    const src = (await a.client.createVolume({ name: 'src-progress', capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: {} })).volume!.volume_id;
    await writeAt(imageOf(a, 'volumes', src), 0, pattern('progress', 56 * MiB));
    const snap = (await a.client.createSnapshot({ name: 'snap-progress', source_volume_id: src, parameters: {} })).snapshot!.snapshot_id;
    nodes.claim('restored-cli', { snapshot: snap });
    const cli = spawn(BIN, ['client', '--endpoint', `unix://${b.socket}`, 'create-volume', '--name', 'restored-cli', '--size', '64Mi', '--block', '--from-snapshot', snap, '--param', 'csi.storage.k8s.io/pvc/name=restored-cli', '--param', `csi.storage.k8s.io/pvc/namespace=${NAMESPACE}`], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    cli.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    cli.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const exited = new Promise<number | null>((r) => cli.on('exit', r));
    const inspect = connectInspect(`unix://${b.socket}`);
    try {
      const seen = await pollUntil(
        async () => (await inspect.operations()).operations.find((o) => o.name === 'restored-cli' && o.doneBytes > 0),
        60_000,
        async () => `B never listed the copy: ${JSON.stringify(await inspect.operations())}`,
      );
      assert.equal(seen.kind, 'receive');
      assert.equal(seen.fromNode, 'node-a');
      assert.equal(seen.source, `snapshot ${snap}`);
      assert.equal(seen.totalBytes, SIZE);
      assert.ok(seen.doneBytes < SIZE, `${seen.doneBytes} of ${SIZE} while A sends at 2 MiB/s`);
      assert.equal(seen.reported, true);
      assert.equal(seen.phase, 'copy');
      const status = await inspect.status();
      assert.ok(status.copies?.some((c) => c.name === 'restored-cli'), 'status lists the copy too');
      // A line every 10 s in a log: the one with a rate (two of the driver's reports apart) says the time left.
      const line = await pollUntil(async () => /^create-volume: receiving snapshot \S+ from node-a: .* left, .*$/m.exec(stderr)?.[0], 60_000, async () => `no progress line with a rate; stderr: ${stderr}`);
      assert.match(line, /: [0-9.]+[KMG]i of 64Mi \([0-9]+%\), [0-9.]+[KMG]i\/s, [0-9]+s left, [0-9]+s so far$/);
      assert.equal(await exited, 0, stderr);
      const made = JSON.parse(stdout) as { volume: { volumeId: string } };
      assert.equal(await sha256File(imageOf(b, 'volumes', made.volume.volumeId)), await sha256File(imageOf(a, 'snapshots', snap)));
      assert.deepEqual((await inspect.operations()).operations, [], 'nothing under way once it is done');
      await b.client.deleteVolume({ volume_id: made.volume.volumeId });
      await a.client.deleteSnapshot({ snapshot_id: snap });
      await a.client.deleteVolume({ volume_id: src });
    } finally {
      inspect.close();
      cli.kill();
    }
  });

  it('a cut link: both sides give up after --transfer-stall-timeout, B lists nothing, A lets go of the snapshot, and the retry after the link is back is right', async () => {
    const snap = (await a.client.createSnapshot({ name: 'snap-cut', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
    const want = await sha256File(imageOf(a, 'snapshots', snap));
    const started = Date.now();
    const first = codeOf(create(b, 'after-cut', { snapshot: snap }));
    await sendingOf(snap);
    await nodes.hosts.link(false); // no reset reaches either side: only the stall timeout (3 s here) ends the stream
    try {
      assert.equal(await first, 'UNAVAILABLE');
      assert.ok(Date.now() - started < 15_000, 'B gave up within the stall timeout');
      assert.equal((await b.client.listVolumes({})).entries.length, 0, 'nothing listed on B');
      assert.deepEqual(await readdir(path.join(b.poolDir, '.tmp')), [], 'nothing half-written left on B');
      await pollUntil(async () => (a.logs.some((l) => l.includes('a transfer failed on the sending side') && l.includes(snap)) ? true : undefined), 15_000, async () => 'A did not give up the stream');
    } finally {
      await nodes.hosts.link(true);
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
    await sendingOf(snapId);
    await a.stop('SIGKILL');
    assert.equal(await first, 'UNAVAILABLE');
    assert.equal((await b.client.listVolumes({})).entries.length, 0, 'nothing listed on B');
    assert.deepEqual(await readdir(path.join(b.poolDir, '.tmp')), [], 'nothing half-written left on B');
    await startA(['--transfer-rate', `${4 * MiB}`]);
    // B dies while receiving.
    const second = create(b, 'after-kill', { snapshot: snapId }).then(() => 'answered', () => 'cut off');
    await sendingOf(snapId);
    await b.stop('SIGKILL');
    assert.equal(await second, 'cut off');
    // A notices at its next write (it may be pausing for --transfer-rate), and releases the snapshot.
    await pollUntil(async () => (a.logs.some((l) => l.includes('a transfer failed on the sending side') && l.includes(snapId)) ? true : undefined), 10_000, async () => 'A did not see the receiver go');
    await startB();
    assert.equal((await b.client.listVolumes({})).entries.length, 0, 'nothing listed on B after its restart');
    const done = (await create(b, 'after-kill', { snapshot: snapId })).volume!;
    assert.equal(await sha256File(imageOf(b, 'volumes', done.volume_id)), want);
    await b.client.deleteVolume({ volume_id: done.volume_id });
    await a.client.deleteSnapshot({ snapshot_id: snapId });
    await a.client.deleteVolume({ volume_id: srcId });
    assert.deepEqual(await readdir(path.join(a.poolDir, '.tmp')), [], 'nothing left on A');
  });
});
