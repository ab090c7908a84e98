import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { openBackend, type OpenPool } from '../../src/cli/backends.js';
import { ServedPool, type ServedOpen } from '../../src/cli/served-pool.js';

describe('the served pool: parts wired before it opens start with it', () => {
  let dir: string;
  let pool: OpenPool;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-served-'));
    pool = await openBackend({ kind: 'file', poolDir: path.join(dir, 'pool'), reserveBytes: 0 }, 'all');
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('a waiting pool says why until it opens and its VolumePool is reported served', () => {
    const served = ServedPool.waiting('waiting for VolumePool p to be built on this node');
    const early: ServedOpen[] = [];
    served.whenOpen((o) => early.push(o));
    assert.equal(served.notServing, 'waiting for VolumePool p to be built on this node');
    assert.equal(early.length, 0);
    served.setOpen('file', pool);
    assert.deepEqual(early, [{ kind: 'file', pool }], 'what waited started once, with the pool');
    assert.ok(served.notServing, 'open, but not serving until the VolumePool is reported served');
    served.setReason(undefined);
    assert.equal(served.notServing, undefined);
    const late: ServedOpen[] = [];
    served.whenOpen((o) => late.push(o));
    assert.deepEqual(late, [{ kind: 'file', pool }], 'what is wired after the pool opened starts at once');
    assert.throws(() => served.setOpen('file', pool), /already open/);
  });

  it('a pool open from the start serves at once', () => {
    const served = ServedPool.open('file', pool);
    assert.equal(served.notServing, undefined);
    served.setReason('VolumePool p failed on this node: disk gone');
    assert.match(served.notServing ?? '', /failed/);
  });
});
