import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { once } from 'node:events';
import { mkdir, readdir, rm } from 'node:fs/promises';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import { blockCap } from '../helpers/csi.js';
import { readAt, writeAt } from '../helpers/data.js';
import { BIN, MiB, needsRoot, pattern, sha256File, tempDir } from '../helpers/driver.js';
import { fakeContent } from '../helpers/fake-transfer-peer.js';
import { pollUntil } from '../helpers/libvirt.js';
import { NAMESPACE, transferNodes, type TransferNodes } from '../helpers/transfer-nodes.js';

const execFileP = promisify(execFile);
const FAKE = fileURLToPath(new URL('../helpers/fake-transfer-peer.js', import.meta.url));

/** The JSON log lines of a driver with this message. */
const logged = (logs: string[], message: string) =>
  logs.flatMap((l) => {
    try {
      const j = JSON.parse(l) as { message?: string; timestamp: string } & Record<string, unknown>;
      return j.message === message ? [j] : [];
    } catch {
      return [];
    }
  });

/** A call's gRPC code name and, when it failed, its details. */
async function failure(p: Promise<unknown>): Promise<{ code: string; details: string }> {
  try {
    await p;
    return { code: 'OK', details: '' };
  } catch (err) {
    const e = err as { code?: number; details?: string };
    return { code: e.code === undefined ? `not a gRPC error: ${String(err)}` : grpc.status[e.code], details: e.details ?? '' };
  }
}

