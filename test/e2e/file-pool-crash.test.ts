import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdir, readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { idFor } from '../../src/ids.js';
import { blockCap } from '../helpers/csi.js';
import { codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';

const execFileP = promisify(execFile);
const cap = blockCap();
const create = (d: Driver, name: string) => d.client.createVolume({ name, capacity_range: { required_bytes: String(MiB) }, volume_capabilities: [cap], parameters: {} });

async function listedIds(d: Driver): Promise<Set<string>> {
  const ids = new Set<string>();
  let token = '';
  do {
    const page = await d.client.listVolumes({ max_entries: 100, starting_token: token });
    for (const e of page.entries) ids.add(e.volume!.volume_id);
    token = page.next_token;
  } while (token);
  return ids;
}

/** Every record has its image at the size it records, every image its record, and nothing is left half-made. */
async function poolConsistent(d: Driver): Promise<void> {
  const dir = path.join(d.poolDir, 'volumes');
  const files = new Set(await readdir(dir));
  for (const f of files) {
    if (f.endsWith('.json')) {
      const rec = JSON.parse(await readFile(path.join(dir, f), 'utf8')) as { capacityBytes: number };
      const img = f.replace(/\.json$/, '.img');
      assert.ok(files.has(img), `record ${f} has its image`);
      assert.equal((await stat(path.join(dir, img))).size, rec.capacityBytes, `${img} is the size its record says`);
    } else if (f.endsWith('.img')) {
      assert.ok(files.has(f.replace(/\.img$/, '.json')), `image ${f} has its record (the start swept the others)`);
    }
  }
  assert.deepEqual(await readdir(path.join(d.poolDir, '.tmp')), [], 'no temporary survives a start');
}

// The external-provisioner runs several workers at once, each retrying a call that got no answer
// until it gets one: kill -9 lands with creates and deletes at every stage (image made, record
// written, renamed, directory synced), and the restarted driver must answer the retries.
describe('file pool: kill -9 while eight clients create and delete', needsRoot(), () => {
  it('keeps every acknowledged create and delete, answers the retries, and leaks nothing', async () => {
    let d = await startDriver();
    try {
      await rounds();
    } catch (err) {
      await finish(d).catch(() => undefined); // a failed round leaves no driver running (nor the test waiting on it)
      throw err;
    }
    async function rounds(): Promise<void> {
      const alive = new Map<string, string>(); // acknowledged created, no delete begun
      const gone = new Set<string>(); // acknowledged deleted
      const inFlight = new Map<string, 'create' | 'delete'>(); // unanswered at the kill
      for (let round = 0; round < 5; round++) {
        // A different point of the traffic each round: the kill follows this many answers.
        const killAfter = 5 + round * 7;
        let answers = 0;
        let stopped = false;
        let reached!: () => void;
        const enough = new Promise<void>((resolve) => (reached = resolve));
        const answered = () => {
          if (++answers >= killAfter) reached();
        };
        const worker = async (w: number) => {
          for (let i = 0; !stopped; i++) {
            const name = `r${round}-w${w}-${i}`;
            const id = idFor('vol', name);
            inFlight.set(name, 'create');
            try {
              await create(d, name);
            } catch (err) {
              if (!stopped) throw err;
              return; // the kill: the call stays in flight
            }
            inFlight.delete(name);
            alive.set(name, id);
            answered();
            if (i % 2 === 0) continue;
            alive.delete(name);
            inFlight.set(name, 'delete');
            try {
              await d.client.deleteVolume({ volume_id: id });
            } catch (err) {
              if (!stopped) throw err;
              return;
            }
            inFlight.delete(name);
            gone.add(name);
            answered();
          }
        };
        const workers = Array.from({ length: 8 }, (_, w) => worker(w));
        // A worker failing before the kill fails the test rather than leaving it waiting.
        await Promise.race([enough, Promise.all(workers)]);
        stopped = true;
        await d.stop('SIGKILL');
        await Promise.all(workers);
        d = await d.restart();

        const listed = await listedIds(d);
        for (const [name, id] of alive) assert.ok(listed.has(id), `round ${round}: acknowledged create of ${name} survived the kill`);
        for (const name of gone) assert.ok(!listed.has(idFor('vol', name)), `round ${round}: acknowledged delete of ${name} survived the kill`);
        const known = new Set([...alive.values(), ...[...inFlight.keys()].map((n) => idFor('vol', n))]);
        for (const id of listed) assert.ok(known.has(id), `round ${round}: ${id} was never asked for`);
        await poolConsistent(d);
        // The provisioner's retries of what got no answer: each is answered as if the kill had not happened.
        for (const [name, op] of inFlight) {
          const id = idFor('vol', name);
          if (op === 'create') {
            assert.equal((await create(d, name)).volume?.volume_id, id);
            alive.set(name, id);
          } else {
            await d.client.deleteVolume({ volume_id: id });
            gone.add(name);
          }
        }
        inFlight.clear();
        assert.deepEqual([...(await listedIds(d))].sort(), [...alive.values()].sort(), `round ${round}: after the retries the pool holds exactly the live volumes`);
      }
      assert.ok(gone.size > 0 && alive.size > 0, 'the rounds created and deleted');
      for (const id of alive.values()) await d.client.deleteVolume({ volume_id: id });
    }
    assert.deepEqual(await finish(d), []);
  });

  it('a new volume\'s image left at its name by a failed create is replaced; one a loop device reads is refused and left as it is', async () => {
    const d = await startDriver();
    try {
      await replaced();
    } catch (err) {
      await finish(d).catch(() => undefined);
      throw err;
    }
    assert.deepEqual(await finish(d), []);
    async function replaced(): Promise<void> {
      const volumes = path.join(d.poolDir, 'volumes');
      // Left while the driver runs (the start's sweep does not see it): a create that failed half-way.
      const stray = path.join(volumes, `${idFor('vol', 'stray')}.img`);
      await writeFile(stray, 'an earlier attempt');
      const made = await create(d, 'stray');
      assert.equal((await stat(stray)).size, MiB, 'the new volume has a new, empty image');
      assert.equal((await readFile(stray)).subarray(0, 8).toString('hex'), '00'.repeat(8));
      await d.client.deleteVolume({ volume_id: made.volume!.volume_id });

      const held = path.join(volumes, `${idFor('vol', 'held')}.img`);
      await writeFile(held, Buffer.alloc(MiB, 7));
      const loop = (await execFileP('losetup', ['--find', '--show', held])).stdout.trim();
      try {
        assert.equal(await codeOf(create(d, 'held')), 'FAILED_PRECONDITION');
        assert.equal((await readFile(held))[0], 7, 'the attached image is untouched');
        assert.ok((await listedIds(d)).size === 0, 'and no volume was made');
      } finally {
        await execFileP('losetup', ['-d', loop]);
      }
      const again = await create(d, 'held');
      await d.client.deleteVolume({ volume_id: again.volume!.volume_id });
    }
  });
});
