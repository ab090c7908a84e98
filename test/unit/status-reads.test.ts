import assert from 'node:assert/strict';
import { it } from 'node:test';
import { OneRead } from '../../src/driver/status/collect.js';

it('status reads: one at a time; a read that hangs is given up on, holds off new ones (refused, not started) until it ends, and a tracked part counts as under way', async () => {
  const reads = new OneRead(200);
  let started = 0;
  let release!: () => void;
  const hung = new Promise<void>((r) => (release = r));
  const first = reads.run('the pool', async () => {
    started++;
    await hung;
    return 'late';
  });
  await assert.rejects(first, /the pool did not answer within 0\.2 s/);
  // The hung read goes on: a new call waits for it up to the limit, then is refused without starting another.
  await assert.rejects(reads.run('the pool', async () => (started++, 'x')), /an earlier read of the pool has not finished/);
  assert.equal(started, 1, 'no second read was started beside the hung one');
  release();
  await new Promise((r) => setImmediate(r));
  assert.equal(await reads.run('the pool', async () => (started++, 'fresh')), 'fresh');
  assert.equal(started, 2);

  // A part the read gave up on (collectStatus's within) but registered with track keeps the next read out.
  let releasePart!: () => void;
  const part = new Promise<void>((r) => (releasePart = r));
  assert.equal(await reads.run('the status', async (track) => (void track(part).catch(() => undefined), 'partial')), 'partial');
  await assert.rejects(reads.run('the status', async () => 'x'), /has not finished/);
  releasePart();
  await new Promise((r) => setImmediate(r));
  assert.equal(await reads.run('the status', async () => 'whole'), 'whole');
});
