import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { readAt } from './data.js';

/** Where the writer puts a member's writes: a file on a mounted filesystem (`<dir>/log`, a line each), or a raw block device (a 4 KiB record each). */
export type WriterTarget = { kind: 'dir'; path: string } | { kind: 'block'; path: string };

export interface DependentWriter {
  proc: ChildProcess;
  /** The last write known complete. */
  done: () => number;
  waitFor: (n: number) => Promise<void>;
  stop: () => Promise<number>;
}

export const RECORD = 4096;

/**
 * A writer of dependent writes: write n goes to member n mod (members), and is issued only once
 * write n-1 completed (an fdatasync after each: the data is on the device, not in the page cache).
 * On a block device, member k's i-th record is the 4 KiB at i*4096 holding "n\n" then zeros (with
 * `wrapRecords`, at (i mod wrapRecords)*4096: a writer that must not run off the end of its device).
 * It prints each n once done.
 */
export function dependentWriter(targets: readonly WriterTarget[], o: { wrapRecords?: number } = {}): DependentWriter {
  const script = `
    const fs = require('node:fs');
    const targets = JSON.parse(process.argv[1]);
    const WRAP = Number(process.argv[2] || 0);
    const fds = targets.map((t) => t.kind === 'dir' ? fs.openSync(t.path + '/log', 'a') : fs.openSync(t.path, 'r+'));
    const counts = targets.map(() => 0);
    let stop = false;
    process.on('SIGTERM', () => { stop = true; });
    (async () => {
      for (let n = 1; !stop; n++) {
        const k = n % targets.length;
        if (targets[k].kind === 'dir') fs.writeSync(fds[k], n + '\\n');
        else {
          const rec = Buffer.alloc(${RECORD});
          rec.write(n + '\\n');
          // With a wrap, a block member's records go round (for a test of progress only, not of what a cut holds).
          fs.writeSync(fds[k], rec, 0, rec.length, (WRAP ? counts[k]++ % WRAP : counts[k]++) * ${RECORD});
        }
        fs.fdatasyncSync(fds[k]);
        process.stdout.write(n + '\\n');
        if (n % 20 === 0) await new Promise((r) => setImmediate(r));
      }
      process.exit(0);
    })();`;
  const proc = spawn(process.execPath, ['-e', script, JSON.stringify(targets), String(o.wrapRecords ?? 0)], { stdio: ['ignore', 'pipe', 'inherit'] });
  let last = 0;
  const waiters: Array<{ n: number; resolve: () => void }> = [];
  createInterface({ input: proc.stdout! }).on('line', (l) => {
    last = Number(l);
    for (const w of waiters.filter((x) => x.n <= last)) {
      waiters.splice(waiters.indexOf(w), 1);
      w.resolve();
    }
  });
  return {
    proc,
    done: () => last,
    // Bounded: a writer that stops (held by a device left frozen or suspended) fails the test instead of hanging it.
    waitFor: (n) =>
      last >= n
        ? Promise.resolve()
        : new Promise<void>((resolve, reject) => {
            const timer = setTimeout(() => reject(new Error(`the writer did not reach write ${n} within 60 s (at ${last}): held by a frozen filesystem or a suspended device?`)), 60_000);
            waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
          }),
    stop: async () => {
      if (proc.exitCode === null) {
        proc.kill('SIGTERM');
        await new Promise((r) => proc.once('exit', r));
      }
      return last;
    },
  };
}

/** The write numbers in a raw block member's records, up to its first empty record. */
export async function recordsOn(device: string, size: number): Promise<number[]> {
  const bytes = await readAt(device, 0, size);
  const out: number[] = [];
  for (let at = 0; at + RECORD <= size; at += RECORD) {
    const text = bytes.subarray(at, at + 32).toString('latin1');
    const m = /^(\d+)\n/.exec(text);
    if (!m) break;
    out.push(Number(m[1]));
  }
  return out;
}

/** The writes of one member missing below the highest write any member holds: what a consistent cut never lacks. */
export function missingBelowMost(members: readonly number[][]): { most: number; missing: number[] } {
  const present = new Set<number>();
  let most = 0;
  for (const log of members) for (const n of log) {
    present.add(n);
    most = Math.max(most, n);
  }
  const missing: number[] = [];
  for (let n = 1; n <= most; n++) if (!present.has(n)) missing.push(n);
  return { most, missing };
}
