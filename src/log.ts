/**
 * One JSON object per line on stderr (stdout stays free for CLI output): the meta fields, level,
 * message and an ISO timestamp. Written here rather than with winston, which cost this long-running
 * process 6.7 MiB of its resident size for the same lines.
 */
export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

const RANK: Record<LogLevel, number> = { error: 0, warn: 1, info: 2, debug: 3 };
const isLevel = (l: string): l is LogLevel => Object.hasOwn(RANK, l);
let threshold = RANK[isLevel(process.env.VPOOL_LOG_LEVEL ?? '') ? (process.env.VPOOL_LOG_LEVEL as LogLevel) : 'info'];

/** Errors keep their message (and stack at debug), bigints become strings, cycles are cut. */
function line(level: LogLevel, message: string, meta: Record<string, unknown> | undefined): string {
  const seen = new WeakSet<object>();
  const replacer = (_: string, v: unknown) => {
    if (typeof v === 'bigint') return v.toString();
    if (v instanceof Error) return threshold >= RANK.debug ? { message: v.message, stack: v.stack } : v.message;
    if (typeof v === 'object' && v !== null) {
      if (seen.has(v)) return '[circular]';
      seen.add(v);
    }
    return v;
  };
  return `${JSON.stringify({ ...meta, level, message, timestamp: new Date().toISOString() }, replacer)}\n`;
}

export interface LoggedProblem {
  at: Date;
  message: string;
  meta?: Record<string, unknown>;
}

// What `vpool-csi status` shows as the last errors: every error, and the refusals that say the driver
// or its pool is in trouble (not a caller's mistake such as NOT_FOUND or INVALID_ARGUMENT), whatever --log-level hides.
const SERIOUS_CODES = new Set(['UNAVAILABLE', 'DEADLINE_EXCEEDED', 'INTERNAL', 'UNKNOWN', 'DATA_LOSS']);
const PROBLEMS_KEPT = 20;
const problems: LoggedProblem[] = [];

/** The last problems logged, oldest first. */
export function recentProblems(): readonly LoggedProblem[] {
  return problems;
}

function write(level: LogLevel, message: string, meta?: Record<string, unknown>): void {
  // The status service's own refusals (a node plugin with no pool, a read still under way) are answers to a person, not problems.
  if (level === 'error' || (level === 'warn' && SERIOUS_CODES.has(String(meta?.code)) && !String(meta?.method).startsWith('Inspect'))) {
    problems.push({ at: new Date(), message, meta });
    if (problems.length > PROBLEMS_KEPT) problems.shift();
  }
  if (RANK[level] > threshold) return;
  process.stderr.write(line(level, message, meta));
}

export const log = {
  error: (message: string, meta?: Record<string, unknown>) => write('error', message, meta),
  warn: (message: string, meta?: Record<string, unknown>) => write('warn', message, meta),
  info: (message: string, meta?: Record<string, unknown>) => write('info', message, meta),
  debug: (message: string, meta?: Record<string, unknown>) => write('debug', message, meta),
};

export function setLogLevel(level: string): void {
  if (!isLevel(level)) throw new Error(`--log-level must be error, warn, info or debug (got ${level})`);
  threshold = RANK[level];
}
