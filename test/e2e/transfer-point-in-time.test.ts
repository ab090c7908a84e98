import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { status } from '@grpc/grpc-js';
import { blockCap, createVolume, paths } from '../helpers/csi.js';
import { writeAt } from '../helpers/data.js';
import { MiB, needsRoot, pattern, type Driver } from '../helpers/driver.js';
import { pollUntil } from '../helpers/libvirt.js';
import { transferNodes, type TransferNodes } from '../helpers/transfer-nodes.js';

const execFileP = promisify(execFile);
const SIZE = 64 * MiB;
/** A's sending rate: slow enough that a stream of a few MiB is still going when the test acts on it. */
const RATE = ['--transfer-rate', String(4 * MiB)];

const imageOf = (d: Driver, id: string) => path.join(d.poolDir, 'volumes', `${id}.img`);
const tmpOf = (d: Driver) => readdir(path.join(d.poolDir, '.tmp'));
/** Bytes the pool directory has allocated on its filesystem (its own, whatever else shares the disk). */
const allocatedBytes = async (dir: string) => Number((await execFileP('du', ['-s', '-B1', dir])).stdout.split(/\s/)[0]);
const loopsOf = async (image: string) => (await execFileP('losetup', ['-n', '-O', 'NAME', '-j', image])).stdout.trim();

/** The SHA-256 of a file of any size, streamed. */
async function sha256File(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file, { highWaterMark: 4 * MiB })) h.update(chunk as Buffer);
  return h.digest('hex');
}

/** The gRPC code name and message of a refused call. */
async function refusal(p: Promise<unknown>): Promise<{ code: string; message: string }> {
  try {
    await p;
  } catch (err) {
    const e = err as { code?: number; details?: string };
    return { code: e.code === undefined ? String(err) : status[e.code], message: e.details ?? '' };
  }
  return { code: 'OK', message: '' };
}

/** NodeStageVolume as raw block: the volume attached (a loop device backs its image), as under a pod. */
async function stage(d: Driver, id: string): Promise<{ device: string; unstage(): Promise<void> }> {
  const p = await paths(d, id);
  await d.client.nodeStageVolume({ volume_id: id, staging_target_path: p.staging, volume_capability: blockCap() });
  const device = (await loopsOf(imageOf(d, id))).split('\n')[0];
  assert.match(device, /^\/dev\/loop\d+$/);
  return { device, unstage: async () => void (await d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: p.staging })) };
}

/** Until A says it is streaming this volume (its source is open: the point in time is taken). */
const sending = (a: Driver, id: string) =>
  pollUntil(async () => (a.logs.some((l) => l.includes('sending a volume to a peer') && l.includes(id)) ? true : undefined), 60_000, async () => `A never started sending ${id}`);

