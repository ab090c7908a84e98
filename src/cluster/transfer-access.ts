import type { V1PersistentVolumeClaim } from '@kubernetes/client-node';
import type { PeerIdentity, RouterIdentity } from '../transfer/identity.js';
import type { TransferKind } from '../transfer/server.js';
import { orNull, pinnedNodeOf, type Kube } from './kube.js';
import { matchesSelector } from './label-selector.js';

/** The claim a restore or clone is for, as external-provisioner names it (--extra-create-metadata). */
export interface Claim {
  namespace: string;
  name: string;
}

/** The source a claim's data source resolves to, and the node that holds it (null: the cluster does not say yet). */
export interface ClaimSource {
  kind: TransferKind;
  id: string;
  holder: string | null;
}

export interface AccessOptions {
  /** The CSI driver name: only its volumes and snapshots resolve. */
  driver: string;
  /** The driver's namespace and its node plugin pods' label selector. */
  namespace: string;
  nodeSelector: string;
  /** The topology key a PV's node affinity names its node by. */
  topologyKey: string;
  /** The snapshot router's pods' label selector: unset, no router certificate is taken. */
  routerSelector?: string;
}

export const SELECTED_NODE = 'volume.kubernetes.io/selected-node';
const MANAGED_BY = 'snapshot.storage.kubernetes.io/managed-by';
const SNAPSHOTS = { group: 'snapshot.storage.k8s.io', version: 'v1' } as const;

/** Why a read is refused; the message names the claim and what did not hold. */
export class Refusal extends Error {}
/** A refusal no retry can change: the claim names another source than the one asked for. */
export class Mismatch extends Refusal {}
/** Not yet: the cluster has not finished binding what the claim names (a retry may succeed). */
export class NotYet extends Refusal {}

/** How long one API read may take before the read it decides is answered "not now" (a hung API never holds a peer). */
const API_TIMEOUT_MS = 5_000;
function bounded<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`the Kubernetes API did not answer ${what} within ${API_TIMEOUT_MS / 1000} s`)), API_TIMEOUT_MS)))]).finally(() => clearTimeout(timer));
}

/**
 * Who may read what across nodes, decided from the Kubernetes API: a node may read a volume or a
 * snapshot only for a claim of its own — one the scheduler selected onto it, not bound yet, whose data
 * source (a VolumeSnapshot through its bound content's handle, or a PVC through its bound PV's handle)
 * is exactly that volume or snapshot of this driver. The same resolution tells a reader which node
 * holds the source, so it asks that node and no other.
 */
export class TransferAccess {
  constructor(
    private readonly kube: Kube,
    private readonly o: AccessOptions,
  ) {}

  /** The sender's check: resolves when `who`, connecting from `address`, may read kind/id for `claim`; throws a Refusal saying why not. */
  async authorize(who: PeerIdentity, address: string, kind: TransferKind, id: string, claim: Claim | null): Promise<void> {
    if (!claim) throw new Refusal('the request names no claim');
    await this.livePeer(who, address);
    const pvc = await this.claim(claim);
    const selected = pvc.metadata?.annotations?.[SELECTED_NODE];
    if (selected !== who.node) throw new Refusal(`claim ${show(claim)} is selected onto ${selected ? `node ${selected}` : 'no node'}, not ${who.node}`);
    const source = await this.resolve(pvc);
    if (source.kind !== kind || source.id !== id) throw new Refusal(`claim ${show(claim)} restores ${source.kind} ${source.id}, not ${kind} ${id}`);
  }

  /** The reader's side: the node holding the source of this claim, checked to be kind/id. */
  async holder(kind: TransferKind, id: string, claim: Claim): Promise<string> {
    const source = await this.resolve(await this.claim(claim));
    if (source.kind !== kind || source.id !== id) throw new Mismatch(`claim ${show(claim)} restores ${source.kind} ${source.id}, not ${kind} ${id}`);
    if (!source.holder) throw new Refusal(`the cluster does not say yet which node holds ${kind} ${id} (its VolumeSnapshotContent has no ${MANAGED_BY} label)`);
    return source.holder;
  }

  private readonly checked = new Map<string, number>();

  /**
   * For requests any node plugin may make (snapshot metadata): the credential is a live node plugin's,
   * used from its pod. A pass is remembered for 30 s per pod and address: one backup's requests (and a
   * fan-out asking every node) cost the API one read of the pod, not one each.
   */
  async checkPeer(who: PeerIdentity, address: string): Promise<void> {
    const key = `${who.pod.uid}|${who.node}|${address}`;
    const at = this.checked.get(key);
    if (at !== undefined && performance.now() - at < 30_000) return;
    await this.livePeer(who, address);
    if (this.checked.size > 1024) this.checked.clear();
    this.checked.set(key, performance.now());
  }

