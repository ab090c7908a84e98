/**
 * A failed `vpool-csi client` call as a person acts on it: one sentence, and an exit code a script can
 * test. The driver's own refusals already read in human units and name the next step; what grpc-js
 * says when no driver answers ("No connection established. Last error: Error: connect ENOENT ...
 * Resolution note:") is turned into what to check.
 */

/** Exit codes, as docs/cli.md lists them. */
export const EXIT = { ok: 0, error: 1, usage: 2, notFound: 3, unavailable: 4 } as const;

/** gRPC status codes by number (grpc-js's status enum, without loading grpc-js for it). */
const CODES = ['OK', 'CANCELLED', 'UNKNOWN', 'INVALID_ARGUMENT', 'DEADLINE_EXCEEDED', 'NOT_FOUND', 'ALREADY_EXISTS', 'PERMISSION_DENIED', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'OUT_OF_RANGE', 'UNIMPLEMENTED', 'INTERNAL', 'UNAVAILABLE', 'DATA_LOSS', 'UNAUTHENTICATED'];

export interface CallFailure {
  message: string;
  exitCode: number;
  /** The raw status, for --verbose. */
  raw?: string;
}

interface StatusLike {
  code?: number;
  details?: string;
}

const isStatus = (e: unknown): e is Error & StatusLike => e instanceof Error && typeof (e as StatusLike).code === 'number' && 'details' in e;

/** Why no driver answered at `socket`, from grpc-js's connection error, or null when the driver itself answered. */
export function transportProblem(details: string, socket: string): string | null {
  if (!/No connection established|Connection dropped|Failed to connect|connect E[A-Z]+/.test(details)) return null;
  const errno = /\b(E[A-Z]{3,})\b/.exec(details)?.[1];
  switch (errno) {
    case 'ENOENT':
      return `no driver listening at ${socket}: is \`vpool-csi serve\` running, and is --endpoint (or $VPOOL_CSI_ENDPOINT) its socket? (ENOENT)`;
    case 'ECONNREFUSED':
      return `nothing accepts connections at ${socket}: the driver that made it has stopped; start \`vpool-csi serve\` again (ECONNREFUSED)`;
    case 'EACCES':
    case 'EPERM':
      return `not allowed to connect to ${socket}: run as root or as a member of the socket's group (serve --socket-group) (${errno})`;
    case 'ENOTSOCK':
      return `${socket} is not a socket: --endpoint must name the driver's CSI socket (ENOTSOCK)`;
    default:
      return `could not reach a driver at ${socket}${errno ? ` (${errno})` : ''}: is \`vpool-csi serve\` running?`;
  }
}

export function describeFailure(err: unknown, socket: string): CallFailure {
  if (!isStatus(err)) return { message: err instanceof Error ? err.message : String(err), exitCode: EXIT.error };
  const name = CODES[err.code!] ?? `code ${err.code}`;
  const details = err.details ?? '';
  const raw = `gRPC status ${err.code} ${name}: ${JSON.stringify(details)}`;
  const transport = name === 'UNAVAILABLE' ? transportProblem(details, socket) : null;
  if (transport) return { message: transport, exitCode: EXIT.unavailable, raw };
  if (name === 'DEADLINE_EXCEEDED') return { message: `the driver at ${socket} did not answer in time: ${details}`, exitCode: EXIT.unavailable, raw };
  const exitCode = name === 'NOT_FOUND' ? EXIT.notFound : name === 'UNAVAILABLE' ? EXIT.unavailable : name === 'INVALID_ARGUMENT' || name === 'OUT_OF_RANGE' ? EXIT.usage : EXIT.error;
  return { message: `${details} (${name})`, exitCode, raw };
}
