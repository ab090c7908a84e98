import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlkioThrottle } from '../../src/host/blkio-throttle.js';
import { needsRoot } from '../helpers/driver.js';
import { hostCgroupVersion } from '../helpers/pod-cgroup.js';

const BLKIO = '/sys/fs/cgroup/blkio';
// The kernel takes rules only for block devices it has: loop devices' numbers (no data goes through them here).
const loopNumber = (n: number) => readFileSync(`/sys/block/loop${n}/dev`, 'utf8').trim();
const DEV = loopNumber(0);
const NONE = 'read_bps=- write_bps=- read_iops=- write_iops=-';

async function rules(cg: string, dev = DEV): Promise<string> {
  const out: string[] = [];
  for (const f of ['read_bps_device', 'write_bps_device', 'read_iops_device', 'write_iops_device']) {
    const line = (await readFile(path.join(cg, `blkio.throttle.${f}`), 'utf8')).split('\n').find((l) => l.startsWith(`${dev} `));
    out.push(`${f.split('_device')[0]}=${line?.split(' ')[1] ?? '-'}`);
  }
  return out.join(' ');
}

async function until(what: string, probe: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * cgroup v1's blkio throttling as the node plugin drives it, on this host's real v1 blkio hierarchy (a
 * tree of the test's own under it): v1 rules hold only their own cgroup's tasks, so the plugin writes them
 * down the pod's tree and into each cgroup made later, seen by inotify, and a walk puts back what a watch
 * missed. (Only a v1 host has the v1 hierarchy: a v2 host limits pods with io.max, test/vm/io-limits.)
 */
describe('cgroup v1 blkio throttling down a pod\'s cgroup tree (the real kernel files)', { ...needsRoot(), ...(hostCgroupVersion() === 2 ? { skip: 'this host runs cgroup v2: no v1 blkio hierarchy to write in' } : {}) }, () => {
  const top = path.join(BLKIO, `vpool-test-blkio-${process.pid}`);
  const pod = path.join(top, `pod${randomUUID()}`);
  const c1 = path.join(pod, 'cri-containerd-1.scope');
  const made: string[] = [];
  let t: BlkioThrottle;

  before(async () => {
    await mkdir(c1, { recursive: true });
    t = new BlkioThrottle(60_000);
  });
  after(async () => {
    t?.close();
    for (const d of [...made.reverse(), c1, pod, top]) await rmdir(d).catch(() => undefined);
  });

  it('writes the rules in the pod\'s cgroup and every cgroup under it, and in cgroups made later, nested ones too', async () => {
    await t.set(pod, DEV, { readIOPS: 500, writeBytesPerSecond: 20 << 20 });
    const want = `read_bps=- write_bps=${20 << 20} read_iops=500 write_iops=-`;
    assert.equal(await rules(pod), want);
    assert.equal(await rules(c1), want);
    assert.deepEqual(await t.get(pod, DEV), { readIOPS: 500, writeBytesPerSecond: 20 << 20 });
    const c2 = path.join(pod, 'cri-containerd-2.scope');
    await mkdir(c2);
    made.push(c2);
    await until('a container made later to get the rules', async () => (await rules(c2)) === want);
    // A cgroup a container makes under its own (systemd in a container): its tasks are held too.
    const nested = path.join(c2, 'inner');
    await mkdir(nested);
    made.push(nested);
    await until('a nested cgroup to get the rules', async () => (await rules(nested)) === want);
    assert.equal(t.held().get(pod), 4, 'one watch per cgroup of the tree: the pod, two containers, the nested one');
  });

  it('a cgroup removed loses its watch; one removed and made again under the same path is watched again (its cgroups made later get the rules)', async () => {
    const want = `read_bps=- write_bps=${20 << 20} read_iops=500 write_iops=-`;
    const c2 = path.join(pod, 'cri-containerd-2.scope');
    await rmdir(path.join(c2, 'inner'));
    await until('the nested cgroup\'s watch to close', async () => t.held().get(pod) === 3);
    await rmdir(c2);
    made.length = 0;
    await mkdir(c2);
    made.push(c2);
    await until('the container made again to get the rules', async () => (await rules(c2)) === want);
    const inner = path.join(c2, 'again');
    await mkdir(inner);
    made.push(inner);
    await until('a cgroup under the container made again to get the rules (it is watched anew)', async () => (await rules(inner)) === want);
  });

  it('a change lands everywhere, with figures it no longer names lifted; a rule lifted by hand comes back at the next walk', async () => {
    await t.set(pod, DEV, { readIOPS: 250 });
    const want = 'read_bps=- write_bps=- read_iops=250 write_iops=-';
    for (const cg of [pod, c1, ...made]) assert.equal(await rules(cg), want, cg);
    await writeFile(path.join(c1, 'blkio.throttle.read_iops_device'), `${DEV} 0`);
    assert.equal(await rules(c1), 'read_bps=- write_bps=- read_iops=- write_iops=-');
    await t.resync();
    assert.equal(await rules(c1), want);
  });

  it('lifting the last rule lifts it everywhere and stops watching the tree; a later cgroup gets nothing', async () => {
    assert.deepEqual([...t.held().keys()], [pod]);
    await t.set(pod, DEV, {});
    for (const cg of [pod, c1, ...made]) assert.equal(await rules(cg), 'read_bps=- write_bps=- read_iops=- write_iops=-', cg);
    assert.equal(t.held().size, 0, 'no watch left');
    const c3 = path.join(pod, 'cri-containerd-3.scope');
    await mkdir(c3);
    made.push(c3);
    await t.resync();
    assert.equal(await rules(c3), 'read_bps=- write_bps=- read_iops=- write_iops=-');
  });

  it('a pod whose cgroup went (the pod ended) is let go at the next walk; a bad device number or a cgroup without blkio files is refused', async () => {
    const gone = path.join(top, `pod${randomUUID()}`);
    await mkdir(gone);
    await t.set(gone, DEV, { writeIOPS: 100 });
    assert.ok(t.held().has(gone));
    await rmdir(gone);
    await t.resync();
    assert.ok(!t.held().has(gone), 'let go');
    await assert.rejects(t.set(pod, '7:0 100\n8:0', { readIOPS: 1 }), /not a major:minor device number/);
    await assert.rejects(t.set('/tmp', DEV, { readIOPS: 1 }), /has no blkio.throttle.read_bps_device/);
    assert.equal(await rules(pod), NONE, 'a refusal writes nothing');
    // A device number the kernel does not know: refused (not taken as a cgroup gone), and the pod not held for it.
    await assert.rejects(t.set(pod, '4095:1048575', { readIOPS: 1 }), /the kernel knows no block device 4095:1048575/);
    assert.ok(!t.held().has(pod), 'a rule that was not set is not kept');
  });

  it('two volumes of one pod lifted at once while a third is published: the pod stays held for the third, a container made later gets its rule', async () => {
    const [a, b, c] = [loopNumber(1), loopNumber(2), loopNumber(3)];
    await t.set(pod, a, { readIOPS: 100 });
    await t.set(pod, b, { readIOPS: 200 });
    await Promise.all([t.set(pod, a, {}), t.set(pod, b, {}), t.set(pod, c, { writeIOPS: 300 })]);
    assert.deepEqual([...t.held().keys()], [pod]);
    const c4 = path.join(pod, 'cri-containerd-4.scope');
    await mkdir(c4);
    made.push(c4);
    await until('the third volume\'s rule in a container made later', async () => (await rules(c4, c)) === 'read_bps=- write_bps=- read_iops=- write_iops=300');
    for (const d of [a, b]) assert.equal(await rules(c4, d), NONE);
    await t.set(pod, c, {});
    assert.equal(t.held().size, 0);
  });

  it('where the kernel refuses a watch (inotify\'s limit; a stand-in refuses every one), the rules are still written, and the walk reaches cgroups made later', async () => {
    const refusing = new BlkioThrottle(60_000, () => {
      throw Object.assign(new Error('ENOSPC: System limit for number of file watchers reached'), { code: 'ENOSPC' });
    });
    try {
      await refusing.set(pod, DEV, { readIOPS: 700 });
      const want = 'read_bps=- write_bps=- read_iops=700 write_iops=-';
      assert.equal(await rules(c1), want);
      const c5 = path.join(pod, 'cri-containerd-5.scope');
      await mkdir(c5);
      made.push(c5);
      assert.equal(await rules(c5), NONE, 'no watch: not at once');
      await refusing.resync();
      assert.equal(await rules(c5), want, 'the walk');
      await refusing.set(pod, DEV, {});
      for (const cg of [pod, c1, c5]) assert.equal(await rules(cg), NONE);
    } finally {
      refusing.close();
    }
  });
});
