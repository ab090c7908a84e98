import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CommandError, run } from '../../src/exec.js';
import { PROJECT_ROOT } from '../../src/csi/proto.js';
import { blockCap } from '../helpers/csi.js';
import { BIN, codeOf, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { forgetVg, loopDisks, poolCmd, uniqueVg, type LoopDisks } from '../helpers/lvm.js';
import { httpBase, samples } from '../helpers/metrics.js';

const HUNG_FILE = path.join(PROJECT_ROOT, '.tools/bin/hung-file');

/** Polls until `check` holds; fails with `what` past `ms`. */
async function until(what: string, ms: number, check: () => Promise<boolean> | boolean): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`not within ${ms} ms: ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A call that must answer, whatever it answers: one that went to lvm on the hung PV would wait out lvm's 120 s. */
const answered: Array<{ what: string; ms: number }> = [];
async function answers<T>(what: string, p: Promise<T>): Promise<T> {
  const started = Date.now();
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not answer within 30 s while a PV hung`)), 30_000);
  });
  try {
    const got = await Promise.race([p, late]);
    answered.push({ what, ms: Date.now() - started });
    return got;
  } finally {
    clearTimeout(timer);
  }
}

const procState = async (pid: number) => (await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '')).replace(/^.*\) /s, '')[0];

