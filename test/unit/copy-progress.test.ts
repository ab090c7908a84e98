// How far a copy has come, as the driver reports it to a waiting client (src/operations.ts): the
// registry, a real cp of the file pool watched while it runs, and the client's waiting line drawn from it.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { open, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { operationsInProgress, progressReporter, underOperation } from '../../src/operations.js';
import { ImageCopies } from '../../src/pool/file/image-copies.js';
import { whileWaiting, type WorkSample } from '../../src/cli/waiting.js';

const MiB = 1024 * 1024;
const execFileP = promisify(execFile);
let dir: string;
before(async () => (dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-progress-'))));
after(async () => rm(dir, { recursive: true, force: true }));

/** Waits for a condition, never for a guessed time. */
async function until<T>(check: () => T | undefined, what: string, ms = 20_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = check();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setTimeout(r, 20));
  }
}

const op = { kind: 'copy' as const, name: 'pvc-1', volumeId: 'vol-pvc-1-0123456789abcdef', source: 'snapshot snap-x-0123456789abcdef', totalBytes: 8 * MiB };

describe('copies under way', () => {
  it('are listed while they run with what their reporters say, and gone when they end or fail; code outside one reports nowhere', async () => {
    assert.equal(progressReporter(), null);
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    const running = underOperation(op, async () => {
      const report = progressReporter()!;
      // A report from a callback that runs later (a stream's, a timer's) still reaches this copy.
      setTimeout(() => report.bytes(3 * MiB), 1);
      await held;
      report.syncing();
      await new Promise((r) => setImmediate(r));
    });
    assert.deepEqual(operationsInProgress().map((o) => [o.reported, o.phase, o.doneBytes]), [[false, 'copy', 0]], 'listed at once, nothing reported yet');
    const seen = await until(() => operationsInProgress().find((o) => o.doneBytes === 3 * MiB), 'the report');
    assert.equal(seen.name, 'pvc-1');
    assert.equal(seen.totalBytes, 8 * MiB);
    assert.equal(seen.reported, true);
    // The list is a copy: a caller cannot change the registry.
    seen.doneBytes = 0;
    assert.equal(operationsInProgress()[0]!.doneBytes, 3 * MiB);
    release();
    await running;
    assert.deepEqual(operationsInProgress(), []);
    await assert.rejects(underOperation(op, async () => Promise.reject(new Error('ENOSPC'))), /ENOSPC/);
    assert.deepEqual(operationsInProgress(), []);
  });

  it("the file pool's cp is watched while it runs: the bytes the copy holds, read as they grow", async () => {
    // cp reads a FIFO the test writes into: the copy is as far as the test let it go, whatever the machine's speed.
    const fifo = path.join(dir, 'source.fifo');
    await execFileP('mkfifo', [fifo]);
    const to = path.join(dir, 'copy.img');
    const copies = new ImageCopies(dir, dir);
    const copying = underOperation(op, () => copies.copy(fifo, to, { kind: 'snapshot', id: 'snap-x' }, 'plain'));
    const writer = await open(fifo, 'w');
    await writer.write(Buffer.alloc(4 * MiB, 0x5a));
    const mid = await until(() => operationsInProgress().find((o) => o.doneBytes >= 4 * MiB), 'a reading of 4 MiB copied');
    assert.equal(mid.phase, 'copy');
    // A FIFO holds no blocks: the controller's total stands.
    assert.equal(mid.totalBytes, 8 * MiB);
    await writer.write(Buffer.alloc(4 * MiB, 0xa5));
    await writer.close();
    await copying;
    assert.deepEqual(operationsInProgress(), []);
  });

  it("the client's waiting line: a bar with bytes, rate and time left on a terminal, one line per period in a log, the plain wait when the driver reports nothing", async () => {
    const sink = (tty: boolean) => {
      let text = '';
      const w = new Writable({ write: (c, _e, cb) => ((text += c.toString()), cb()) }) as Writable & { isTTY?: boolean };
      w.isTTY = tty;
      return { stream: w as unknown as NodeJS.WriteStream, text: () => text };
    };
    let done = 0;
    let phase = { syncing: false, startedAt: '2026-12-07T00:00:00.000Z' };
    const probe = async (): Promise<WorkSample> => ({ doing: 'receiving snapshot snap-x from node-a', doneBytes: (done += 256 * MiB), totalBytes: 4096 * MiB, ...phase });
    let finish!: () => void;
    const term = sink(true);
    const waiting = whileWaiting('create-volume', new Promise<void>((r) => (finish = r)), term.stream, 10_000, probe);
    const bar = await until(() => /\r\x1b\[Kcreate-volume: receiving snapshot snap-x from node-a: \[#*\.*\] ([0-9.]+[MG]i) of 4Gi \(([0-9]+)%\), ([0-9.]+[MG]i)\/s, (\S+) left, \S+ so far/.exec(term.text()) ?? undefined, 'a bar', 30_000);
    assert.ok(Number(bar[2]) > 0 && Number(bar[2]) < 100, bar[0]);
    // Another copy of the same name (a retry's, after the first failed) starts again from 0: counted afresh, never a negative rate.
    done = 0;
    phase = { syncing: false, startedAt: '2026-12-07T00:05:00.000Z' };
    const mark = term.text().length;
    await until(() => (/, [0-9.]+[MG]i\/s, \S+ left/.test(term.text().slice(mark)) ? true : undefined), 'a rate of the new copy', 30_000);
    assert.doesNotMatch(term.text(), /-[0-9.]+[KMG]?i?\/s/, 'no negative rate');
    // Every byte written: the line says it waits for the disk instead of sitting at 99%.
    phase = { syncing: true, startedAt: phase.startedAt };
    await until(() => (/all 4Gi written, waiting for the disk to hold it, \S+ so far/.test(term.text()) ? true : undefined), 'the sync line', 30_000);
    finish();
    await waiting;
    assert.ok(term.text().endsWith('\r\x1b[K'), 'the line is cleared when the call ends');
    const log = sink(false);
    const plain = whileWaiting('stage', new Promise<void>((r) => (finish = r)), log.stream, 50);
    await until(() => (log.text().split('\n').length > 2 ? true : undefined), 'two lines');
    finish();
    await plain;
    assert.match(log.text(), /^stage: waiting for the driver, \S+ so far \(Ctrl-C stops waiting and cancels the call\)\n/);
    assert.doesNotMatch(log.text(), /\r|\x1b/, 'no terminal codes in a log');
  });
});
