import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PvReadTimeout, readPvMetadataVersion } from '../../src/pool/lvm/pv-headers.js';
import { needsRoot } from '../helpers/driver.js';
import { forgetVg, loopDisks, uniqueVg } from '../helpers/lvm.js';

const MiB = 1024 * 1024;

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
    try {
      await assert.rejects(readPvMetadataVersion(hung, 500), (e: Error) => e instanceof PvReadTimeout && /not read within 500 ms/.test(e.message));
      assert.ok(ticks >= 5, `the event loop ran on while the read was stuck (${ticks} ticks)`);
      // Still stuck: refused at once, no second thread given to it.
      await assert.rejects(readPvMetadataVersion(hung, 60_000), (e: Error) => e instanceof PvReadTimeout && /has not come back/.test(e.message));
      // The good PV is read while the hung one is out.
      assert.deepEqual(await readPvMetadataVersion(disks.devices[0], 5_000), good);
    } finally {
      clearInterval(ticker);
    }
    // The device answers (a writer opens the FIFO; the stuck open returns and reads nothing): no label, null.
    const writer = await open(hung, 'w');
    await writer.close();
    let again: Awaited<ReturnType<typeof readPvMetadataVersion>> | 'stuck' = 'stuck';
    for (let i = 0; i < 200 && again === 'stuck'; i++) {
      again = await readPvMetadataVersion(hung, 5_000).catch((e: Error) => (/has not come back/.test(e.message) ? ('stuck' as const) : Promise.reject(e)));
      if (again === 'stuck') await new Promise((r) => setTimeout(r, 10));
    }
    assert.equal(again, null, 'answered: read again, and it holds no LVM label');
  });
});
