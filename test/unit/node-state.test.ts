import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { KeyedLocks } from '../../src/locks.js';
import { mountAt, parseMountInfo } from '../../src/host/mounts.js';
import { PathPolicy } from '../../src/host/paths.js';
import { DriverError } from '../../src/errors.js';
import { toStatus } from '../../src/csi/rpc.js';

describe('mountinfo parsing', () => {
  const text = [
    '22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw',
    '40 22 7:3 / /var/lib/kubelet/staging/pv\\040one rw,relatime shared:5 - xfs /dev/loop3 rw,attr2',
    '41 22 7:3 / /var/lib/kubelet/pods/p/volume ro,relatime shared:5 master:2 - xfs /dev/loop3 rw,attr2',
    '42 22 0:5 /loop4 /var/lib/kubelet/pods/p/dev rw - devtmpfs udev rw',
    '43 41 0:40 / /var/lib/kubelet/pods/p/volume rw - tmpfs tmpfs rw',
  ].join('\n');
  it('unescapes paths and reads optional fields, fs type and source', () => {
    const m = parseMountInfo(text);
    assert.equal(m.length, 5);
    assert.equal(m[1].mountPoint, '/var/lib/kubelet/staging/pv one');
    assert.deepEqual([m[1].majorMinor, m[1].fsType, m[1].source], ['7:3', 'xfs', '/dev/loop3']);
    assert.ok(m[2].options.includes('ro'));
    assert.equal(m[3].root, '/loop4');
  });
  it('returns the top of a stack of mounts at one path', () => {
    assert.equal(mountAt(parseMountInfo(text), '/var/lib/kubelet/pods/p/volume')?.fsType, 'tmpfs');
    assert.equal(mountAt(parseMountInfo(text), '/nowhere'), undefined);
  });
});

describe('path policy', () => {
  it('accepts paths under an allowed root and refuses escapes, relatives, symlinks and NUL', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-paths-'));
    const root = path.join(dir, 'kubelet');
    await mkdir(path.join(root, 'pods'), { recursive: true });
    await mkdir(path.join(dir, 'elsewhere'));
    await symlink(path.join(dir, 'elsewhere'), path.join(root, 'pods', 'link'));
    const policy = await PathPolicy.create([root]);
    assert.equal(await policy.resolve('target_path', path.join(root, 'pods', 'new')), path.join(root, 'pods', 'new'));
    const refused = async (p: string) => {
      try {
        await policy.resolve('target_path', p);
        return 'accepted';
      } catch (err) {
        return err instanceof DriverError ? status[toStatus(err).code] : String(err);
      }
    };
    for (const bad of [
      '',
      'relative/path',
      `${root}/../elsewhere/x`,
      `${root}/pods/link`, // the path itself is a symlink
      `${root}/pods/link/inside`, // a symlinked parent that leads out of the root
      '/etc/passwd',
      `${root}`, // the root itself is not a place to mount on
      `${root}/pods/a\0b`,
      `${root}/pods/./x`,
    ]) {
      assert.equal(await refused(bad), 'INVALID_ARGUMENT', JSON.stringify(bad));
    }
    await rm(dir, { recursive: true });
  });
});

describe('keyed locks', () => {
  it('serializes one key, runs different keys in parallel, and aborts past the queue bound', async () => {
    const locks = new KeyedLocks(2, 10_000);
    const order: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const first = locks.with(['a'], async () => {
      order.push('a1-start');
      await gate;
      order.push('a1-end');
    });
    const second = locks.with(['a'], async () => order.push('a2'));
    const other = locks.with(['b'], async () => order.push('b'));
    await other;
    assert.deepEqual(order, ['a1-start', 'b']);
    const third = locks.with(['a'], async () => order.push('a3'));
    const overflow = locks.with(['a'], async () => order.push('never'));
    await assert.rejects(overflow, (err: unknown) => err instanceof DriverError && toStatus(err).code === status.ABORTED);
    release();
    await Promise.all([first, second, third]);
    assert.deepEqual(order, ['a1-start', 'b', 'a1-end', 'a2', 'a3']);
    assert.deepEqual(locks.busyKeys(), []);
  });
  it('times out a waiter with ABORTED and still hands the lock on', async () => {
    const locks = new KeyedLocks(10, 50);
    let release!: () => void;
    const held = locks.with(['k'], () => new Promise<void>((r) => (release = r)));
    await assert.rejects(locks.with(['k'], async () => 1), (err: unknown) => err instanceof DriverError && toStatus(err).code === status.ABORTED);
    release();
    await held;
    assert.equal(await locks.with(['k'], async () => 42), 42);
  });
});
