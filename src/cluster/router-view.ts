import { log } from '../log.js';
import { orNull, pinnedNodeOf, type Kube } from './kube.js';

export interface RouterViewOptions {
  driver: string;
  namespace: string;
  /** The node plugins' DaemonSet: how many there should be. */
  daemonSet: string;
  topologyKey: string;
  /** How long one reading serves (a burst of calls shares it). */
  ttlMs?: number;
}

/**
 * What the snapshot router checks the nodes' answers against, from the Kubernetes API: how many node
 * plugins the DaemonSet wants (an absence is final only once that many answered), and which node each
 * of the driver's volumes is pinned to by its PersistentVolume (a node's claim to hold a volume must
 * agree). Both are read at most every `ttlMs`; a volume no PV of the last reading names is read again
 * (a PV made since), at most once a second.
 */
export class RouterView {
  private daemonSet?: { at: number; want: Promise<number> };
  private pvs?: { at: number; byHandle: Promise<Map<string, string | null>> };

  constructor(
    private readonly kube: Kube,
    private readonly o: RouterViewOptions,
  ) {}

  private get ttl(): number {
    return this.o.ttlMs ?? 10_000;
  }

  /** The DaemonSet's desired number of node plugins; a DaemonSet not found is an error (the router would trust any count). */
  expectedNodes(): Promise<number> {
    const now = performance.now();
    if (!this.daemonSet || now - this.daemonSet.at > this.ttl) {
      const want = orNull(this.kube.apps.readNamespacedDaemonSet({ name: this.o.daemonSet, namespace: this.o.namespace })).then((ds) => {
        if (!ds) throw new Error(`the node plugins' DaemonSet ${this.o.namespace}/${this.o.daemonSet} does not exist (--node-daemonset)`);
        // A count the DaemonSet controller has not written for this generation yet is no count: taken as 0, every absence would look final.
        const want = ds.status?.desiredNumberScheduled;
        if (want === undefined || (ds.status?.observedGeneration ?? 0) < (ds.metadata?.generation ?? 0)) throw new Error(`the node plugins' DaemonSet ${this.o.daemonSet} has no up-to-date status yet`);
        return want;
      });
      this.daemonSet = { at: now, want };
      want.catch((err: unknown) => {
        log.warn('snapshot router: cannot read the node plugins\' DaemonSet', { err: String(err) });
        if (this.daemonSet?.want === want) this.daemonSet = undefined;
      });
    }
    return this.daemonSet.want;
  }

  /** The node `volumeId`'s PV pins it to; null when no PV of this driver names it. */
  async pinnedNode(volumeId: string): Promise<string | null> {
    const now = performance.now();
    if (!this.pvs || now - this.pvs.at > this.ttl) return (await this.readPvs(now)).get(volumeId) ?? null;
    const m = await this.pvs.byHandle;
    if (m.has(volumeId) || now - this.pvs.at < 1000) return m.get(volumeId) ?? null;
    return (await this.readPvs(now)).get(volumeId) ?? null;
  }

  private readPvs(now: number): Promise<Map<string, string | null>> {
    const byHandle = this.kube.core.listPersistentVolume().then((list) => {
      const m = new Map<string, string | null>();
      for (const pv of list.items) if (pv.spec?.csi?.driver === this.o.driver && pv.spec.csi.volumeHandle) m.set(pv.spec.csi.volumeHandle, pinnedNodeOf(pv, this.o.topologyKey));
      return m;
    });
    this.pvs = { at: now, byHandle };
    byHandle.catch(() => {
      if (this.pvs?.byHandle === byHandle) this.pvs = undefined;
    });
    return byHandle;
  }
}
