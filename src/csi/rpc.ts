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

/**
 * Adapts an async handler to grpc-js: one log line per call (method, volume, duration, code; never
 * the request itself, which may hold secrets), errors mapped once here.
 */
export function unary<Req, Res>(method: string, fn: (req: Req) => Promise<Res> | Res): grpc.handleUnaryCall<Req, Res> {
  return (call, callback) => {
    const started = process.hrtime.bigint();
    const subject = subjectOf(call.request);
    // The call's context: aborted when the client cancels or the deadline passes (grpc-js cancels the call then too).
    const context = new AbortController();
    const cancel = () => context.abort();
    call.once('cancelled', cancel);
    const deadline = call.getDeadline();
    const left = (deadline instanceof Date ? deadline.getTime() : Number(deadline)) - Date.now();
    const timer = Number.isFinite(left) ? setTimeout(cancel, Math.max(0, left)) : undefined;
    const finish = (code: grpc.status, err?: unknown, mapped = true) => {
      clearTimeout(timer);
      call.removeListener('cancelled', cancel);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      for (const o of observers) o(method, grpc.status[code], seconds);
      const line = { method, volume: subject, ms: Math.round(seconds * 10000) / 10, code: grpc.status[code] };
      if (code === grpc.status.OK) log.info('rpc', line);
      else if (!mapped) log.error('rpc', { ...line, unmapped: true, error: err instanceof Error ? err.stack : String(err) });
      else if (code === grpc.status.INTERNAL || code === grpc.status.UNKNOWN) log.error('rpc', { ...line, error: err instanceof Error ? err.stack : String(err) });
      else log.warn('rpc', { ...line, error: err instanceof Error ? err.message : String(err) });
    };
    Promise.resolve()
      .then(() => runForCall(context.signal, () => fn(call.request)))
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
