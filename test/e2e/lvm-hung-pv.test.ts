import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { constants } from 'node:fs';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PvReadTimeout, readPvMetadataVersion, stuckPvReads } from '../../src/pool/lvm/pv-headers.js';
import { needsRoot } from '../helpers/driver.js';
import { forgetVg, loopDisks, uniqueVg } from '../helpers/lvm.js';

const MiB = 1024 * 1024;

async function until(what: string, check: () => boolean): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`not within 30 s: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Lets a read blocked on a FIFO go (an opener for writing arrives and leaves), so a failed test cannot wait on it for ever. */
async function release(fifo: string): Promise<void> {
  const fh = await open(fifo, constants.O_RDWR | constants.O_NONBLOCK).catch(() => null);
  await fh?.close();
}

// A PV that does not answer, modelled by a FIFO with no writer: open(2) of it blocks in the kernel as
// a read of a hung disk does (no device-mapper here for dm-delay or a suspended table). A real PV on a
// loop device beside it answers.
describe('the metadata header read of a PV that does not answer', needsRoot(), () => {
  let dir: string;
  let disks: Awaited<ReturnType<typeof loopDisks>>;
  let vg: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-hung-pv-'));
    disks = await loopDisks(1, 64 * MiB);
    vg = uniqueVg('vph');
    execFileSync('vgcreate', ['--config', 'global{activation=0}', '-q', '-y', vg, disks.devices[0]], { stdio: 'ignore' });
  });
  after(async () => {
    await forgetVg(vg, disks.devices);
    await disks.release();
    await rm(dir, { recursive: true, force: true });
  });

  it('times out without stalling the event loop, starts no second read of it while the first is out, and reads it again once it answers; a good PV is read meanwhile', async () => {
    const good = await readPvMetadataVersion(disks.devices[0], 5_000);
    assert.ok(good && good.headers.length > 0 && good.seqno !== null, 'the real PV: headers and a seqno');

    const hung = path.join(dir, 'hung-pv');
    execFileSync('mkfifo', [hung]);
    let ticks = 0;
    const ticker = setInterval(() => ticks++, 20);
    let passed = false;
    try {
      await assert.rejects(readPvMetadataVersion(hung, 500), (e: Error) => e instanceof PvReadTimeout && /not read within 500 ms/.test(e.message));
      assert.ok(ticks >= 5, `the event loop ran on while the read was stuck (${ticks} ticks)`);
      // Still stuck: a second caller starts no second read and does not wait out its deadline again.
      await assert.rejects(readPvMetadataVersion(hung, 60_000), (e: Error) => e instanceof PvReadTimeout && /a read of it is still out past its deadline/.test(e.message));
      // The good PV is read while one is stuck.
      assert.deepEqual(await readPvMetadataVersion(disks.devices[0], 5_000), good);
      // A second hung PV may still be read; with two stuck no new read starts, of a third PV or of the
      // good one (the next may hang too: hung PVs never take every thread).
      const hung2 = path.join(dir, 'hung-pv-2');
      const hung3 = path.join(dir, 'hung-pv-3');
      execFileSync('mkfifo', [hung2]);
      execFileSync('mkfifo', [hung3]);
      await assert.rejects(readPvMetadataVersion(hung2, 300), /not read within 300 ms/);
      assert.deepEqual(stuckPvReads().sort(), [hung, hung2].sort());
      await assert.rejects(readPvMetadataVersion(hung3, 60_000), /2 PVs have reads out that have not come back/);
      await assert.rejects(readPvMetadataVersion(disks.devices[0], 60_000), /2 PVs have reads out that have not come back/);
      // hung-pv-2 answers (a writer comes, and stays until the read is back: its stuck open returns, the
      // read finds no label); once its read is back, reads start again.
      const w2 = await open(hung2, 'w');
      try {
        await until(`the read of ${hung2} comes back`, () => !stuckPvReads().includes(hung2));
      } finally {
        await w2.close();
      }
      assert.deepEqual(await readPvMetadataVersion(disks.devices[0], 5_000), good);
      passed = true;
    } finally {
      clearInterval(ticker);
      // A failure above must not leave reads blocked on the FIFOs for the runner's timeout.
      if (!passed) for (const f of [hung, path.join(dir, 'hung-pv-2')]) await release(f);
    }
    // The first answers too: a writer comes and stays (its stuck open returns; a FIFO holds no LVM label, and
    // a read of it at an offset fails: null), so the next read of it opens at once.
    const writer = await open(hung, 'w');
    try {
      await until(`the read of ${hung} comes back`, () => !stuckPvReads().includes(hung));
      // Back: a new read of it starts and is answered.
      assert.equal(await readPvMetadataVersion(hung, 5_000), null, 'answered, and it holds no LVM label');
    } finally {
      await writer.close();
    }
  });
});
