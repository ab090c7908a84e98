/**
 * Who a transfer certificate speaks for. Each node plugin's certificate names its node and the pod
 * it was issued to, as URI subject alternative names the signer writes from what the API server
 * proved about the requester (never from what the request asked for):
 *   urn:vpool-csi:node:<node name>
 *   urn:vpool-csi:pod:<namespace>:<pod name>:<pod uid>
 * A certificate with anything else, or with either missing, speaks for no one.
 */
export interface PeerIdentity {
  node: string;
  pod: { namespace: string; name: string; uid: string };
}

const NODE = 'urn:vpool-csi:node:';
const POD = 'urn:vpool-csi:pod:';
/** Kubernetes object names (RFC 1123 subdomains, lowercase) and UIDs: nothing that could smuggle a separator. */
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
const UID = /^[0-9a-fA-F-]{1,64}$/;

export function identityUris(id: PeerIdentity): string[] {
  return [`${NODE}${id.node}`, `${POD}${id.pod.namespace}:${id.pod.name}:${id.pod.uid}`];
}

export function validIdentity(id: PeerIdentity): boolean {
  return NAME.test(id.node) && NAME.test(id.pod.namespace) && NAME.test(id.pod.name) && UID.test(id.pod.uid);
}

/**
 * The identity in a certificate's subjectAltName as Node prints it ("URI:a, URI:b"); null unless it
 * holds exactly one node URI, one pod URI and nothing else.
 */
export function identityFromSan(san: string | undefined): PeerIdentity | null {
  if (!san) return null;
  const entries = san.split(', ');
  if (entries.length !== 2 || !entries.every((e) => e.startsWith('URI:'))) return null;
  const uris = entries.map((e) => e.slice(4));
  const node = uris.find((u) => u.startsWith(NODE))?.slice(NODE.length);
  const pod = uris.find((u) => u.startsWith(POD))?.slice(POD.length).split(':');
  if (node === undefined || !pod || pod.length !== 3) return null;
  const id = { node, pod: { namespace: pod[0], name: pod[1], uid: pod[2] } };
  return validIdentity(id) ? id : null;
}

/**
 * The snapshot router's certificate (cli/serve-router.ts): the controller's pod, and a role no node
 * plugin's certificate carries, so it speaks for no node (identityFromSan is null for it: it reads no
 * volume and asks for no metadata), and no node's certificate passes for it:
 *   urn:vpool-csi:role:snapshot-router
 *   urn:vpool-csi:pod:<namespace>:<pod name>:<pod uid>
 */
export interface RouterIdentity {
  pod: { namespace: string; name: string; uid: string };
}

const ROUTER = 'urn:vpool-csi:role:snapshot-router';

export function routerUris(id: RouterIdentity): string[] {
  return [ROUTER, `${POD}${id.pod.namespace}:${id.pod.name}:${id.pod.uid}`];
}

/** The router identity in a certificate's subjectAltName; null unless it is exactly the role and one pod. */
export function routerFromSan(san: string | undefined): RouterIdentity | null {
  if (!san) return null;
  const entries = san.split(', ');
  if (entries.length !== 2 || !entries.every((e) => e.startsWith('URI:'))) return null;
  const uris = entries.map((e) => e.slice(4));
  if (!uris.includes(ROUTER)) return null;
  const pod = uris.find((u) => u.startsWith(POD))?.slice(POD.length).split(':');
  if (!pod || pod.length !== 3) return null;
  const id = { pod: { namespace: pod[0], name: pod[1], uid: pod[2] } };
  return NAME.test(id.pod.namespace) && NAME.test(id.pod.name) && UID.test(id.pod.uid) ? id : null;
}

export const describe = (id: PeerIdentity) => `node ${id.node} (pod ${id.pod.namespace}/${id.pod.name})`;

/**
 * The TLS client's check of a listener: its certificate must name the node and the plugin pod the
 * caller meant (the pod list's), or the connection ends before a byte is sent.
 */
export function expectPeer(peer: { host: string; port: number; node: string; pod: { uid: string; name?: string } }, what: string) {
  return (_host: string, cert: { subjectaltname?: string }): Error | undefined => {
    const who = identityFromSan(cert.subjectaltname);
    if (who?.node === peer.node && who.pod.uid === peer.pod.uid) return undefined;
    return new Error(`the ${what} at ${peer.host}:${peer.port} is ${who ? `node ${who.node} (pod ${who.pod.name})` : 'no node'}, not node ${peer.node}${peer.pod.name ? ` (pod ${peer.pod.name})` : ''}`);
  };
}
