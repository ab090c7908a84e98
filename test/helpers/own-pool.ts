import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before } from 'node:test';
import { finish, startDriver, type Driver } from './driver.js';

const execFileP = promisify(execFile);

/**
 * A driver whose file pool lies on a filesystem of its own, mounted from a loop file for the suite:
 * XFS with reflink (snapshots and clones by reflink) or ext4 (copies). `box.d` is the driver (a test
 * that restarts it puts the new one there, so the suite's end stops and checks that one).
 */
export function useOwnPool(fs: 'xfs' | 'ext4'): { d: Driver } {
  const box = {} as { d: Driver };
  let own: { dir: string; mnt: string } | undefined;
  let saved: string | undefined;
  before(async () => {
    const dir = await mkdtemp(`/var/tmp/vpool-${fs}-`);
    own = { dir, mnt: path.join(dir, 'mnt') };
    const img = path.join(dir, 'fs.img');
    await execFileP('truncate', ['-s', '2G', img]);
    await execFileP(`mkfs.${fs}`, fs === 'xfs' ? ['-q', '-m', 'reflink=1', img] : ['-q', '-F', img]);
    await execFileP('mkdir', ['-p', own.mnt]);
    await execFileP('mount', ['-o', 'loop', img, own.mnt]);
    saved = process.env.VPOOL_TEST_DIR;
    process.env.VPOOL_TEST_DIR = own.mnt;
    box.d = await startDriver();
  });
  after(async () => {
    if (saved === undefined) delete process.env.VPOOL_TEST_DIR;
    else process.env.VPOOL_TEST_DIR = saved;
    const left = box.d ? await finish(box.d) : [];
    if (own) {
      await execFileP('umount', [own.mnt]).catch(() => undefined);
      await rm(own.dir, { recursive: true, force: true });
    }
    assert.deepEqual(left, [], 'the suite leaves no loop device, mount or pool file');
  });
  return box;
}
