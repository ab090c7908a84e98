import { ListWatch, Watch, type KubernetesListObject, type V1Node } from '@kubernetes/client-node';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { LvmCli } from '../pool/lvm/lvm-cli.js';
import { EventRecorder } from './events.js';
import { statusOf, type Kube } from './kube.js';

const CRD_RETRY_MS = 60_000;
import { reconcileFilePool, reconcileLvmPool, type ObservedPool, type ReconcileResult } from './pool-reconcile.js';
import { writeNodeStatus } from './pool-status.js';
import { GROUP, KIND, PLURAL, poolSettings, PoolSpecError, selects, VERSION, type PoolSettings, type VolumePool } from './volume-pool.js';

export interface PoolAgentOptions {
  node: string;
  lvm: LvmCli;
  /** How often every selected pool is looked at again without a change in the cluster (free space, globs that match new disks). */
  resyncMs: number;
  /** The VolumePool this node's driver serves: its entry gets a Served condition. */
  served?: string;
  /** Build this VolumePool alone (--volume-pools off with --pool-from-cluster); others are left to other agents. */
  only?: string;
  /** Told each time a pool was reconciled on this node. */
  onReconciled?: (name: string, settings: PoolSettings | null, observed: ObservedPool) => void;
}

/**
 * The node side of VolumePools. Two informers (list, then watch from that resourceVersion, relisting
 * on 410 Gone) keep the VolumePools and this node's Node object; a change of a pool's spec
 * (metadata.generation) or of the node's labels queues a reconcile. Reconciles run one at a time on
 * a node, because pools on one node share its disks. A slow resync refreshes status; it is not how
 * changes are found.
 */
export class PoolAgent {
  private readonly pools: ListWatch<VolumePool>;
  private readonly nodes: ListWatch<V1Node>;
  private readonly events: EventRecorder;
  private readonly queue = new Set<string>();
  private readonly done = new Map<string, { generation: number; labels: string }>();
  private working: Promise<void> | null = null;
  private timer?: NodeJS.Timeout;
  private stopped = false;
  /** The VolumePool list has been read: the CRD is installed and pools not in the cache do not exist. */
  listed = false;
  /** The API server answered 404 for VolumePools: the CRD is not installed (yet). */
  crdMissing = false;

