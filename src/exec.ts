import { execa } from 'execa';
import { log } from './log.js';

/** Failure of an external command: what ran, how it ended and what it said on stderr. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly timedOut: boolean,
  ) {
    const how = timedOut ? 'timed out' : `exited ${exitCode ?? 'abnormally'}`;
    super(`${command} ${how}${stderr ? `: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : ''}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  timeoutMs?: number;
  /** Exit codes that are answers rather than failures (blkid exits 2 when it finds nothing). */
  okExitCodes?: number[];
}

export interface RunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

type CommandListener = (command: string, seconds: number, ok: boolean) => void;
const listeners: CommandListener[] = [];

/** Metrics subscribe here rather than the runner importing them. */
export function onCommand(listener: CommandListener): void {
  listeners.push(listener);
}

const DEFAULT_TIMEOUT_MS = 120_000;

/**
 * The one way this program runs another: an argument array (never a shell), a timeout,
 * a C locale so output parses the same everywhere, and stderr logged on failure.
 */
export async function run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = process.hrtime.bigint();
  const res = await execa(command, args, {
    reject: false,
    timeout: opts.timeoutMs ?? DEFAULT_TIMEOUT_MS,
    killSignal: 'SIGKILL',
    stdin: 'ignore',
    env: { LC_ALL: 'C', LVM_SUPPRESS_FD_WARNINGS: '1' },
    shell: false,
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const exitCode = res.exitCode;
  const ok = !res.timedOut && exitCode !== undefined && (exitCode === 0 || (opts.okExitCodes ?? []).includes(exitCode));
  for (const l of listeners) l(command, seconds, ok);
  const stderr = typeof res.stderr === 'string' ? res.stderr : '';
  const stdout = typeof res.stdout === 'string' ? res.stdout : '';
  if (!ok) {
    log.warn('command failed', { command, args, exitCode, timedOut: res.timedOut, stderr: stderr.slice(0, 2000), ms: Math.round(seconds * 1000) });
    throw new CommandError(command, args, exitCode, stderr, res.timedOut);
  }
  log.debug('command', { command, args, exitCode, ms: Math.round(seconds * 1000) });
  return { stdout, stderr, exitCode: exitCode ?? 0 };
}
