import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * The signal of the CSI call that a piece of work is done for, aborted when the client cancels the
 * call or its deadline passes. Carried by async context rather than through every signature, so the
 * command runner and the locks honour the call's context wherever they are reached from (TopoLVM
 * passes Go's context to exec.CommandContext for the same reason).
 */
const current = new AsyncLocalStorage<AbortSignal>();

export function runForCall<T>(signal: AbortSignal, fn: () => T): T {
  return current.run(signal, fn);
}

export function callSignal(): AbortSignal | undefined {
  return current.getStore();
}

/**
 * Runs fn outside any call: work that must finish once begun, whatever becomes of the call that began
 * it (a clone or a restore from another node can outlast the provisioner's deadline; it goes on under
 * its locks, the CO's retries get ABORTED until it is done, then the volume).
 */
export function detached<T>(fn: () => T): T {
  return current.exit(fn);
}