  constructor(
    private readonly kube: Kube,
    private readonly opts: PoolAgentOptions,
  ) {
    this.events = new EventRecorder(kube, 'vpool-csi-node', opts.node);
    const watch = new Watch(kube.config);
    const listPools = async () => {
      const list = (await kube.custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL })) as KubernetesListObject<VolumePool>;
      if (this.crdMissing) log.info('the VolumePool CRD is installed now; building the VolumePools that select this node', { node: opts.node });
      this.crdMissing = false;
      this.listed = true;
      return list;
    };
    this.pools = new ListWatch<VolumePool>(`/apis/${GROUP}/${VERSION}/${PLURAL}`, watch, listPools, false);
    const fieldSelector = `metadata.name=${opts.node}`;
    this.nodes = new ListWatch<V1Node>('/api/v1/nodes', watch, () => kube.core.listNode({ fieldSelector }), false, undefined, fieldSelector);
    for (const [informer, what] of [[this.pools, 'volumepools'], [this.nodes, 'nodes']] as const) {
      // An informer stops on any error but 410 Gone; it is started again after a pause.
      informer.on('error', (err: unknown) => {
        if (this.stopped) return;
        // No CRD is a state, not a failure: said once, looked at again every minute (an install may add it).
        if (what === 'volumepools' && statusOf(err) === 404) {
          if (!this.crdMissing) log.info('the VolumePool CRD is not installed; no VolumePools are built (looking again every minute)', { node: opts.node });
          this.crdMissing = true;
          setTimeout(() => void (this.stopped ? undefined : informer.start()), CRD_RETRY_MS).unref();
          return;
        }
        log.warn('watch failed; starting it again in 5s', { resource: what, error: errorMessage(err) });
        setTimeout(() => void (this.stopped ? undefined : informer.start()), 5000).unref();
      });
    }
    this.pools.on('add', (p) => this.poolChanged(p));
    this.pools.on('update', (p) => this.poolChanged(p));
    this.pools.on('delete', (p) => {
      this.done.delete(p.metadata.name);
      this.events.forget(p.metadata.name);
      log.info('VolumePool deleted; its pool on this node stays as it is', { pool: p.metadata.name });
    });
    this.nodes.on('add', () => this.enqueueAll());
    this.nodes.on('update', () => this.enqueueAll());
  }

  async start(): Promise<void> {
    await Promise.all([this.nodes.start(), this.pools.start()]);
    this.enqueueAll();
    this.timer = setInterval(() => this.enqueueAll(true), this.opts.resyncMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await Promise.all([this.pools.stop(), this.nodes.stop()]);
    await this.working;
  }

  get(name: string): VolumePool | undefined {
    return this.pools.get(name);
  }

  /** Whether the pool selects this node; undefined while the pool or the node is not known. */
  selectsNode(name: string): boolean | undefined {
    const pool = this.pools.get(name);
    const labels = this.labels();
    return pool && labels ? selects(pool.spec?.nodeSelector, labels) : undefined;
  }

  private labels(): Record<string, string> | undefined {
    return this.nodes.get(this.opts.node)?.metadata?.labels ?? (this.nodes.get(this.opts.node) ? {} : undefined);
  }

  private poolChanged(pool: VolumePool): void {
    const done = this.done.get(pool.metadata.name);
    // Our own status writes come back as updates; only a new spec (or new node labels) is work.
    if (done && done.generation === (pool.metadata.generation ?? 0) && done.labels === JSON.stringify(this.labels() ?? {})) return;
    this.enqueue(pool.metadata.name);
  }

  private enqueueAll(resync = false): void {
    for (const p of this.pools.list()) {
      if (resync) this.done.delete(p.metadata.name);
      this.poolChanged(p);
    }
  }

  private enqueue(name: string): void {
    this.queue.add(name);
    this.kick();
  }

  private kick(): void {
    if (this.working || this.stopped) return;
    // A name queued while the drain was finishing is picked up by the next one.
    this.working = this.drain().finally(() => {
      this.working = null;
      if (this.queue.size) this.kick();
    });
  }

  private async drain(): Promise<void> {
    while (this.queue.size && !this.stopped) {
      const name = this.queue.values().next().value as string;
      this.queue.delete(name);
      const pool = this.pools.get(name);
      if (!pool || (this.opts.only !== undefined && name !== this.opts.only)) continue;
      try {
        await this.reconcile(pool);
      } catch (e) {
        log.error('VolumePool reconcile failed', { pool: name, error: errorMessage(e) });
        // Tried again at the next change or resync.
      }
    }
  }

  private async reconcile(pool: VolumePool): Promise<void> {
    const name = pool.metadata.name;
    const generation = pool.metadata.generation ?? 0;
    const labels = this.labels();
    if (labels === undefined) return; // this node's object is not known yet
    const ref = { apiVersion: `${GROUP}/${VERSION}`, kind: KIND, name, uid: pool.metadata.uid };
    this.done.set(name, { generation, labels: JSON.stringify(labels) });
    if (!selects(pool.spec?.nodeSelector, labels)) {
      // Unselected: the entry goes, the pool on the disks stays (never destroyed by a label).
      if ((await writeNodeStatus(this.kube, name, this.opts.node, generation, null)) === 'written') {
        await this.events.record(ref, 'Normal', 'NodeUnselected', `node ${this.opts.node} no longer matches spec.nodeSelector; its pool is left as it is`);
      }
      return;
    }
    let settings: PoolSettings | null = null;
    let result: ReconcileResult;
    try {
      settings = poolSettings(pool);
      result = settings.backend === 'lvm' ? await reconcileLvmPool(this.opts.lvm, settings) : await reconcileFilePool(settings);
    } catch (e) {
      if (!(e instanceof PoolSpecError)) throw e;
      result = { observed: { phase: 'Failed', devices: [], sizeBytes: 0, freeBytes: 0, volumes: 0, snapshots: 0, lastError: e.message }, events: [{ type: 'Warning', reason: 'InvalidSpec', message: e.message }] };
    }
    // Events first: whoever sees the new status can find the Events that explain it.
    for (const ev of result.events) await this.events.record(ref, ev.type, ev.reason, `${this.opts.node}: ${ev.message}`);
    const served = name === this.opts.served
      ? [result.observed.phase === 'Failed'
          ? { type: 'Served', status: 'False' as const, reason: 'PoolFailed', message: `the node plugin cannot serve volumes from this pool: ${result.observed.lastError ?? 'it failed'}` }
          : { type: 'Served', status: 'True' as const, reason: 'Serving', message: 'the node plugin serves volumes from this pool' }]
      : [];
    const outcome = await writeNodeStatus(this.kube, name, this.opts.node, generation, result.observed, served);
    log.info('VolumePool reconciled', { pool: name, node: this.opts.node, phase: result.observed.phase, status: outcome, events: result.events.map((e) => e.reason) });
    this.opts.onReconciled?.(name, settings, result.observed);
  }
}
