import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { BlkioThrottle } from '../../src/host/blkio-throttle.js';
import { needsRoot } from '../helpers/driver.js';
import { hostCgroupVersion } from '../helpers/pod-cgroup.js';

const BLKIO = '/sys/fs/cgroup/blkio';
// A device number no disk here has: the kernel takes rules for any block device number it knows; 7:0 is loop0's.
const DEV = '7:0';

async function rules(cg: string): Promise<string> {
  const out: string[] = [];
  for (const f of ['read_bps_device', 'write_bps_device', 'read_iops_device', 'write_iops_device']) {
    const line = (await readFile(path.join(cg, `blkio.throttle.${f}`), 'utf8')).split('\n').find((l) => l.startsWith(`${DEV} `));
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
    assert.deepEqual(t.held(), [pod]);
    await t.set(pod, DEV, {});
    for (const cg of [pod, c1, ...made]) assert.equal(await rules(cg), 'read_bps=- write_bps=- read_iops=- write_iops=-', cg);
    assert.deepEqual(t.held(), [], 'no watch left');
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
    assert.ok(t.held().includes(gone));
    await rmdir(gone);
    await t.resync();
    assert.ok(!t.held().includes(gone), 'let go');
    await assert.rejects(t.set(pod, '7:0 100\n8:0', { readIOPS: 1 }), /not a major:minor device number/);
    await assert.rejects(t.set('/tmp', DEV, { readIOPS: 1 }), /has no blkio.throttle.read_bps_device/);
    assert.equal(await rules(pod), 'read_bps=- write_bps=- read_iops=- write_iops=-', 'a refusal writes nothing');
  });
});