describe('a clone of a file volume is of one point in time, or refused: a pool on ext4 (no reflink)', needsRoot(), () => {
  let n: TransferNodes;
  before(async () => {
    n = await transferNodes('vpe', { aArgs: RATE });
  });
  after(async () => {
    assert.deepEqual(await n.remove(), []);
  });

  it('a clone of an attached volume is refused FAILED_PRECONDITION, locally and to another node, saying what to do; nothing is made', async () => {
    const src = await createVolume(n.a, 'attached', SIZE, blockCap());
    await writeAt(imageOf(n.a, src.volume_id), 0, pattern('attached', 4 * MiB));
    const st = await stage(n.a, src.volume_id);
    try {
      const local = await refusal(createVolume(n.a, 'local-clone', SIZE, blockCap(), { source: { volume: src.volume_id } }));
      assert.equal(local.code, 'FAILED_PRECONDITION');
      assert.match(local.message, /is attached .* cannot reflink, so a clone of it would not be a copy of one point in time; take a VolumeSnapshot of it while the workload is quiesced .*, or detach it/);
      const remote = await refusal(n.restore('remote-clone', { volume: src.volume_id }));
      assert.equal(remote.code, 'FAILED_PRECONDITION', remote.message);
      assert.match(remote.message, /refused to send volume .* cannot reflink, so sending it to another node would not be a copy of one point in time/);
      assert.deepEqual((await n.a.client.listVolumes({})).entries.map((e) => e.volume!.volume_id), [src.volume_id], 'A made nothing');
      assert.deepEqual((await n.b.client.listVolumes({})).entries, [], 'B made nothing');
      assert.deepEqual(await tmpOf(n.a), []);
      assert.deepEqual(await tmpOf(n.b), []);
    } finally {
      await st.unstage();
    }
    await n.a.client.deleteVolume({ volume_id: src.volume_id });
  });

  it('a detached 2 GiB volume is sent with no copy (A allocates nothing, its .tmp stays empty) under its lock (a stage waits for the stream), and the clone is right', async () => {
    const big = 2048 * MiB;
    const src = await createVolume(n.a, 'big', big, blockCap());
    for (const [i, at] of [0, 1024 * MiB, big - 4 * MiB].entries()) await writeAt(imageOf(n.a, src.volume_id), at, pattern(`big-${i}`, 4 * MiB));
    const want = await sha256File(imageOf(n.a, src.volume_id));
    const poolBefore = await allocatedBytes(n.a.poolDir);

    const clone = n.restore('big-clone', { volume: src.volume_id }, { size: big });
    await sending(n.a, src.volume_id);
    // A NodeStageVolume of the source now waits for the volume's lock, which the stream holds.
    const p = await paths(n.a, src.volume_id);
    const staged = n.a.client.nodeStageVolume({ volume_id: src.volume_id, staging_target_path: p.staging, volume_capability: blockCap() });
    const sent = (l: string) => l.includes('sent a volume to a peer') && l.includes(src.volume_id);
    let checks = 0;
    for (; !n.a.logs.some(sent); checks++) {
      assert.deepEqual(await tmpOf(n.a), [], 'no copy for sending');
      assert.equal(await allocatedBytes(n.a.poolDir), poolBefore, "A's pool allocated nothing");
      const loops = await loopsOf(imageOf(n.a, src.volume_id));
      // Logged before the stream lets go of the lock: until then, no stage can have attached it.
      if (!n.a.logs.some(sent)) assert.equal(loops, '', 'nothing attached the source while it was read');
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(checks >= 5, `looked ${checks} times while it streamed`);
    const made = await clone;
    assert.equal(await sha256File(imageOf(n.b, made.volume_id)), want, "B's clone is A's volume");
    await staged;
    const order = n.a.logs.map((l, i) => ({ l, i }));
    const stagedAt = order.find(({ l }) => l.includes('"rpc"') && l.includes('NodeStageVolume') && l.includes(src.volume_id))?.i ?? -1;
    assert.ok(stagedAt > order.find(({ l }) => sent(l))!.i, 'the stage finished after the stream ended');
    assert.notEqual(await loopsOf(imageOf(n.a, src.volume_id)), '', 'the stage went through once the stream let go');
    await n.a.client.nodeUnstageVolume({ volume_id: src.volume_id, staging_target_path: p.staging });
    await n.b.client.deleteVolume({ volume_id: made.volume_id });
    await n.a.client.deleteVolume({ volume_id: src.volume_id });
  });
});

describe('a clone of a file volume is of one point in time: a pool on XFS with reflink', needsRoot(), () => {
  let n: TransferNodes;
  let xfs: { dir: string; file: string; mnt: string };
  const base = process.env.VPOOL_TEST_DIR;
  before(async () => {
    const dir = await mkdtemp('/var/tmp/vpool-xfs-');
    xfs = { dir, file: path.join(dir, 'xfs.img'), mnt: path.join(dir, 'mnt') };
    await execFileP('truncate', ['-s', '3G', xfs.file]);
    await execFileP('mkfs.xfs', ['-q', '-m', 'reflink=1', xfs.file]);
    await execFileP('mkdir', ['-p', xfs.mnt]);
    await execFileP('mount', ['-o', 'loop', xfs.file, xfs.mnt]);
    // Both nodes' pools (and everything else of theirs) on the XFS filesystem.
    process.env.VPOOL_TEST_DIR = xfs.mnt;
    n = await transferNodes('vpx', { aArgs: RATE });
  });
  after(async () => {
    if (base === undefined) delete process.env.VPOOL_TEST_DIR;
    else process.env.VPOOL_TEST_DIR = base;
    const left = n ? await n.remove() : [];
    await execFileP('umount', [xfs.mnt]).catch(() => undefined);
    await rm(xfs.dir, { recursive: true, force: true });
    assert.deepEqual(left, []);
  });

  it('an attached volume is cloned by reflink: locally (extents shared), and to another node as of when the stream began (a write after it is not in the clone)', async () => {
    const src = await createVolume(n.a, 'live', SIZE, blockCap());
    await writeAt(imageOf(n.a, src.volume_id), 0, pattern('live', 16 * MiB));
    const st = await stage(n.a, src.volume_id);
    try {
      const local = await createVolume(n.a, 'live-local', SIZE, blockCap(), { source: { volume: src.volume_id } });
      assert.equal(await sha256File(imageOf(n.a, local.volume_id)), await sha256File(imageOf(n.a, src.volume_id)));
      assert.match((await execFileP('filefrag', ['-v', imageOf(n.a, local.volume_id)])).stdout, /shared/, 'the local clone shares its extents with the source: a reflink');

      const atStart = await sha256File(imageOf(n.a, src.volume_id));
      const remote = n.restore('live-remote', { volume: src.volume_id });
      await sending(n.a, src.volume_id);
      // The workload writes (through the attached loop device) while the stream is under way.
      await writeAt(st.device, 8 * MiB, pattern('later', 4 * MiB));
      assert.notEqual(await sha256File(imageOf(n.a, src.volume_id)), atStart, 'the write reached the source');
      const made = await remote;
      assert.equal(await sha256File(imageOf(n.b, made.volume_id)), atStart, 'the clone is the source as of the start of the stream, without the later write');
      assert.deepEqual(await tmpOf(n.a), [], "A's reflink for sending is gone");
      await n.b.client.deleteVolume({ volume_id: made.volume_id });
      await n.a.client.deleteVolume({ volume_id: local.volume_id });
    } finally {
      await st.unstage();
    }
    await n.a.client.deleteVolume({ volume_id: src.volume_id });
  });
});
