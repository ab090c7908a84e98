import { execFile, spawn } from 'node:child_process';
import { callSignal } from './call-context.js';
import { log } from './log.js';

/** Failure of an external command: what ran, how it ended and what it said on stderr. */
export class CommandError extends Error {
  constructor(
    readonly command: string,
    readonly args: readonly string[],
    readonly exitCode: number | undefined,
    readonly stderr: string,
    readonly timedOut: boolean,
    /** Stopped because the CSI call it ran for was cancelled or ran past its deadline. */
    readonly cancelled = false,
  ) {
    const how = cancelled ? 'was stopped: the call it ran for was cancelled or ran out of time' : timedOut ? 'timed out' : `exited ${exitCode ?? 'abnormally'}`;
    super(`${command} ${how}${stderr ? `: ${stderr.trim().split('\n').slice(-3).join(' / ')}` : ''}`);
    this.name = 'CommandError';
  }
}

export interface RunOptions {
  timeoutMs?: number;
  /** Exit codes that are answers rather than failures (blkid exits 2 when it finds nothing). */
  okExitCodes?: number[];
  /**
   * Runs to the end even when the call is cancelled: a format or a filesystem resize stopped half-way
   * leaves a device worse than either finishing or never starting.
   */
  uninterruptible?: boolean;
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
 * How long after SIGKILL a command may take to end before the call goes on without it. A process
 * waiting on a device that does not answer (a hung disk: uninterruptible sleep) does not end on
 * SIGKILL until the device answers; the call must not wait for that.
 */
const STUCK_GRACE_MS = 5_000;
let stuckCommands = 0;

/** Commands left behind stuck in the kernel that have not ended yet. */
export function commandsStuck(): number {
  return stuckCommands;
}
// A fixed, minimal environment: commands behave the same whatever the driver was started with.
const COMMAND_ENV = { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', LVM_SUPPRESS_FD_WARNINGS: '1' };

/**
 * The one way this program runs another: an argument array (never a shell), a timeout, a C locale
 * so output parses the same everywhere, and stderr logged on failure. Node's own execFile rather
 * than execa: measured here, execa adds ~1.8 ms to every spawn, and a NodeStageVolume spawns four.
 */
export async function run(command: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  const started = process.hrtime.bigint();
  // The call's cancellation and deadline reach the child (SIGKILL), unless it must not stop half-way.
  const signal = opts.uninterruptible ? undefined : callSignal();
  if (signal?.aborted) throw new CommandError(command, args, undefined, '', false, true);
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  let stuck: NodeJS.Timeout | undefined;
  let onAbort: (() => void) | undefined;
  const res = await new Promise<{ stdout: string; stderr: string; exitCode?: number; timedOut: boolean; cancelled: boolean; spawnError?: string }>((resolve) => {
    const leftStuck = (how: { timedOut: boolean; cancelled: boolean }) => () => {
      stuckCommands++;
      log.warn('command did not end after SIGKILL (waiting in the kernel, on a device that does not answer?); going on without it', { command, args, pid: child.pid, graceMs: STUCK_GRACE_MS, stuckCommands });
      // Nothing of it may keep this process up or hold its pipes: it ends by itself when the device answers.
      child.once('close', () => stuckCommands--);
      child.unref();
      child.stdout?.destroy();
      child.stderr?.destroy();
      resolve({ stdout: '', stderr: `did not end within ${STUCK_GRACE_MS} ms of SIGKILL (stuck in the kernel)`, ...how });
    };
    const timeoutAt = Date.now() + timeoutMs;
    stuck = setTimeout(leftStuck({ timedOut: true, cancelled: false }), timeoutMs + STUCK_GRACE_MS);
    if (signal) {
      onAbort = () => {
        // Past the timeout its SIGKILL went already: that grace runs on.
        if (Date.now() >= timeoutAt) return;
        clearTimeout(stuck);
        stuck = setTimeout(leftStuck({ timedOut: false, cancelled: true }), STUCK_GRACE_MS);
      };
      signal.addEventListener('abort', onAbort, { once: true });
    }
    const child = execFile(
      command,
      args,
      { timeout: timeoutMs, killSignal: 'SIGKILL', env: COMMAND_ENV, maxBuffer: 64 * 1024 * 1024, encoding: 'utf8', shell: false, signal },
      (err, stdout, stderr) => {
        if (!err) return resolve({ stdout, stderr, exitCode: 0, timedOut: false, cancelled: false });
        const e = err as NodeJS.ErrnoException & { code?: number | string; killed?: boolean; signal?: string };
        const cancelled = e.name === 'AbortError';
        const timedOut = !cancelled && !!e.killed && e.signal === 'SIGKILL';
        resolve({ stdout, stderr, exitCode: typeof e.code === 'number' ? e.code : undefined, timedOut, cancelled, spawnError: !cancelled && typeof e.code === 'string' ? `${e.code}: ${e.message}` : undefined });
      },
    );
    // Nothing is ever typed into a command: a prompt reads end-of-file and fails at once instead of hanging.
    child.stdin?.end();
  }).finally(() => {
    clearTimeout(stuck);
    if (onAbort) signal?.removeEventListener('abort', onAbort);
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const { exitCode, stdout } = res;
  const stderr = res.stderr || res.spawnError || '';
  const ok = !res.timedOut && !res.cancelled && exitCode !== undefined && (exitCode === 0 || (opts.okExitCodes ?? []).includes(exitCode));
  for (const l of listeners) l(command, seconds, ok);
  if (!ok) {
    log.warn('command failed', { command, args, exitCode, timedOut: res.timedOut, cancelled: res.cancelled, stderr: stderr.slice(0, 2000), ms: Math.round(seconds * 1000) });
    throw new CommandError(command, args, exitCode, stderr, res.timedOut, res.cancelled);
  }
  log.debug('command', { command, args, exitCode, ms: Math.round(seconds * 1000) });
  return { stdout, stderr, exitCode: exitCode ?? 0 };
}

/** A long-running command whose output is read line by line as it comes (an event stream). */
export interface Watch {
  /** Resolves with the next line printed, or null once the command has ended. */
  next(): Promise<string | null>;
  /** Stops the command (SIGTERM) and waits for it. */
  stop(): Promise<void>;
  /** The command's process ID (a test finds it among a daemon's clients). */
  readonly pid?: number;
}

/**
 * run() for a command that streams: the same argument array, environment and time bound (after
 * which it is killed), stderr logged when it ends other than by stop().
 */
export function watch(command: string, args: readonly string[], opts: { timeoutMs: number }): Watch {
  const child = spawn(command, args, { env: COMMAND_ENV, shell: false, stdio: ['ignore', 'pipe', 'pipe'] });
  const lines: string[] = [];
  const waiting: Array<(line: string | null) => void> = [];
  let ended = false;
  let stopped = false;
  let buf = '';
  let stderr = '';
  const push = (line: string | null) => {
    const w = waiting.shift();
    if (w) w(line);
    else if (line !== null) lines.push(line);
  };
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      push(buf.slice(0, i));
      buf = buf.slice(i + 1);
    }
  });
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr = (stderr + chunk).slice(-2000)));
  const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs);
  const exited = new Promise<void>((resolve) => {
    const done = (code: number | null) => {
      clearTimeout(timer);
      ended = true;
      if (!stopped && code !== 0) log.warn('watched command ended', { command, args, exitCode: code, stderr });
      while (waiting.length) push(null);
      resolve();
    };
    child.on('close', done);
    child.on('error', (err) => {
      stderr += String(err);
      done(null);
    });
  });
  return {
    pid: child.pid,
    next: () => (lines.length ? Promise.resolve(lines.shift()!) : ended ? Promise.resolve(null) : new Promise((resolve) => waiting.push(resolve))),
    async stop() {
      stopped = true;
      if (!ended) child.kill('SIGTERM');
      await exited;
    },
  };
}
