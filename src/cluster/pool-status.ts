import { log } from '../log.js';
import type { Kube } from './kube.js';
import { statusOf } from './kube.js';
import type { ObservedPool } from './pool-reconcile.js';
import { GROUP, PLURAL, summarize, VERSION, type NodePoolStatus, type PoolCondition, type VolumePool } from './volume-pool.js';

/**
 * Writes this node's entry of a VolumePool's status through the status subresource. Every node
 * writes into the same object, so each write carries the resourceVersion it read: a 409 means
 * another node wrote in between, and the entry is put into the fresh object and tried again. The
 * write is skipped when nothing but timestamps would change, so that a resync does not wake every
 * watcher of the object.
 */
const ATTEMPTS = 8;

export type StatusOutcome = 'written' | 'unchanged' | 'gone';

/** A condition the caller adds to the node's entry (Served, from the driver that serves this pool). */
export type ExtraCondition = Pick<PoolCondition, 'type' | 'status' | 'reason' | 'message'>;

export async function writeNodeStatus(kube: Kube, name: string, node: string, generation: number, observed: ObservedPool | null, extra: ExtraCondition[] = []): Promise<StatusOutcome> {
  for (let attempt = 1; ; attempt++) {
    let pool: VolumePool;
    try {
      pool = (await kube.custom.getClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, name })) as VolumePool;
    } catch (e) {
      if (statusOf(e) === 404) return 'gone';
      throw e;
    }
    const others = (pool.status?.nodes ?? []).filter((n) => n.node !== node);
    const previous = pool.status?.nodes?.find((n) => n.node === node);
    const entry = observed ? nodeEntry(node, generation, observed, previous, extra) : null;
    if (entry && previous && sameBut(previous, entry)) return 'unchanged';
    if (!entry && !previous) return 'unchanged';
    const nodes = [...others, ...(entry ? [entry] : [])].sort((a, b) => a.node.localeCompare(b.node));
    const body = { ...pool, status: { ...summarize(nodes), nodes } };
    try {
      await kube.custom.replaceClusterCustomObjectStatus({ group: GROUP, version: VERSION, plural: PLURAL, name, body });
      return 'written';
    } catch (e) {
      const code = statusOf(e);
      if (code === 404) return 'gone';
      if (code !== 409 || attempt >= ATTEMPTS) throw e;
      log.debug('VolumePool status conflict; reading it again', { pool: name, attempt });
    }
  }
}

function nodeEntry(node: string, generation: number, o: ObservedPool, previous: NodePoolStatus | undefined, extra: ExtraCondition[]): NodePoolStatus {
  const now = new Date().toISOString();
  const invalid = o.devices.filter((d) => d.health !== 'Healthy');
  const conditions: PoolCondition[] = [
    condition('Ready', o.phase === 'Ready' ? 'True' : 'False', o.phase === 'Ready' ? 'PoolReady' : o.phase === 'Degraded' ? 'PoolDegraded' : 'PoolFailed', o.lastError ?? (o.phase === 'Ready' ? 'the pool serves volumes' : `${invalid.length} device(s) need attention`)),
    condition('DevicesHealthy', invalid.length ? 'False' : 'True', invalid.length ? 'DeviceProblem' : 'AllHealthy', invalid.map((d) => `${d.device ?? d.path}: ${d.health}${d.message ? ` (${d.message})` : ''}`).join('; ') || 'every device is in the pool and present'),
    ...extra.map((c) => condition(c.type, c.status, c.reason, c.message)),
  ].map((c) => {
    // The transition time moves only when the status does.
    const before = previous?.conditions.find((p) => p.type === c.type);
    return before && before.status === c.status ? { ...c, lastTransitionTime: before.lastTransitionTime } : { ...c, lastTransitionTime: now };
  });
  return { node, ...o, observedGeneration: generation, conditions, lastUpdateTime: now };
}

function condition(type: string, status: PoolCondition['status'], reason: string, message: string): PoolCondition {
  return { type, status, reason, message, lastTransitionTime: '' };
}

/** Equal apart from lastUpdateTime; keys compared sorted (the API server stores objects as maps). */
function sameBut(a: NodePoolStatus, b: NodePoolStatus): boolean {
  return canonical({ ...a, lastUpdateTime: undefined }) === canonical({ ...b, lastUpdateTime: undefined });
}

function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    const entries = Object.entries(v as Record<string, unknown>).filter(([, x]) => x !== undefined).sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, x]) => `${JSON.stringify(k)}:${canonical(x)}`).join(',')}}`;
  }
  return JSON.stringify(v);
}
