import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { lstat, mkdir, mkdtemp, rename, rm, stat, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { blockCap } from '../helpers/csi.js';
import { finish, BIN, MiB, needsRoot, startDriver } from '../helpers/driver.js';

const execFileP = promisify(execFile);

describe('serve', needsRoot(), () => {
  it('creates the socket 0660, removes it on SIGTERM and exits 0', async () => {
    const d = await startDriver();
    const st = await lstat(d.socket);
    assert.ok(st.isSocket());
    assert.equal(st.mode & 0o777, 0o660);
    assert.deepEqual(await finish(d), []);
    assert.equal(await d.exited, 0);
    await assert.rejects(lstat(d.socket), { code: 'ENOENT' });
  });

  it('drains an in-flight call on SIGTERM before exiting', async () => {
    const d = await startDriver();
    const v = (await d.client.createVolume({ name: 'src', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [blockCap()] })).volume!;
    // Give the source real data so the snapshot copy takes a moment.
    const fh = await (await import('node:fs/promises')).open(path.join(d.poolDir, 'volumes', `${v.volume_id}.img`), 'r+');
    for (let off = 0; off < 64 * MiB; off += 8 * MiB) await fh.write(Buffer.alloc(8 * MiB, 7), 0, 8 * MiB, off);
    await fh.close();
    let done = false;
    const inflight = d.client.createSnapshot({ name: 'during-shutdown', source_volume_id: v.volume_id }).finally(() => (done = true));
    // Signal only once the copy is under way (its temporary exists), so the call is surely in flight.
    const { readdir } = await import('node:fs/promises');
    const deadline = Date.now() + 10_000;
    while (!(await readdir(path.join(d.poolDir, '.tmp'))).some((f) => f.startsWith('snap-during-shutdown'))) {
      assert.ok(!done && Date.now() < deadline, 'the snapshot copy was never seen in flight');
      await new Promise((r) => setTimeout(r, 1));
    }
    d.proc.kill('SIGTERM');
    const snap = await inflight;
    assert.equal(snap.snapshot?.ready_to_use, true, 'the call in flight at SIGTERM completed');
    assert.equal(await d.exited, 0);
    const again = await d.restart();
    assert.equal((await again.client.listSnapshots({})).entries.length, 1);
    await again.client.deleteSnapshot({ snapshot_id: snap.snapshot!.snapshot_id });
    await again.client.deleteVolume({ volume_id: v.volume_id });
    assert.deepEqual(await finish(again), []);
  });

  it('replaces a stale socket left by a crash, and refuses to take over a live one', async () => {
    const d = await startDriver();
    await d.stop('SIGKILL');
    assert.ok((await lstat(d.socket)).isSocket(), 'kill -9 leaves the socket file');
    const d2 = await d.restart();
    assert.equal((await d2.client.probe({})).ready?.value, true);
    const third = spawn(BIN, ['serve', '--endpoint', d2.endpoint, '--pool-dir', d2.poolDir, '--allowed-root', d2.mntDir], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    third.stderr.on('data', (b: Buffer) => (err += b.toString()));
    const code = await new Promise<number | null>((r) => third.once('exit', r));
    assert.equal(code, 1);
    assert.match(err, /another process is serving/);
    assert.equal((await d2.client.probe({})).ready?.value, true, 'the live driver kept its socket');
    assert.deepEqual(await finish(d2), []);
  });

  it('refuses to replace an endpoint path that is not a socket', async () => {
    const dir = await mkdtemp('/var/tmp/vpool-sock-');
    const file = path.join(dir, 'csi.sock');
    await writeFile(file, 'not a socket');
    const res = await execFileP(BIN, ['serve', '--endpoint', `unix://${file}`, '--pool-dir', path.join(dir, 'pool'), '--allowed-root', path.join(dir, 'mnt')]).catch((e: { code: number; stderr: string }) => e);
    assert.equal((res as { code: number }).code, 1);
    assert.match((res as { stderr: string }).stderr, /is not a socket/);
    assert.equal((await stat(file)).size, 12);
    await rm(dir, { recursive: true });
  });

  it('Probe is not ready while the pool directory is unusable, and ready again when it returns', async () => {
    const d = await startDriver();
    const vols = path.join(d.poolDir, 'volumes');
    await rename(vols, `${vols}.away`);
    assert.equal((await d.client.probe({})).ready?.value, false);
    await rename(`${vols}.away`, vols);
    assert.equal((await d.client.probe({})).ready?.value, true);
    assert.deepEqual(await finish(d), []);
  });

  it('--mode node serves no Controller service; --mode controller serves no Node service', async () => {
    const node = await startDriver({ args: ['--mode', 'node'] });
    await assert.rejects(node.client.controllerGetCapabilities({}), { code: 12 /* UNIMPLEMENTED */ });
    assert.equal((await node.client.nodeGetInfo({})).node_id, 'test-node');
    const caps = (await node.client.getPluginCapabilities({})).capabilities.map((c) => c.service?.type).filter(Boolean);
    assert.ok(!caps.includes('CONTROLLER_SERVICE'));
    assert.deepEqual(await finish(node), []);
    const ctl = await startDriver({ args: ['--mode', 'controller'] });
    await assert.rejects(ctl.client.nodeGetInfo({}), { code: 12 });
    assert.equal((await ctl.client.controllerGetCapabilities({})).capabilities.length > 0, true);
    assert.deepEqual(await finish(ctl), []);
  });

  it('--reserve keeps free space back from GetCapacity and CreateVolume', async () => {
    const plain = await startDriver();
    const avail = Number((await plain.client.getCapacity({})).available_capacity);
    assert.deepEqual(await finish(plain), []);
    // Margins wide enough for the filesystem's free space to move a little between the two drivers.
    const reserve = Math.max(0, avail - 256 * MiB);
    const d = await startDriver({ args: ['--reserve', String(reserve)] });
    const left = Number((await d.client.getCapacity({})).available_capacity);
    assert.ok(left > 0 && left <= 1024 * MiB, `reserve honoured: ${left} bytes left of ${avail}`);
    const big = d.client.createVolume({ name: 'too-big', capacity_range: { required_bytes: String(4096 * MiB) }, volume_capabilities: [blockCap()] });
    await assert.rejects(big, { code: 8 /* RESOURCE_EXHAUSTED */ });
    assert.deepEqual(await finish(d), []);
  });
});

describe('socket client', () => {
  it('a unix socket that nobody serves is reported, not hung on', async () => {
    const dir = await mkdtemp('/var/tmp/vpool-nosrv-');
    await mkdir(dir, { recursive: true });
    const srv = net.createServer();
    await new Promise<void>((r) => srv.listen(path.join(dir, 's.sock'), r));
    srv.close();
    const res = await execFileP(BIN, ['client', '--endpoint', `unix://${dir}/s.sock`, 'probe'], { timeout: 60_000 }).catch((e: { code: number; stderr: string }) => e);
    assert.equal((res as { code: number }).code, 4, 'exit 4: no driver answered');
    assert.match((res as { stderr: string }).stderr, /^vpool-csi: (nothing accepts connections|no driver listening) at .*s\.sock/);
    await rm(dir, { recursive: true });
  });
});