// What bounds a cross-node restore: the sender's limit of concurrent sends, the stall rule (less than
// 1 MiB moved in a stall window, 3 s here), the overall deadline, the wait for the sender's answer,
// and the receiver's own disk filling up. Where a peer must misbehave, a FAKE stands in for A (no real
// node plugin trickles or hangs on purpose): a process in A's network namespace, with A's certificate.
describe('bounds of the cross-node transfer', needsRoot(), () => {
  let n: TransferNodes;
  let srcId = '';
  let snapId = '';
  const imageOf = (kind: 'volumes' | 'snapshots', id: string, d = n.a) => path.join(d.poolDir, kind, `${id}.img`);
  const bLeftNothing = async () => {
    assert.deepEqual((await n.b.client.listVolumes({})).entries, [], 'nothing listed on B');
    assert.deepEqual(await readdir(path.join(n.b.poolDir, '.tmp')), [], "B's .tmp is empty");
    // .changes counts the pool's commits (record-index.ts): bookkeeping, not a volume.
    assert.deepEqual((await readdir(path.join(n.b.poolDir, 'volumes'))).filter((f) => f !== '.changes'), [], "no image in B's volumes");
  };

  /** The FAKE in A's place (A stopped, its port free), with a certificate of `as`'s pod (A's by default). */
  async function fakeA(mode: string, size: number, as = 'node-a'): Promise<{ lines: string[]; stop(): Promise<void> }> {
    // A certificate the signer issued for A's pod (which stays in the cluster while its process is stopped): B takes the FAKE for A.
    const tls = await n.credentialDir(as);
    if (n.a.proc.exitCode === null) await n.a.stop();
    return runFake(n.hosts.a.ns, [n.listen, tls, mode, String(size)]);
  }

  async function runFake(ns: string, args: string[]): Promise<{ lines: string[]; stop(): Promise<void> }> {
    const proc = spawn('ip', ['netns', 'exec', ns, process.execPath, FAKE, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    const lines: string[] = [];
    createInterface({ input: proc.stdout! }).on('line', (l) => lines.push(l));
    const stop = async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill('SIGTERM');
        await once(proc, 'exit');
      }
    };
    await pollUntil(async () => (lines.includes('listening') ? true : proc.exitCode !== null ? Promise.reject(new Error(`the FAKE peer exited ${proc.exitCode}`)) : undefined), 30_000, async () => 'the FAKE peer did not start');
    return { lines, stop };
  }

  const volumeOnA = async (name: string, size: number) =>
    (await n.a.client.createVolume({ name, capacity_range: { required_bytes: String(size) }, volume_capabilities: [blockCap()], parameters: {} })).volume!.volume_id;

  before(async () => {
    n = await transferNodes('vpb');
    srcId = await volumeOnA('src', 32 * MiB);
    await writeAt(imageOf('volumes', srcId), 0, pattern('bounds', 8 * MiB));
    snapId = (await n.a.client.createSnapshot({ name: 'snap', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
  });
  after(async () => {
    if (n?.a.proc.exitCode === null) {
      await n.a.client.deleteSnapshot({ snapshot_id: snapId });
      await n.a.client.deleteVolume({ volume_id: srcId });
    }
    const left = n ? await n.remove() : [];
    assert.deepEqual(left, []);
  });

  it('over --transfer-max-sends, a restore waits its turn: both restores succeed, A never sends two at once', async () => {
    // 8 MiB at 8 MiB/s: each send takes about a second, so the two asked at once overlap.
    await n.restartA(['--transfer-max-sends', '1', '--transfer-rate', '8Mi']);
    const [restored, clone] = await Promise.all([n.restore('lim-snap', { snapshot: snapId }, { size: 32 * MiB }), n.restore('lim-clone', { volume: srcId }, { size: 32 * MiB })]);
    assert.equal(await sha256File(imageOf('volumes', restored.volume_id, n.b)), await sha256File(imageOf('snapshots', snapId)));
    assert.equal(await sha256File(imageOf('volumes', clone.volume_id, n.b)), await sha256File(imageOf('volumes', srcId)));
    const started = logged(n.a.logs, 'sending a volume to a peer');
    const ended = logged(n.a.logs, 'sent a volume to a peer');
    assert.equal(started.length, 2);
    assert.equal(ended.length, 2);
    assert.ok(started.every((l) => l.sends === 1), `A counted one send at a time: ${JSON.stringify(started)}`);
    // The second began after the first ended.
    assert.ok(started[1].timestamp >= ended[0].timestamp, `the second send (${started[1].timestamp}) after the first ended (${ended[0].timestamp})`);
    assert.ok(logged(n.a.logs, 'turned a send away: this node is at its limit of concurrent sends').length >= 1, 'A turned the second away at least once');
    assert.ok(logged(n.b.logs, 'the transfer peer is at its limit of sends; asking again').length >= 1, 'B waited and asked again');
    for (const v of [restored, clone]) await n.b.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('a FAKE peer trickling one byte a second: the restore fails after the stall window, B keeps nothing', async () => {
    const fake = await fakeA('trickle', 8 * MiB);
    try {
      const t0 = Date.now();
      const { code, details } = await failure(n.restore('trickled', { snapshot: snapId }, { size: 8 * MiB }));
      const took = Date.now() - t0;
      assert.equal(code, 'UNAVAILABLE');
      assert.match(details, /less than 1 MiB moved in 3 s/);
      assert.ok(took >= 2900 && took < 15_000, `gave up after one stall window (3 s), not at once nor much later: ${took} ms`);
      await bLeftNothing();
      await pollUntil(async () => (fake.lines.some((l) => l.startsWith('closed after')) ? true : undefined), 10_000, async () => `B did not hang up on the FAKE: ${fake.lines.join('\n')}`);
    } finally {
      await fake.stop();
    }
  });

  it("a peer at the holder's address whose certificate names another node (a valid certificate of B's, here) is not asked: B refuses the handshake", async () => {
    const fake = await fakeA('slow-answer', MiB, 'node-b');
    try {
      const { code, details } = await failure(n.restore('impostor', { snapshot: snapId }, { size: 8 * MiB }));
      assert.equal(code, 'UNAVAILABLE');
      assert.match(details, /is node node-b \(pod [^)]+\), not node node-a/);
      assert.ok(!fake.lines.some((l) => l.startsWith('GET')), 'nothing was asked of the impostor');
      await bLeftNothing();
    } finally {
      await fake.stop();
    }
  });

  it('a FAKE peer that never answers the GET: given up after the stall window', async () => {
    const fake = await fakeA('silent', 8 * MiB);
    try {
      const t0 = Date.now();
      const { code, details } = await failure(n.restore('unanswered', { snapshot: snapId }, { size: 8 * MiB }));
      assert.equal(code, 'UNAVAILABLE');
      assert.match(details, /no answer within 3 s/);
      assert.ok(Date.now() - t0 < 15_000);
      await bLeftNothing();
    } finally {
      await fake.stop();
    }
  });

  it("a sender that takes longer than the stall window to answer (its lock wait, its copy) but says 102 meanwhile is waited for", async () => {
    const fake = await fakeA('slow-answer', MiB);
    try {
      const t0 = Date.now();
      const v = await n.restore('slow-answer', { snapshot: snapId }, { size: 8 * MiB });
      assert.ok(Date.now() - t0 >= 4000, 'the answer came after 4 s of 102s, past the 3 s window');
      assert.ok((await readAt(imageOf('volumes', v.volume_id, n.b), 0, MiB)).equals(fakeContent(MiB)));
      await n.b.client.deleteVolume({ volume_id: v.volume_id });
    } finally {
      await fake.stop();
    }
  });

  it('a sender refusing for lack of room for its copy, or because its state forbids the copy: B answers RESOURCE_EXHAUSTED or FAILED_PRECONDITION at once and does not ask again', async () => {
    for (const [mode, want, why] of [
      ['refuse-exhausted', 'RESOURCE_EXHAUSTED', /no room for a copy to send/],
      ['refuse-precondition', 'FAILED_PRECONDITION', /cannot copy an attached volume/],
    ] as const) {
      const fake = await fakeA(mode, 8 * MiB);
      try {
        const { code, details } = await failure(n.restore('refused', { snapshot: snapId }, { size: 8 * MiB }));
        assert.equal(code, want, mode);
        assert.match(details, why);
        assert.equal(fake.lines.filter((l) => l.startsWith('GET')).length, 1, 'asked once');
        await bLeftNothing();
      } finally {
        await fake.stop();
      }
    }
  });

  it('a FAKE receiver reading a KiB a second: A gives up after the stall window and lets go of the snapshot', async () => {
    await n.restartA();
    // More than the socket's and the kernel's buffers hold, so A waits on the reader.
    const vol = await volumeOnA('slow-src', 64 * MiB);
    await writeAt(imageOf('volumes', vol), 0, pattern('slow', 48 * MiB));
    const snap = (await n.a.client.createSnapshot({ name: 'slow-snap', source_volume_id: vol, parameters: {} })).snapshot!.snapshot_id;
    // The reader reads as B would: B's credential, for a claim of B's whose source is that snapshot.
    n.claim('slow-claim', { snapshot: snap });
    const reader = await runFake(n.hosts.b.ns, [n.listen, await n.credentialDir('node-b'), 'slow-reader', `/v1/snapshots/${snap}?claim=${NAMESPACE}/slow-claim`]);
    try {
      const failed = await pollUntil(async () => logged(n.a.logs, 'a transfer failed on the sending side').find((l) => l.id === snap), 30_000, async () => `A did not give up: ${reader.lines.join(' ')}`);
      assert.match(String(failed.err), /less than 1 MiB moved in 3 s/);
      assert.ok(reader.lines.includes('upgraded'), 'the reader got the stream');
      assert.equal(logged(n.a.logs, 'sent a volume to a peer').filter((l) => l.id === snap).length, 0, 'not counted as sent');
      // Released: the delete takes the snapshot's lock.
      await n.a.client.deleteSnapshot({ snapshot_id: snap });
      await n.a.client.deleteVolume({ volume_id: vol });
      assert.deepEqual(await readdir(path.join(n.a.poolDir, '.tmp')), [], 'nothing left on A');
    } finally {
      await reader.stop();
    }
  });

  it('--transfer-timeout ends a transfer still moving: on the receiver (B removes what it wrote) and on the sender (A lets go of the source)', async () => {
    // 8 MiB at 2 MiB/s: about four seconds, past a 2 s deadline on either side.
    await n.restartA(['--transfer-rate', '2Mi']);
    await n.restartB(['--transfer-timeout', '2s']);
    let f = await failure(n.restore('late-b', { snapshot: snapId }));
    assert.equal(f.code, 'UNAVAILABLE');
    assert.match(f.details, /deadline of 2 s/);
    await bLeftNothing();
    await pollUntil(async () => (logged(n.a.logs, 'a transfer failed on the sending side').length ? true : undefined), 15_000, async () => 'A did not see B go');

    await n.restartA(['--transfer-rate', '2Mi', '--transfer-timeout', '2s']);
    await n.restartB();
    f = await failure(n.restore('late-a', { snapshot: snapId }));
    assert.equal(f.code, 'UNAVAILABLE');
    await bLeftNothing();
    const gaveUp = await pollUntil(async () => logged(n.a.logs, 'a transfer failed on the sending side')[0], 15_000, async () => 'A did not give up');
    assert.match(String(gaveUp.err), /deadline of 2 s/);
    // The source is free again: a snapshot of the same volume and a delete of it take its locks at once.
    const again = (await n.a.client.createSnapshot({ name: 'snap-after-deadline', source_volume_id: srcId, parameters: {} })).snapshot!.snapshot_id;
    await n.a.client.deleteSnapshot({ snapshot_id: again });
    await n.restartA();
  });

  it("ENOSPC on B's disk while it writes the restore: RESOURCE_EXHAUSTED, nothing listed, no file left", async () => {
    // B's pool on a 64 MiB ext4 (no blocks reserved for root), filled by another file once B has made
    // its empty image: the pool's own accounting said yes, the disk says no.
    const scratch = await tempDir('vpool-enospc-');
    const img = path.join(scratch, 'fs.img');
    await n.b.stop();
    const poolDir = n.b.poolDir;
    await mkdir(poolDir, { recursive: true });
    await execFileP('truncate', ['-s', '64M', img]);
    await execFileP('mkfs.ext4', ['-q', '-m', '0', '-F', img]);
    await execFileP('mount', ['-o', 'loop', img, poolDir]);
    let big: string | undefined;
    let bigSnap: string | undefined;
    try {
      await n.restartB();
      await n.restartA(['--transfer-rate', '4Mi']);
      big = await volumeOnA('big', 32 * MiB);
      await writeAt(imageOf('volumes', big), 0, pattern('big', 24 * MiB));
      bigSnap = (await n.a.client.createSnapshot({ name: 'big-snap', source_volume_id: big, parameters: {} })).snapshot!.snapshot_id;
      const restoring = failure(n.restore('full', { snapshot: bigSnap }, { size: 32 * MiB }));
      await pollUntil(async () => ((await readdir(path.join(poolDir, '.tmp'))).some((f) => f.endsWith('.img')) ? true : undefined), 20_000, async () => 'B never made its image');
      // Every free block taken (B keeps writing meanwhile, so a size measured first could be too big): dd until
      // the disk says ENOSPC. No free-space check after it: B may already have failed and removed its image.
      const dd = await execFileP('dd', ['if=/dev/zero', `of=${path.join(poolDir, 'filler')}`, 'bs=256K', 'status=none']).then(
        () => '',
        (e: { stderr?: string }) => e.stderr ?? '',
      );
      assert.match(dd, /No space left/, 'dd of /dev/zero ends only when the disk is full');
      const { code, details } = await restoring;
      assert.equal(code, 'RESOURCE_EXHAUSTED');
      assert.match(details, /ENOSPC/);
      await rm(path.join(poolDir, 'filler'));
      await bLeftNothing();
    } finally {
      // A's volume and snapshot go whether or not the test passed, so the suite's leftover check reports only this failure.
      if (bigSnap) await n.a.client.deleteSnapshot({ snapshot_id: bigSnap }).catch(() => undefined);
      if (big) await n.a.client.deleteVolume({ volume_id: big }).catch(() => undefined);
      await rm(path.join(poolDir, 'filler'), { force: true });
      await n.b.stop();
      await execFileP('umount', [poolDir]);
      await rm(scratch, { recursive: true, force: true });
      await n.restartB();
      await n.restartA();
    }
  });
});

// Bounds that would end every transfer, or are no bounds at all, are refused when the plugin starts.
describe('transfer bounds the plugin refuses at start', needsRoot(), () => {
  it('--transfer-max-sends 0, --transfer-timeout past 24 days, a rate below the stall minimum: each a clear error, exit 1', async () => {
    const dir = await tempDir('vpool-bounds-flags-');
    const serve = (extra: string[]) =>
      execFileP(BIN, ['serve', '--endpoint', `unix://${path.join(dir, 'csi.sock')}`, '--pool-dir', path.join(dir, 'pool'), '--allowed-root', path.join(dir, 'mnt'), '--node-id', 'n', '--volume-pools', 'off', '--transfer-listen', '127.0.0.1:0', '--transfer-peers-from-cluster', 'app=vpool', ...extra], { timeout: 60_000, env: { ...process.env, POD_NAMESPACE: 'vpool' } }).then(
        () => ({ code: 0, stderr: '' }),
        (e: { code: number; stderr: string }) => e,
      );
    try {
      for (const [extra, message] of [
        [['--transfer-max-sends', '0'], /--transfer-max-sends is a whole number of at least 1, not "0"/],
        [['--transfer-timeout', '30d'], /--transfer-timeout is between 1s and 24d, not "30d"/],
        [['--transfer-rate', '10Ki', '--transfer-stall-timeout', '60s'], /--transfer-rate 10Ki sends less than 2 MiB per --transfer-stall-timeout 60s/],
      ] as const) {
        const res = await serve([...extra]);
        assert.equal(res.code, 1, extra.join(' '));
        assert.match(res.stderr, message);
      }
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
