import assert from 'node:assert/strict';
import { mkdtemp, open, rm, stat, truncate, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ImageAllocation } from '../../src/pool/file/image-allocation.js';
import type { VolumeRecord } from '../../src/records.js';

const MiB = 1024 * 1024;

// Real sparse files on the test machine's filesystem: what FilePool measures (st_blocks).
describe('the file pool images\' allocation estimate (real sparse files)', () => {
  let dir: string;
  const image = (id: string) => path.join(dir, `${id}.img`);
  const records = (ids: string[], capacity = 8 * MiB) => new Map(ids.map((id) => [id, { id, capacityBytes: capacity } as VolumeRecord]));

  /** An image of 8 MiB with `written` bytes of it allocated. */
  async function makeImage(id: string, written: number): Promise<number> {
    await writeFile(image(id), '');
    await truncate(image(id), 8 * MiB);
    if (written > 0) {
      const fh = await open(image(id), 'r+');
      await fh.write(Buffer.alloc(written, 1), 0, written, 0);
      await fh.sync();
      await fh.close();
    }
    return (await stat(image(id))).blocks * 512;
  }

  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-alloc-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('a measurement counts what each image has allocated', async () => {
    const alloc = new ImageAllocation(image, dir);
    const a = await makeImage('m-a', 2 * MiB);
    const b = await makeImage('m-b', 0);
    assert.ok(a >= 2 * MiB, `the written image allocated ${a} bytes`);
    await alloc.refresh(['m-a', 'm-b'], { now: true });
    assert.equal(alloc.unallocated(records(['m-a', 'm-b']), 1), 8 * MiB - a + (8 * MiB - b));
  });

  it('a volume made anew while a measurement runs keeps the figure its create set (the stat of its old image is older news)', async () => {
    // The images are stat'ed 16 at a time: the 17th's path is asked for once the first 16 are measured,
    // t-a's old image among them. That is when t-a is deleted and made again, its create's figure
    // 1 MiB (a copy's, say): neither the old 4 MiB nor nothing known.
    const fillers = Array.from({ length: 15 }, (_, i) => `t-f${i}`);
    let fresh = -1;
    const alloc = new ImageAllocation((id) => {
      if (id === 't-gate') {
        alloc.touched('t-a', null);
        alloc.touched('t-a', fresh);
      }
      return image(id);
    }, dir);
    const old = await makeImage('t-a', 4 * MiB);
    for (const f of fillers) await makeImage(f, 0);
    await makeImage('t-gate', 0);
    fresh = 1 * MiB;
    await alloc.refresh(['t-a', ...fillers, 't-gate'], { now: true });
    assert.ok(old >= 4 * MiB);
    // Without the rule the old image's 4 MiB would count as allocated: space reported that is not there.
    assert.equal(alloc.unallocated(records(['t-a']), 1), 8 * MiB - fresh);
  });

  it('a volume deleted while a measurement runs is not brought back by it', async () => {
    const alloc = new ImageAllocation(image, dir);
    await makeImage('d-a', 3 * MiB);
    const measuring = alloc.refresh(['d-a'], { now: true });
    alloc.touched('d-a', null);
    await measuring;
    // A record of that ID made again later starts from nothing allocated, not from the measured 3 MiB.
    assert.equal(alloc.unallocated(records(['d-a']), 2), 8 * MiB);
  });

  it('a measurement begun after a create replaces the create\'s figure (writes since then count)', async () => {
    const alloc = new ImageAllocation(image, dir);
    const made = await makeImage('w-a', 0);
    alloc.touched('w-a', made);
    const fh = await open(image('w-a'), 'r+');
    await fh.write(Buffer.alloc(2 * MiB, 1), 0, 2 * MiB, 0);
    await fh.sync();
    await fh.close();
    await alloc.refresh(['w-a'], { now: true });
    const now = (await stat(image('w-a'))).blocks * 512;
    assert.ok(now > made);
    assert.equal(alloc.unallocated(records(['w-a']), 3), 8 * MiB - now);
  });
});
