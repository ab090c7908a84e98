import type { PoolBackend } from './backend.js';

/** The probe of each pool under way, which every caller meanwhile shares. */
const probing = new WeakMap<Pick<PoolBackend, 'probe'>, Promise<void>>();

/**
 * Asks the pool whether it can serve, one question at a time: the Probes, /healthz and a listing's
 * conditions asked meanwhile share the answer. A caller that gives up (the chart's livenessprobe
 * sidecar waits 3 s, every 30 s; a CSI call's deadline) does not end what it asked: a libvirtd that
 * answers late holds one of the connection's four call slots, a hung disk one of libuv's threads.
 * Asked anew per caller, those would pile up until they held them all, and the calls that serve
 * volumes with them.
 */
export function probePool(backend: Pick<PoolBackend, 'probe'>): Promise<void> {
  let p = probing.get(backend);
  if (!p) {
    p = backend.probe().finally(() => probing.delete(backend));
    probing.set(backend, p);
  }
  return p;
}
