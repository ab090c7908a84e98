/**
 * What went wrong, in the driver's own terms. Everything below the CSI edge throws these kinds, each
 * with a message for whoever reads it; src/csi/rpc.ts maps each kind to a gRPC code, once.
 */
export type ErrorKind =
  | 'invalid' // the request is malformed: a field, a name, a path, a parameter
  | 'not-found' // the volume, snapshot, source or node does not exist
  | 'conflict' // it exists with other properties, or is staged or published another way
  | 'out-of-range' // no size fits the capacity range
  | 'exhausted' // no room: space, the node's attach limit, a topology that excludes this pool
  | 'precondition' // the state forbids it now: in use, not staged, holding other data
  | 'busy' // another operation on it is in progress: retry
  | 'unsupported' // this driver does not do that
  | 'denied' // the caller may not have it (a peer's read of a source its claims do not name)
  | 'unavailable' // a dependency is not there yet (a pool being built, a guest slow to let go): retry
  | 'cancelled' // the call was cancelled or ran out of time
  | 'internal'; // a broken invariant; the message says which

export class DriverError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'DriverError';
  }
}

/**
 * A disk the pool needs does not answer (a hung device: its reads wait in the kernel). UNAVAILABLE
 * like any missing dependency; a kind of its own because restarting the driver cannot help it (the
 * reads stay in the kernel until the disk answers), so Probe, which the livenessprobe sidecar turns
 * into restarts, does not report it (identity.ts).
 */
export class DeviceNotAnswering extends DriverError {
  constructor(message: string) {
    super('unavailable', message);
    this.name = 'DeviceNotAnswering';
  }
}

export const invalid = (msg: string) => new DriverError('invalid', msg);
export const notFound = (msg: string) => new DriverError('not-found', msg);
export const conflict = (msg: string) => new DriverError('conflict', msg);
export const outOfRange = (msg: string) => new DriverError('out-of-range', msg);
export const exhausted = (msg: string) => new DriverError('exhausted', msg);
export const precondition = (msg: string) => new DriverError('precondition', msg);
export const busy = (msg: string) => new DriverError('busy', msg);
export const unsupported = (msg: string) => new DriverError('unsupported', msg);
export const unavailable = (msg: string) => new DriverError('unavailable', msg);
export const internal = (msg: string) => new DriverError('internal', msg);
export const cancelled = (msg: string) => new DriverError('cancelled', msg);
export const denied = (msg: string) => new DriverError('denied', msg);

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** The errno code of a Node.js system error, if any ('ENOENT', 'EPERM', ...). */
export function errno(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && 'code' in err && typeof err.code === 'string' ? err.code : undefined;
}