  /**
   * For snapshot commands: the router credential is a live snapshot router pod's (the driver's
   * namespace, the router's labels), used from that pod; remembered for 30 s as a peer's is.
   */
  async checkRouter(who: RouterIdentity, address: string): Promise<void> {
    const selector = this.o.routerSelector;
    if (!selector) throw new Refusal('this node takes no snapshot router (no --transfer-router-from-cluster)');
    const key = `router|${who.pod.uid}|${address}`;
    const at = this.checked.get(key);
    if (at !== undefined && performance.now() - at < 30_000) return;
    if (who.pod.namespace !== this.o.namespace) throw new Refusal(`the router credential names pod ${who.pod.namespace}/${who.pod.name}, outside the driver's namespace`);
    const pod = await orNull(bounded(this.kube.core.readNamespacedPod({ name: who.pod.name, namespace: who.pod.namespace }), 'for a pod'));
    if (!pod || pod.metadata?.uid !== who.pod.uid) throw new Refusal(`the router credential's pod ${who.pod.name} (${who.pod.uid}) no longer exists`);
    if (pod.metadata?.deletionTimestamp) throw new NotYet(`the router credential's pod ${who.pod.name} is being deleted`);
    if (!matchesSelector(selector, pod.metadata?.labels ?? {})) throw new Refusal(`the router credential's pod ${who.pod.name} is not a snapshot router pod (${selector})`);
    // From its pod's IP, or its node's: node plugins on the host network see a pod's connection masqueraded
    // as its node's address by CNIs that SNAT traffic leaving the pod network (hostNetwork=true).
    this.fromPod(pod, address, `the snapshot router ${who.pod.name}`, pod.status?.hostIP);
    if (this.checked.size > 1024) this.checked.clear();
    this.checked.set(key, performance.now());
  }

  /** The connection comes from one of the pod's own addresses. */
  private fromPod(pod: import('@kubernetes/client-node').V1Pod, address: string, who: string, alsoFrom?: string): void {
    const ips = [...(pod.status?.podIPs?.map((p) => p.ip) ?? [pod.status?.podIP]), alsoFrom].filter((ip): ip is string => !!ip);
    const from = address.replace(/^::ffff:/, '');
    if (!ips.includes(from)) throw new Refusal(`the credential of ${who} is used from ${from}, not from its pod (${ips.join(', ') || 'no IP'})`);
  }

  /** The credential's pod is alive, a node plugin of the driver, on the node it names, and the connection comes from it. */
  private async livePeer(who: PeerIdentity, address: string): Promise<void> {
    if (who.pod.namespace !== this.o.namespace) throw new Refusal(`the credential names pod ${who.pod.namespace}/${who.pod.name}, outside the driver's namespace`);
    const pod = await orNull(bounded(this.kube.core.readNamespacedPod({ name: who.pod.name, namespace: who.pod.namespace }), 'for a pod'));
    // A deleted or replaced pod revokes its credential: the certificate names the pod's UID.
    if (!pod || pod.metadata?.uid !== who.pod.uid) throw new Refusal(`the credential's pod ${who.pod.name} (${who.pod.uid}) no longer exists`);
    if (pod.metadata?.deletionTimestamp) throw new NotYet(`the credential's pod ${who.pod.name} is being deleted`);
    if (pod.spec?.nodeName !== who.node) throw new Refusal(`the credential's pod ${who.pod.name} runs on ${pod.spec?.nodeName}, not ${who.node}`);
    if (!matchesSelector(this.o.nodeSelector, pod.metadata?.labels ?? {})) throw new Refusal(`the credential's pod ${who.pod.name} is not a node plugin pod`);
    this.fromPod(pod, address, who.node);
  }

  private async claim(c: Claim): Promise<V1PersistentVolumeClaim> {
    const pvc = await orNull(bounded(this.kube.core.readNamespacedPersistentVolumeClaim({ name: c.name, namespace: c.namespace }), 'for a claim'));
    if (!pvc) throw new Refusal(`claim ${show(c)} does not exist`);
    if (pvc.spec?.volumeName) throw new Refusal(`claim ${show(c)} is bound already (to ${pvc.spec.volumeName}): nothing is provisioned for it`);
    return pvc;
  }

