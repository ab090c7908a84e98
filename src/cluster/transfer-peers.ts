import type { V1Pod } from '@kubernetes/client-node';
import { log } from '../log.js';
import type { Kube } from './kube.js';

/** A peer's transfer listener, and the node and pod its certificate must name (structurally transfer/client's Peer). */
export interface PeerAddress {
  host: string;
  port: number;
  node: string;
  pod: { namespace: string; name: string; uid: string };
}

export interface ClusterPeersOptions {
  namespace: string;
  /** The label selector of the driver's node plugin pods (the DaemonSet's). */
  selector: string;
  /** This node: its own plugin is not a peer. */
  node: string;
  /** How long one listing of the pods serves (a restore asks once; a burst of restores shares it). */
  ttlMs?: number;
}

/**
 * The other nodes' transfer listeners, from the Kubernetes API: the running node plugin pods of the
 * driver (by label, in its namespace), each at its pod IP and the port its container names `transfer`.
 */
export function clusterPeers(kube: Kube, o: ClusterPeersOptions): (fresh?: boolean) => Promise<PeerAddress[]> {
  let cached: { at: number; peers: Promise<PeerAddress[]> } | undefined;
  const ttl = o.ttlMs ?? 10_000;
  return (fresh = false) => {
    const now = performance.now();
    if (!cached || fresh || now - cached.at > ttl) {
      const peers = kube.core.listNamespacedPod({ namespace: o.namespace, labelSelector: o.selector }).then((list) => list.items.flatMap((p) => peerOf(p, o.node)));
      cached = { at: now, peers };
      peers.catch((err: unknown) => {
        log.warn('cannot list the transfer peers', { namespace: o.namespace, selector: o.selector, err: String(err) });
        if (cached?.peers === peers) cached = undefined;
      });
    }
    return cached.peers;
  };
}

function peerOf(pod: V1Pod, self: string): PeerAddress[] {
  const node = pod.spec?.nodeName;
  const { name, namespace, uid } = pod.metadata ?? {};
  if (!node || node === self || pod.status?.phase !== 'Running' || !pod.status.podIP || !name || !namespace || !uid || pod.metadata?.deletionTimestamp) return [];
  const port = (pod.spec?.containers ?? []).flatMap((c) => c.ports ?? []).find((p) => p.name === 'transfer')?.containerPort;
  return port ? [{ host: pod.status.podIP, port, node, pod: { namespace, name, uid } }] : [];
}
