import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, open, readdir, rename, rm, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { idFor } from '../../src/ids.js';
import { PROJECT_ROOT } from '../../src/project.js';
import { FilePool } from '../../src/pool/file/file-pool.js';
import { RecordIndex } from '../../src/pool/file/record-index.js';
import type { VolumeRecord } from '../../src/records.js';
import { needsRoot } from '../helpers/driver.js';

const execFileP = promisify(execFile);
const MiB = 1024 * 1024;
/**
 * Waits until the filesystem's clock has moved past the last change of `dir` (a probe file beside it
 * shows a later mtime), as it has for any later change by hand: the kernel stamps files from a coarse
 * clock, so two changes a moment apart can carry one time.
 */
async function pastLastChangeOf(dir: string): Promise<void> {
  const last = (await stat(dir, { bigint: true })).mtimeNs;
  const probe = path.join(path.dirname(path.dirname(dir)), `.clock-probe-${process.pid}`);
  try {
    for (;;) {
      await writeFile(probe, 'x'); // stamped by the kernel's clock, as the pool's files are
      if ((await stat(probe, { bigint: true })).mtimeNs > last) return;
      await new Promise((r) => setImmediate(r));
    }
  } finally {
    await rm(probe, { force: true });
  }
}

/**
 * Runs pool operations in another process, as a second vpool process on the same pool does (an
 * upgrade's old and new pods, the orphan reaper): the real FilePool of dist/, its own memory.
 */
async function inOtherProcess(poolDir: string, body: string): Promise<void> {
  const filePool = path.join(PROJECT_ROOT, 'dist/src/pool/file/file-pool.js');
  const script = `import { FilePool } from ${JSON.stringify(filePool)};\nconst pool = await FilePool.open(${JSON.stringify(poolDir)}, 0, { sweep: false });\n${body}`;
  await execFileP(process.execPath, ['--input-type=module', '-e', script]);
}

const spec = (name: string, bytes = 4 * MiB) => ({ id: idFor('vol', name), name, capacityBytes: bytes, parameters: {} });

