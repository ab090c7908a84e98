import * as grpc from '@grpc/grpc-js';
import { CsiError } from '../errors.js';
import { runForCall } from '../call-context.js';
import { CommandError } from '../exec.js';
import { log } from '../log.js';
import { PoolSpaceError, SourceMissingError } from '../pool/errors.js';

/** The gRPC status for any error: typed errors keep their code; anything unexpected is INTERNAL without its stack. */
export function toStatus(err: unknown): { code: grpc.status; details: string } {
  if (err instanceof CsiError) return { code: err.code, details: err.message };
  if (err instanceof PoolSpaceError) return { code: grpc.status.RESOURCE_EXHAUSTED, details: err.message };
  if (err instanceof SourceMissingError) return { code: grpc.status.NOT_FOUND, details: err.message };
  if (err instanceof CommandError) return { code: err.cancelled ? grpc.status.CANCELLED : grpc.status.INTERNAL, details: err.message };
  return { code: grpc.status.INTERNAL, details: 'internal error (see the driver log)' };
}

type Observer = (method: string, code: grpc.status, seconds: number) => void;
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
    const finish = (code: grpc.status, err?: unknown) => {
      clearTimeout(timer);
      call.removeListener('cancelled', cancel);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      for (const o of observers) o(method, code, seconds);
      const line = { method, volume: subject, ms: Math.round(seconds * 10000) / 10, code: grpc.status[code] };
      if (code === grpc.status.OK) log.info('rpc', line);
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
          const { code, details } = toStatus(err);
          finish(code, err);
          callback({ code, details });
        },
      );
  };
}