// A MODEL of a hung disk: a loop device over the one file of a FUSE filesystem (test/tools/hung-file.c)
// whose daemon withholds every answer while a freeze file exists. What the kernel does with it is real:
// a read waits in uninterruptible sleep, SIGKILL does not end the reader, and it goes on once the
// answers come. (No device-mapper on this host for dm-delay or a suspended table.) The VG spans that
// device and a plain loop device.
describe('an lvm pool with a PV on a disk that stops answering (a MODEL of a hung disk: loop over FUSE, test/tools/hung-file.c)', needsRoot(), () => {
  let dir: string;
  let freeze: string;
  let mnt: string;
  let daemon: ChildProcess;
  let hungDev = '';
  // The hung device named in a text, not a longer name it begins (/dev/loop1 in /dev/loop10).
  const namesDev = (text: string) => new RegExp(`${hungDev}(?![0-9])`).test(text);
  let good: LoopDisks;
  let d: Driver | undefined;
  const vg = uniqueVg('vhd');

  before(async () => {
    dir = await mkdtemp('/var/tmp/vpool-hung-disk-');
    const backing = path.join(dir, 'backing');
    freeze = path.join(dir, 'frozen');
    mnt = path.join(dir, 'mnt');
    await mkdir(mnt);
    await writeFile(backing, '');
    await truncate(backing, 64 * MiB);
    // Its stdin is ours: if this process dies, the daemon answers again (nothing stays hung after us).
    daemon = spawn(HUNG_FILE, [backing, freeze, mnt], { stdio: ['pipe', 'ignore', 'inherit'] });
    await until('the FUSE file is there', 10_000, async () => {
      assert.equal(daemon.exitCode, null, 'hung-file exited');
      return (await stat(path.join(mnt, 'disk')).catch(() => null))?.size === 64 * MiB;
    });
    hungDev = execFileSync('losetup', ['--find', '--show', path.join(mnt, 'disk')], { encoding: 'utf8' }).trim();
    good = await loopDisks(1, 128 * MiB);
    const init = await poolCmd('init', '--vg', vg, good.devices[0], hungDev);
    assert.equal(init.code, 0, init.stderr);
    d = await startDriver({ args: ['--backend', 'lvm', '--vg', vg, '--health-address', '127.0.0.1:0', '--metrics-address', '127.0.0.1:0'] });
  });

  after(async () => {
    // Each step on its own: one that fails must not leave the disk frozen, mounted or attached.
    const step = async (what: string, f: () => unknown) => {
      try {
        await f();
      } catch (err) {
        console.error(`cleanup: ${what}: ${String(err)}`);
      }
    };
    await step('thaw', () => rm(freeze, { force: true }));
    await step('stop the driver', () => d?.stop());
    await step('remove the VG', () => forgetVg(vg, [good?.devices[0], hungDev].filter((x): x is string => !!x)));
    await step('detach the hung loop device', () => hungDev && execFileSync('losetup', ['-d', hungDev]));
    await step('release the good disk', () => good?.release());
    // losetup -d of a device still open is deferred: a lazy unmount does not wait for it.
    await step('unmount the FUSE file', () => execFileSync('umount', ['-l', mnt]));
    await step('end hung-file', async () => {
      daemon.stdin?.end();
      if (daemon.exitCode === null && daemon.signalCode === null) {
        const ended = new Promise((r) => daemon.once('exit', r));
        const timer = setTimeout(() => daemon.kill('SIGKILL'), 10_000);
        await ended;
        clearTimeout(timer);
      }
    });
    await step('remove its directory', () => rm(dir, { recursive: true, force: true }));
  });

  it('Probe, /healthz and calls answer at once while the PV hangs (Probe ready: a restart cannot help; /healthz 503 and the calls UNAVAILABLE, naming it); a command stuck on it is left behind after SIGKILL; all serves again once it answers', async (t) => {
    const driver = d!;
    const create = (name: string) => driver.client.createVolume({ name, capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()] });
    const before = (await create('before-the-hang')).volume!;
    assert.equal((await driver.client.probe({})).ready?.value, true);

    // The headers were just read (Probe); nothing flushes the page cache: the driver must not take a cached copy for the disk's answer.
    await writeFile(freeze, '');
    // Positive control: a direct read of the device now waits in the kernel (D state), where SIGKILL cannot end it.
    const reader = spawn('dd', [`if=${hungDev}`, 'of=/dev/null', 'bs=4096', 'count=1', 'iflag=direct'], { stdio: 'ignore' });
    await until('dd waits in uninterruptible sleep on the frozen device', 20_000, async () => (await procState(reader.pid!)) === 'D');
    reader.kill('SIGKILL');
    // The one command runner: a command stuck so is left behind after the grace period, not waited for.
    const stuck = await answers(
      'a stuck dd through the runner',
      run('dd', [`if=${hungDev}`, 'of=/dev/null', 'bs=4096', 'count=1', 'skip=1', 'iflag=direct'], { timeoutMs: 500 }).then(
        () => null,
        (e: unknown) => e,
      ),
    );
    assert.ok(stuck instanceof CommandError && stuck.timedOut, `the stuck dd timed out: ${String(stuck)}`);
    assert.match(stuck.stderr, /did not end within 5000 ms of SIGKILL/);
    // (That run is the proof that SIGKILL does not end a reader of the frozen device: dd did not end within 5 s of it.)

    answered.length = 0;
    {
      const probe = await answers('Probe', driver.client.probe({}));
      // The livenessprobe sidecar restarts a plugin whose Probe is not ready; a restart cannot help a hung disk.
      assert.equal(probe.ready?.value, true, 'Probe stays ready while a PV of the pool hangs');
      await until('Probe logs why it answers ready', 10_000, () => driver.logs.some((l) => l.includes('a disk of the pool does not answer; ready all the same') && namesDev(l)));
      const health = await answers('/healthz', fetch(`${httpBase(driver)}/healthz`));
      assert.equal(health.status, 503);
      assert.ok(namesDev(await health.text()), '/healthz names the PV');
      // What an operator alerts on (Probe stays ready): the stuck read, and the pool down.
      const scraped = await (await answers('/metrics', fetch(`${httpBase(driver)}/metrics`))).text();
      assert.equal(samples(scraped, 'vpool_csi_pv_reads_stuck').get(''), 1);
      assert.equal(samples(scraped, 'vpool_csi_pool_up').get('{backend="lvm"}'), 0);
      assert.equal((await answers('GetPluginInfo', driver.client.getPluginInfo({}))).manifest?.backend, 'lvm');
      assert.ok((await answers('NodeGetInfo', driver.client.nodeGetInfo({}))).node_id);
      const during = await answers('CreateVolume', create('during-the-hang').then(() => null, (e: Error & { code?: number }) => e));
      assert.equal(await codeOf(Promise.reject(during)), 'UNAVAILABLE');
      assert.match(String(during?.message), new RegExp(`${hungDev}.*(not read within|still out past its deadline)`));
      assert.equal(await answers('ListVolumes', codeOf(driver.client.listVolumes({}))), 'UNAVAILABLE');
      assert.ok(driver.logs.some((l) => l.includes('a PV of the pool does not answer') && namesDev(l)), 'the driver says which PV');
      // What a person runs: `status` says which part did not answer and why (exit 5), twice in a row, and the volume table
      // is refused naming the PV (exit 4); none of them waits on the disk or starts an lvm command that would.
      const cli = (args: string[]) =>
        new Promise<{ code: number; stdout: string; stderr: string; ms: number }>((resolve) => {
          const t0 = Date.now();
          execFile(BIN, args, { timeout: 60_000 }, (err, stdout, stderr) => resolve({ code: err ? Number((err as { code?: number }).code) : 0, stdout, stderr, ms: Date.now() - t0 }));
        });
      for (const round of [1, 2]) {
        const st = await cli(['status', '--endpoint', driver.endpoint, '-o', 'json']);
        assert.equal(st.code, 5, `status ${round}: needs attention`);
        const s = JSON.parse(st.stdout) as { pool: { error?: string }; volumes: { error?: string }; attention: string[] };
        assert.ok(s.pool.error && namesDev(s.pool.error), `status ${round}: the pool part names the PV: ${s.pool.error}`);
        assert.ok(s.volumes.error && namesDev(s.volumes.error), `status ${round}: the volume part names the PV: ${s.volumes.error}`);
        assert.ok(st.ms < 10_000, `status ${round} took ${st.ms} ms`);
      }
      const table = await cli(['client', '--endpoint', driver.endpoint, '-o', 'table', 'list-volumes']);
      assert.equal(table.code, 4);
      assert.ok(namesDev(table.stderr) && /\(UNAVAILABLE\)$/m.test(table.stderr), table.stderr);
    }
    // The freeze held throughout: the pool is still not usable.
    assert.equal((await answers('/healthz again', fetch(`${httpBase(driver)}/healthz`))).status, 503, 'still not usable: the PV still hangs');
    t.diagnostic(`answered while the PV hung: ${answered.map((a) => `${a.what} ${a.ms} ms`).join(', ')}`);
    // Only the first caller waits out the read's deadline (2 s); the rest know the PV is stuck and do not wait theirs.
    for (const a of answered.slice(1)) assert.ok(a.ms < 2_000, `${a.what} answered in ${a.ms} ms: it waited out a read's deadline again`);

    // The disk answers again: the stuck reads return, the killed reader ends, the pool serves.
    await rm(freeze);
    await until('the killed reader ends', 30_000, () => reader.exitCode !== null || reader.signalCode !== null);
    await until('/healthz says ok again', 60_000, async () => (await fetch(`${httpBase(driver)}/healthz`)).status === 200);
    assert.equal(samples(await (await fetch(`${httpBase(driver)}/metrics`)).text(), 'vpool_csi_pv_reads_stuck').get(''), 0);
    const afterwards = (await create('after-the-hang')).volume!;
    const ids = (await driver.client.listVolumes({})).entries!.map((e) => e.volume!.volume_id).sort();
    assert.deepEqual(ids, [before.volume_id, afterwards.volume_id].sort(), 'nothing was made during the hang');
  });
});