describe('file pool: records held in memory, the directory the source of truth', needsRoot(), () => {
  let dir: string;
  let pool: FilePool;
  before(async () => {
    dir = await mkdtemp('/var/tmp/vpool-index-');
    pool = await FilePool.open(dir, 0, { sweep: true });
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('sees at once what another process creates, expands and deletes', async () => {
    const a = spec('from-other');
    assert.equal(await pool.getVolume(a.id), null);
    await inOtherProcess(dir, `await pool.createVolume(${JSON.stringify(a)});`);
    assert.equal((await pool.getVolume(a.id))?.capacityBytes, 4 * MiB);
    assert.deepEqual((await pool.listVolumes()).map((v) => v.id), [a.id]);
    await inOtherProcess(dir, `await pool.expandVolume(${JSON.stringify(a.id)}, ${8 * MiB});`);
    assert.equal((await pool.getVolume(a.id))?.capacityBytes, 8 * MiB, 'a record rewritten by another process is read again');
    await inOtherProcess(dir, `await pool.deleteVolume(${JSON.stringify(a.id)});`);
    assert.equal(await pool.getVolume(a.id), null);
    assert.deepEqual(await pool.listVolumes(), []);
  });

  it('sees what bypasses the change count: a person\'s rm, a record a crashed process renamed into place', async () => {
    const own = spec('own');
    await pool.createVolume(own);
    assert.ok(await pool.getVolume(own.id));
    await pastLastChangeOf(path.join(dir, 'volumes'));
    await rm(path.join(dir, 'volumes', `${own.id}.json`));
    assert.equal(await pool.getVolume(own.id), null, 'a record removed by hand is gone');
    await pastLastChangeOf(path.join(dir, 'volumes'));
    const crashed: VolumeRecord = { ...spec('crashed'), createdAt: Date.now() };
    await writeFile(path.join(dir, '.tmp', 'x.json'), JSON.stringify(crashed));
    await rename(path.join(dir, '.tmp', 'x.json'), path.join(dir, 'volumes', `${crashed.id}.json`));
    assert.equal((await pool.getVolume(crashed.id))?.name, 'crashed', 'a record committed without its count is found');
    await rm(path.join(dir, 'volumes', `${own.id}.img`), { force: true });
    await pool.deleteVolume(crashed.id);
  });

  it('is rebuilt from the directory by a new process (a restart)', async () => {
    for (const n of ['r1', 'r2', 'r3']) await pool.createVolume(spec(n));
    const reopened = await FilePool.open(dir, 0, { sweep: false });
    assert.deepEqual((await reopened.listVolumes()).map((v) => v.name).sort(), ['r1', 'r2', 'r3']);
    for (const n of ['r1', 'r2', 'r3']) await pool.deleteVolume(idFor('vol', n));
  });

  it('never reports more space than there is while volumes are written between measurements', async () => {
    const v = spec('filled', 64 * MiB);
    await pool.createVolume(v);
    // The filesystem is shared (other tests, the VM suites' disks write to it meanwhile): what the pool
    // holds back for its volumes is compared, the free space the filesystem reports right after each figure.
    const free = async () => {
      const s = await statfs(dir);
      return s.bavail * s.bsize;
    };
    const heldBack = async (measure: boolean) => {
      const available = (await pool.capacity({ measure })).availableBytes;
      return (await free()) - available;
    };
    const before = await heldBack(true);
    const fh = await open(path.join(dir, 'volumes', `${v.id}.img`), 'r+');
    await fh.write(Buffer.alloc(32 * MiB, 1), 0, 32 * MiB, 0);
    await fh.sync();
    await fh.close();
    const estimated = (await pool.capacity()).availableBytes;
    const remeasured = (await pool.capacity({ measure: true })).availableBytes;
    assert.ok(estimated <= remeasured, `the estimate (${estimated}) is never above the measurement (${remeasured})`);
    // Filling a volume takes none of the space left for new volumes: it was promised already, and what
    // is held back for it shrinks by what it now holds itself.
    const after = await heldBack(true);
    assert.ok(Math.abs(before - after - 32 * MiB) < 4 * MiB, `held back ${before} before, ${after} after 32 MiB written`);
    await pool.deleteVolume(v.id);
  });
});

describe('RecordIndex', needsRoot(), () => {
  let dir: string;
  let tmpDir: string;
  before(async () => {
    dir = await mkdtemp('/var/tmp/vpool-index-unit-');
    tmpDir = await mkdtemp('/var/tmp/vpool-index-unit-tmp-');
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
    await rm(tmpDir, { recursive: true, force: true });
  });

  // Records are written beside the directory and renamed into it, as the file pool does (its .tmp).
  async function staged(rec: { id: string }): Promise<string> {
    const tmp = path.join(tmpDir, `tmp-${rec.id}`);
    await writeFile(tmp, JSON.stringify(rec));
    return tmp;
  }

  it('folds this process\'s commits in without listing the directory, and another index\'s commits make it list again', async () => {
    const mine = new RecordIndex<{ id: string; n: number }>(dir, 'vol');
    const other = new RecordIndex<{ id: string; n: number }>(dir, 'vol');
    assert.deepEqual([...(await mine.all()).keys()], []);
    // Eight commits at once, as eight CreateVolume calls make them.
    const recs = Array.from({ length: 8 }, (_, i) => ({ id: idFor('vol', `p${i}`), n: i }));
    await Promise.all(recs.map(async (r) => mine.put(r, await staged(r))));
    assert.equal(mine.needsReload, false, 'its own commits keep it exact');
    assert.equal((await mine.all()).size, 8);
    assert.equal((await readdir(dir)).filter((f) => f.endsWith('.json')).length, 8);

    const extra = { id: idFor('vol', 'extra'), n: 99 };
    await other.put(extra, await staged(extra));
    assert.equal(mine.needsReload, true, 'a commit counted by another index is noticed');
    assert.equal((await mine.get(extra.id))?.n, 99);
    await other.remove(recs[0].id);
    assert.equal(await mine.get(recs[0].id), null);
    assert.deepEqual((await mine.sorted()).map((r) => r.id), [...recs.slice(1).map((r) => r.id), extra.id].sort());
  });

  it('a file made in the commit (a new image, before its record) keeps it exact; one made outside it, once the clock moved, makes it list again', async () => {
    const index = new RecordIndex<{ id: string; n: number }>(dir, 'vol');
    await index.all();
    assert.equal(index.needsReload, false);
    // Past the clock tick of the last change: a change made now shows in the directory's mtime.
    await pastLastChangeOf(dir);
    // Eight at once, as eight creates make their images and commit their records.
    await Promise.all(
      Array.from({ length: 8 }, async (_, i) => {
        const rec = { id: idFor('vol', `side${i}`), n: i };
        await index.put(rec, await staged(rec), () => writeFile(path.join(dir, `${rec.id}.img`), ''));
      }),
    );
    assert.equal(index.needsReload, false, 'its own images and commits keep it exact');
    await pastLastChangeOf(dir);
    await writeFile(path.join(dir, 'by-hand'), '');
    assert.equal(index.needsReload, true, 'a change it did not make is noticed');
    await rm(path.join(dir, 'by-hand'));
  });

  for (const overlapping of [8, 1]) {
    it(`a record another process renamed in without counting it (killed before its count) while ${overlapping} of this process's commits were under way is found`, async () => {
      const index = new RecordIndex<{ id: string; n: number }>(dir, 'vol');
      await index.all();
      await pastLastChangeOf(dir);
      const peer = { id: idFor('vol', `uncounted${overlapping}`), n: 7 };
      const peerTmp = await staged(peer);
      const mine = Array.from({ length: overlapping }, (_, i) => ({ id: idFor('vol', `overlap${overlapping}-${i}`), n: i }));
      const staging = await Promise.all(mine.map((r) => staged(r)));
      // Every commit holds until the peer's rename has landed: it lands inside their window, where
      // the directory's mtime is this process's to move (the listing of names must find it).
      let landed!: () => void;
      const peerLanded = new Promise<void>((resolve) => (landed = resolve));
      const done = Promise.all(mine.map((r, i) => index.put(r, staging[i], () => peerLanded)));
      await rename(peerTmp, path.join(dir, `${peer.id}.json`));
      landed();
      await done;
      // The names are listed within a second of the commits: wait for that check (bounded), not for a time.
      const deadline = Date.now() + 10_000;
      while (!index.needsReload && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
      assert.equal(index.needsReload, true, 'the uncounted record is noticed');
      assert.equal((await index.get(peer.id))?.n, 7);
    });
  }
});