  /** The claim's data source, through its bound objects, to this driver's handle and where it lives. */
  async resolve(pvc: V1PersistentVolumeClaim): Promise<ClaimSource> {
    const c = { namespace: pvc.metadata!.namespace!, name: pvc.metadata!.name! };
    const ds = pvc.spec?.dataSourceRef ?? pvc.spec?.dataSource;
    if (!ds) throw new Refusal(`claim ${show(c)} has no data source`);
    const ns = (ds as { namespace?: string }).namespace;
    if (ns && ns !== c.namespace) throw new Refusal(`claim ${show(c)} names a data source in another namespace (${ns})`);
    if (ds.kind === 'VolumeSnapshot' && ds.apiGroup === SNAPSHOTS.group) {
      const vs = (await this.custom('volumesnapshots', ds.name, c.namespace)) as { metadata?: { uid?: string }; status?: { boundVolumeSnapshotContentName?: string } } | null;
      const contentName = vs?.status?.boundVolumeSnapshotContentName;
      if (!vs || !contentName) throw new NotYet(`VolumeSnapshot ${c.namespace}/${ds.name} ${vs ? 'is not bound to a content' : 'does not exist'}`);
      const vsc = (await this.custom('volumesnapshotcontents', contentName)) as {
        metadata?: { labels?: Record<string, string> };
        spec?: { driver?: string; volumeSnapshotRef?: { name?: string; namespace?: string; uid?: string }; source?: { snapshotHandle?: string } };
        status?: { snapshotHandle?: string };
      } | null;
      if (!vsc) throw new Refusal(`VolumeSnapshotContent ${contentName} does not exist`);
      const ref = vsc.spec?.volumeSnapshotRef;
      if (ref?.name !== ds.name || ref?.namespace !== c.namespace || (ref.uid && ref.uid !== vs.metadata?.uid)) throw new Refusal(`VolumeSnapshotContent ${contentName} is not bound to VolumeSnapshot ${c.namespace}/${ds.name}`);
      if (vsc.spec?.driver !== this.o.driver) throw new Refusal(`VolumeSnapshotContent ${contentName} is of driver ${vsc.spec?.driver}, not ${this.o.driver}`);
      // A pre-provisioned content's handle is in its spec (written by whoever imported it, immutable);
      // the status, which a node may write, must then agree with it.
      const specHandle = vsc.spec?.source?.snapshotHandle;
      if (specHandle && vsc.status?.snapshotHandle && vsc.status.snapshotHandle !== specHandle) throw new Refusal(`VolumeSnapshotContent ${contentName} has status.snapshotHandle ${vsc.status.snapshotHandle}, not its spec's ${specHandle}`);
      const id = specHandle ?? vsc.status?.snapshotHandle;
      if (!id) throw new NotYet(`VolumeSnapshotContent ${contentName} has no snapshot handle yet`);
      return { kind: 'snapshot', id, holder: vsc.metadata?.labels?.[MANAGED_BY] ?? null };
    }
    if (ds.kind === 'PersistentVolumeClaim' && !ds.apiGroup) {
      const src = await orNull(bounded(this.kube.core.readNamespacedPersistentVolumeClaim({ name: ds.name, namespace: c.namespace }), 'for the source claim'));
      if (!src?.spec?.volumeName) throw new NotYet(`source claim ${c.namespace}/${ds.name} ${src ? 'is not bound' : 'does not exist'}`);
      const pv = await orNull(bounded(this.kube.core.readPersistentVolume({ name: src.spec.volumeName }), 'for a PersistentVolume'));
      if (!pv) throw new Refusal(`PersistentVolume ${src.spec.volumeName} does not exist`);
      const ref = pv.spec?.claimRef;
      if (ref?.name !== ds.name || ref?.namespace !== c.namespace || (ref.uid && ref.uid !== src.metadata?.uid)) throw new Refusal(`PersistentVolume ${pv.metadata?.name} is not bound to claim ${c.namespace}/${ds.name}`);
      if (pv.spec?.csi?.driver !== this.o.driver) throw new Refusal(`PersistentVolume ${pv.metadata?.name} is not of driver ${this.o.driver}`);
      return { kind: 'volume', id: pv.spec.csi.volumeHandle, holder: pinnedNodeOf(pv, this.o.topologyKey) };
    }
    throw new Refusal(`claim ${show(c)} has a data source of kind ${ds.kind} (${ds.apiGroup ?? 'core'}), not a VolumeSnapshot or a PersistentVolumeClaim`);
  }

  private async custom(plural: string, name: string, namespace?: string): Promise<unknown> {
    const get = namespace ? this.kube.custom.getNamespacedCustomObject({ ...SNAPSHOTS, namespace, plural, name }) : this.kube.custom.getClusterCustomObject({ ...SNAPSHOTS, plural, name });
    return orNull(bounded(get, `for ${plural}`));
  }
}

const show = (c: Claim) => `${c.namespace}/${c.name}`;
