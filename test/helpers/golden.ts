import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { PROJECT_ROOT } from '../../src/project.js';
import { BIN } from './driver.js';

/** What a run of the real binary printed, and its exit code. */
export interface Run {
  args: string[];
  stdout: string;
  stderr: string;
  code: number;
}

/** Runs `vpool-csi ARGS` with standard output a pipe (as a script runs it). */
export function runCli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(BIN, args, { env: { ...process.env, ...env }, timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ args, stdout, stderr, code: err ? Number((err as { code?: number }).code ?? 1) : 0 });
    });
  });
}

const quote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * Runs `vpool-csi ARGS` on a real terminal of `columns` columns: a pseudo-terminal from util-linux's
 * `script`, so the binary sees isatty() and the width a person's terminal gives. Standard output and
 * error arrive together, as on a screen.
 */
export function runOnTerminal(args: string[], columns: number): Promise<Run> {
  const command = `stty cols ${columns} rows 50; exec ${[BIN, ...args].map(quote).join(' ')}`;
  return new Promise((resolve) => {
    execFile('script', ['-qec', command, '/dev/null'], { timeout: 60_000 }, (err, stdout) => {
      resolve({ args, stdout: stdout.replace(/\r\n/g, '\n'), stderr: '', code: err ? Number((err as { code?: number }).code ?? 1) : 0 });
    });
  });
}

/** One run as a transcript entry: the command, what it printed, and how it ended. */
export function transcript(r: Run): string {
  const out = [`$ vpool-csi ${r.args.join(' ')}`, r.stdout.replace(/\n$/, '')];
  if (r.stderr) out.push(`[stderr] ${r.stderr.replace(/\n$/, '').split('\n').join('\n[stderr] ')}`);
  out.push(`[exit ${r.code}]`, '');
  return out.filter((l, i) => !(i === 1 && l === '')).join('\n');
}

/**
 * Compares a whole transcript with test/golden/cli/NAME.txt. VPOOL_UPDATE_GOLDEN=1 writes the file
 * instead (then read the diff before committing it): never set in CI.
 */
export async function matchGolden(name: string, text: string): Promise<void> {
  const file = path.join(PROJECT_ROOT, 'test', 'golden', 'cli', `${name}.txt`);
  if (process.env.VPOOL_UPDATE_GOLDEN === '1') {
    await mkdir(path.dirname(file), { recursive: true });
    await writeFile(file, text);
    return;
  }
  const want = await readFile(file, 'utf8').catch(() => null);
  assert.ok(want !== null, `no golden file ${file}: run with VPOOL_UPDATE_GOLDEN=1 once and review it`);
  assert.equal(text, want, `the output differs from ${path.relative(PROJECT_ROOT, file)}`);
}
