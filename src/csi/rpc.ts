import * as grpc from '@grpc/grpc-js';
import { runForCall } from '../call-context.js';
import { DriverError, type ErrorKind } from '../errors.js';
import { CommandError } from '../exec.js';
import { log } from '../log.js';

/** The one map from the driver's error kinds to gRPC codes (the CSI spec's meaning of each code). */
const CODE: Record<ErrorKind, grpc.status> = {
  invalid: grpc.status.INVALID_ARGUMENT,
  'not-found': grpc.status.NOT_FOUND,
  conflict: grpc.status.ALREADY_EXISTS,
  'out-of-range': grpc.status.OUT_OF_RANGE,
  exhausted: grpc.status.RESOURCE_EXHAUSTED,
  denied: grpc.status.PERMISSION_DENIED,
  precondition: grpc.status.FAILED_PRECONDITION,
  busy: grpc.status.ABORTED,
  unsupported: grpc.status.UNIMPLEMENTED,
  unavailable: grpc.status.UNAVAILABLE,
  cancelled: grpc.status.CANCELLED,
  internal: grpc.status.INTERNAL,
};

/** The kind a gRPC status stands for (the inverse of CODE): a forwarded call's answer, relayed as the same code. */
export function kindOfStatus(code: number | undefined): ErrorKind {
  const found = (Object.entries(CODE) as Array<[ErrorKind, grpc.status]>).find(([, c]) => c === code);
  if (found) return found[0];
  // DEADLINE_EXCEEDED is the call running out of time, as CANCELLED is here; anything else is the holder's fault.
  return code === grpc.status.DEADLINE_EXCEEDED ? 'cancelled' : 'internal';
}

/**
 * The gRPC status for any error. A DriverError carries its kind; a failed command is INTERNAL with
 * what it said (CANCELLED when the call's cancellation stopped it). Anything else is unmapped: INTERNAL
 * without its stack for the client, logged as unmapped, which the tests treat as a failure.
 */
export function toStatus(err: unknown): { code: grpc.status; details: string; mapped: boolean } {
  if (err instanceof DriverError) return { code: CODE[err.kind], details: err.message, mapped: true };
  if (err instanceof CommandError) return { code: err.cancelled ? grpc.status.CANCELLED : grpc.status.INTERNAL, details: err.message, mapped: true };
  return { code: grpc.status.INTERNAL, details: 'internal error (see the driver log)', mapped: false };
}

/** Told of every call: its method, the gRPC code's name and its duration. */
type Observer = (method: string, code: string, seconds: number) => void;
const observers: Observer[] = [];

export function onRpc(observer: Observer): void {
  observers.push(observer);
}

interface Identifying {
  volume_id?: string;
  name?: string;
  snapshot_id?: string;
  source_volume_id?: string;
}

function subjectOf(req: unknown): string | undefined {
  if (typeof req !== 'object' || req === null) return undefined;
  const r = req as Identifying;
  return r.volume_id || r.snapshot_id || r.name || r.source_volume_id || undefined;
}

interface CallEnds {
  /** Aborted when the client cancels or the deadline passes (grpc-js cancels the call then too). */
  signal: AbortSignal;
  /** Logs the call's end (method, volume, duration, code; never the request, which may hold secrets) and tells the observers. */
  finish(code: grpc.status, err?: unknown, mapped?: boolean): void;
}

function begin(method: string, call: grpc.ServerUnaryCall<unknown, unknown> | grpc.ServerWritableStream<unknown, unknown>, quiet = false): CallEnds {
  const started = process.hrtime.bigint();
  const subject = subjectOf(call.request);
  const context = new AbortController();
  const cancel = () => context.abort();
  call.once('cancelled', cancel);
  const deadline = call.getDeadline();
  const left = (deadline instanceof Date ? deadline.getTime() : Number(deadline)) - Date.now();
  const timer = Number.isFinite(left) ? setTimeout(cancel, Math.max(0, left)) : undefined;
  return {
    signal: context.signal,
    finish(code, err, mapped = true) {
      clearTimeout(timer);
      call.removeListener('cancelled', cancel);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      for (const o of observers) o(method, grpc.status[code], seconds);
      const line = { method, volume: subject, ms: Math.round(seconds * 10000) / 10, code: grpc.status[code] };
      if (code === grpc.status.OK) (quiet ? log.debug : log.info)('rpc', line);
      else if (!mapped) log.error('rpc', { ...line, unmapped: true, error: err instanceof Error ? err.stack : String(err) });
      else if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) log.error('rpc', { ...line, error: err instanceof Error ? err.stack : String(err) });
      else log.warn('rpc', { ...line, error: err instanceof Error ? err.message : String(err) });
    },
  };
}

/** Adapts an async handler to grpc-js: one log line per call, errors mapped once here. */
export function unary<Req, Res>(method: string, fn: (req: Req) => Promise<Res> | Res, o: { quiet?: boolean } = {}): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    // `quiet`: a read a client repeats every few seconds (a progress probe) logs its success at debug, not info.
    const { signal, finish } = begin(method, call, o.quiet);
    Promise.resolve()
      .then(() => runForCall(signal, () => fn(call.request)))
      .then(
        (res) => {
          finish(grpc.status.OK);
          callback(null, res);
        },
        (err: unknown) => {
          const { code, details, mapped } = toStatus(err);
          finish(code, err, mapped);
          callback({ code, details });
        },
      );
  };
}

/**
 * Adapts an async source of messages to a grpc-js server stream: written as the client takes them
 * (a slow reader holds the source, it does not fill memory), stopped when the call is cancelled,
 * and ended with the error's status when the source fails half-way, which the client tells from a
 * stream's end (the spec's SnapshotMetadata streams rely on that).
 */
export function serverStream<Req, Res>(
  method: string,
  fn: (req: Req, signal: AbortSignal) => Promise<AsyncIterable<Res>>,
  /** A client that takes nothing for this long is given up (its stream holds a file and a slot). */
  stallMs = 300_000,
): grpc.handleServerStreamingCall<Req, Res> {
  return (call) => {
    const { signal, finish } = begin(method, call);
    const drained = () =>
      new Promise<void>((resolve, reject) => {
        const done = () => {
          clearTimeout(timer);
          call.removeListener('drain', done);
          signal.removeEventListener('abort', done);
          resolve();
        };
        const timer = setTimeout(() => {
          call.removeListener('drain', done);
          signal.removeEventListener('abort', done);
          reject(new DriverError('unavailable', `${method}: the client took nothing for ${stallMs} ms; the stream is given up (resume at the next offset)`));
        }, stallMs);
        call.once('drain', done);
        signal.addEventListener('abort', done, { once: true });
      });
    runForCall(signal, async () => {
      for await (const message of await fn(call.request, signal)) {
        if (signal.aborted) throw new DriverError('cancelled', `${method} was cancelled or ran out of time`);
        if (!call.write(message)) await drained();
      }
      if (signal.aborted) throw new DriverError('cancelled', `${method} was cancelled or ran out of time`);
    }).then(
      () => {
        finish(grpc.status.OK);
        call.end();
      },
      (err: unknown) => {
        const { code, details, mapped } = toStatus(err);
        finish(code, err, mapped);
        // A cancelled call has no client left to tell.
        if (!call.cancelled) call.emit('error', { code, details });
      },
    );
  };
}
