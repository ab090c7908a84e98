import type { V1CertificateSigningRequest, V1CertificateSigningRequestCondition, V1ConfigMap } from '@kubernetes/client-node';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { PeerIdentity, RouterIdentity } from '../transfer/identity.js';
import { routerFromSan, routerUris, validIdentity } from '../transfer/identity.js';

/** A snapshot router's request: its certificate names its pod and the role, no node. */
type Requester = RouterIdentity & { router: true };
import { fingerprint, issue, loadCa, makeCa, readCsr, splitPem, type CertificateAuthority } from '../transfer/pki.js';
import { orNull, statusOf, type Kube } from './kube.js';
import { matchesSelector } from './label-selector.js';

export interface SignerOptions {
  namespace: string;
  signerName: string;
  /** The Secret with the CA (tls.crt, tls.key). */
  caSecret: string;
  /** Make the CA when the Secret is missing, and rotate it when asked (the chart's default); false: the user's Secret, only read. */
  manageCa: boolean;
  /** The ConfigMap the node plugins read the trusted CAs from (ca.crt). */
  trustConfigMap: string;
  /** The node plugins' ServiceAccount (in `namespace`) and their pods' label selector. */
  nodeServiceAccount: string;
  nodeSelector: string;
  /**
   * The snapshot router's ServiceAccount and its pods' labels (the controller's): a request from one of
   * them gets a router certificate (transfer/identity.ts), which names no node. Unset: none is issued.
   */
  router?: { serviceAccount: string; selector: string };
  /** The longest certificate issued. */
  certLifetimeMs: number;
  caLifetimeMs: number;
  /** How long a replaced CA stays trusted beside the new one. */
  overlapMs: number;
  resyncMs: number;
}

/** Set on the CA Secret to ask for a new CA (manageCa); the signer records the value it acted on. */
export const ROTATE_ANNOTATION = 'vpool.dev/rotate-ca';
const ROTATED_ANNOTATION = 'vpool.dev/rotated-ca';
/** In the trust ConfigMap: the CAs being retired and until when they are still trusted. */
const RETIRING_KEY = 'retiring.json';
const ALLOWED_USAGES = new Set(['digital signature', 'key encipherment', 'server auth', 'client auth']);
const POD_NAME = 'authentication.kubernetes.io/pod-name';
const POD_UID = 'authentication.kubernetes.io/pod-uid';
const NODE_NAME = 'authentication.kubernetes.io/node-name';

/**
 * The transfer's certificate authority: the only process that holds the CA key. It answers the
 * node plugins' CertificateSigningRequests for its signer name, issuing a certificate only to a
 * request the API server recorded as made by the node plugins' ServiceAccount from a live node plugin
 * pod (the bound token's pod name and UID), for the node that pod runs on; it denies everything else
 * and says why. It keeps the trust bundle ConfigMap: the current CA first, and a replaced one for
 * `overlapMs` after the change, so old and new certificates are both accepted while every plugin
 * renews.
 */
export class TransferSigner {
  private ca: CertificateAuthority | null = null;
  private timer?: NodeJS.Timeout;
  /** Why the last pass failed (undefined: it did not, or none ran yet), for /healthz. */
  lastError: string | undefined = 'not synced yet';
  /** When a pass last succeeded: a pass that hangs (a hung API) shows as unhealthy, not as the last good one. */
  lastSuccess = 0;

  /** Why the signer is not healthy now, or undefined. */
  health(): string | undefined {
    if (this.lastError) return this.lastError;
    const age = Date.now() - this.lastSuccess;
    return age > 3 * this.o.resyncMs + 30_000 ? `no pass has succeeded for ${Math.round(age / 1000)} s` : undefined;
  }

  constructor(
    private readonly kube: Kube,
    private readonly o: SignerOptions,
  ) {}

  /** Syncs now and every resync; a failed pass (the API away, a bad CA Secret) is logged and tried again. */
  async start(): Promise<void> {
    const pass = () =>
      this.sync().then(
        () => {
          this.lastError = undefined;
          this.lastSuccess = Date.now();
        },
        (err: unknown) => {
          this.lastError = errorMessage(err);
          log.error('transfer signer: sync failed', { error: this.lastError });
        },
      );
    await pass();
    const tick = () => {
      this.timer = setTimeout(() => void pass().finally(tick), this.o.resyncMs);
    };
    tick();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  /** One pass: the CA, the trust bundle, then every open request. */
  async sync(): Promise<void> {
    this.ca = await this.currentCa();
    await this.publishTrust(this.ca);
    const list = await this.kube.certificates.listCertificateSigningRequest({ fieldSelector: `spec.signerName=${this.o.signerName}` });
    for (const csr of list.items) {
      if (csr.spec.signerName !== this.o.signerName || csr.status?.certificate || condition(csr, 'Denied') || condition(csr, 'Failed')) continue;
      await this.answer(csr).catch((err) => log.error('transfer signer: a request could not be answered', { csr: csr.metadata?.name, error: errorMessage(err) }));
    }
  }

  private async currentCa(): Promise<CertificateAuthority> {
    const secret = await orNull(this.kube.core.readNamespacedSecret({ name: this.o.caSecret, namespace: this.o.namespace }));
    if (!secret) {
      if (!this.o.manageCa) throw new Error(`the transfer CA Secret ${this.o.namespace}/${this.o.caSecret} does not exist (it is the user's: transfer.tls.existingSecret)`);
      const ca = await makeCa('vpool-csi transfer CA', this.o.caLifetimeMs);
      await this.kube.core.createNamespacedSecret({ namespace: this.o.namespace, body: { metadata: { name: this.o.caSecret, labels: { 'app.kubernetes.io/name': 'vpool-csi' } }, type: 'kubernetes.io/tls', data: { 'tls.crt': b64(ca.certPem), 'tls.key': b64(ca.keyPem) } } }).catch((err: unknown) => {
        if (statusOf(err) !== 409) throw err; // another signer made one first: read it next pass
      });
      log.info('transfer signer: made a new CA', { secret: this.o.caSecret, fingerprint: fingerprint(ca.certPem) });
      return this.currentCa();
    }
    const data = secret.data ?? {};
    const loaded = await loadCa(unb64(data['tls.crt']), unb64(data['tls.key']));
    const asked = secret.metadata?.annotations?.[ROTATE_ANNOTATION];
    // Nearing its end (the last fifth, or less than the overlap left) a CA the signer manages is replaced by itself.
    const ending = loaded.cert.notAfter.getTime() - Date.now() < Math.max(this.o.overlapMs, (loaded.cert.notAfter.getTime() - loaded.cert.notBefore.getTime()) / 5);
    if (this.o.manageCa && ((asked && asked !== secret.metadata?.annotations?.[ROTATED_ANNOTATION]) || ending)) {
      const next = await makeCa('vpool-csi transfer CA', this.o.caLifetimeMs);
      secret.data = { ...data, 'tls.crt': b64(next.certPem), 'tls.key': b64(next.keyPem) };
      secret.metadata = { ...secret.metadata!, annotations: { ...secret.metadata?.annotations, ...(asked ? { [ROTATED_ANNOTATION]: asked } : {}) } };
      await this.kube.core.replaceNamespacedSecret({ name: this.o.caSecret, namespace: this.o.namespace, body: secret });
      log.info('transfer signer: rotated the CA', { secret: this.o.caSecret, reason: ending ? 'the CA is near its end' : `asked (${ROTATE_ANNOTATION}=${asked})`, fingerprint: fingerprint(next.certPem) });
      return next;
    }
    return loaded;
  }

  /** The bundle: the current CA first, then each replaced CA until its overlap ends. */
  private async publishTrust(ca: CertificateAuthority): Promise<void> {
    const current = await orNull(this.kube.core.readNamespacedConfigMap({ name: this.o.trustConfigMap, namespace: this.o.namespace }));
    const had = splitPem(current?.data?.['ca.crt'] ?? '');
    let retiring: Array<{ pem: string; until: number }> = [];
    try {
      retiring = JSON.parse(current?.data?.[RETIRING_KEY] ?? '[]') as typeof retiring;
    } catch {
      retiring = [];
    }
    const now = Date.now();
    const fp = fingerprint(ca.certPem);
    if (had[0] && fingerprint(had[0]) !== fp && !retiring.some((r) => fingerprint(r.pem) === fingerprint(had[0]))) retiring.push({ pem: had[0], until: now + this.o.overlapMs });
    retiring = retiring.filter((r) => r.until > now && fingerprint(r.pem) !== fp);
    const data = { 'ca.crt': [ca.certPem, ...retiring.map((r) => r.pem)].join(''), [RETIRING_KEY]: JSON.stringify(retiring) };
    if (current && current.data?.['ca.crt'] === data['ca.crt'] && current.data?.[RETIRING_KEY] === data[RETIRING_KEY]) return;
    const body: V1ConfigMap = { ...(current ?? {}), metadata: { ...(current?.metadata ?? {}), name: this.o.trustConfigMap, labels: { ...current?.metadata?.labels, 'app.kubernetes.io/name': 'vpool-csi' } }, data };
    if (current) await this.kube.core.replaceNamespacedConfigMap({ name: this.o.trustConfigMap, namespace: this.o.namespace, body });
    else await this.kube.core.createNamespacedConfigMap({ namespace: this.o.namespace, body });
    log.info('transfer signer: trust bundle updated', { configMap: this.o.trustConfigMap, cas: 1 + retiring.length });
  }

  private async answer(csr: V1CertificateSigningRequest): Promise<void> {
    const name = csr.metadata!.name!;
    let id: PeerIdentity | Requester;
    let publicKey: Awaited<ReturnType<typeof readCsr>>['publicKey'];
    try {
      id = await this.requester(csr);
      ({ publicKey } = await readCsr(Buffer.from(csr.spec.request, 'base64').toString('utf8')));
      const bad = (csr.spec.usages ?? []).filter((u) => !ALLOWED_USAGES.has(u));
      if (bad.length) throw new Error(`usages ${bad.join(', ')} are not granted`);
    } catch (err) {
      await this.setCondition(csr, { type: 'Denied', status: 'True', reason: 'VpoolTransferSignerDenied', message: errorMessage(err) });
      log.warn('transfer signer: denied a certificate request', { csr: name, user: csr.spec.username, reason: errorMessage(err) });
      return;
    }
    if (!condition(csr, 'Approved')) {
      csr = await this.setCondition(csr, { type: 'Approved', status: 'True', reason: 'VpoolTransferSignerApproved', message: 'router' in id ? `snapshot router ${id.pod.namespace}/${id.pod.name}` : `${id.pod.namespace}/${id.pod.name} on node ${id.node}` });
    }
    const asked = csr.spec.expirationSeconds ? csr.spec.expirationSeconds * 1000 : this.o.certLifetimeMs;
    const cert = await issue(this.ca!, publicKey, id, Math.min(asked, this.o.certLifetimeMs));
    await this.kube.certificates.replaceCertificateSigningRequestStatus({ name, body: { ...csr, status: { ...csr.status, certificate: b64(cert) } } });
    log.info('transfer signer: issued a certificate', { csr: name, ...('router' in id ? { role: 'snapshot-router' } : { node: id.node }), pod: `${id.pod.namespace}/${id.pod.name}` });
  }

  /** Who made the request, from what the API server recorded of the requester; throws the reason to deny. */
  private async requester(csr: V1CertificateSigningRequest): Promise<PeerIdentity | Requester> {
    const sa = (account: string) => `system:serviceaccount:${this.o.namespace}:${account}`;
    const router = this.o.router && csr.spec.username === sa(this.o.router.serviceAccount) ? this.o.router : undefined;
    if (csr.spec.username !== sa(this.o.nodeServiceAccount) && !router) throw new Error(`requested by ${csr.spec.username ?? 'nobody'}, not the node plugins' ServiceAccount ${sa(this.o.nodeServiceAccount)}${this.o.router ? ` nor the snapshot router's ${sa(this.o.router.serviceAccount)}` : ''}`);
    const podName = csr.spec.extra?.[POD_NAME]?.[0];
    const podUid = csr.spec.extra?.[POD_UID]?.[0];
    if (!podName || !podUid) throw new Error('the requester\'s token is not bound to a pod (no pod name and UID in the request\'s user info)');
    const pod = await orNull(this.kube.core.readNamespacedPod({ name: podName, namespace: this.o.namespace }));
    if (!pod || pod.metadata?.uid !== podUid) throw new Error(`pod ${this.o.namespace}/${podName} (${podUid}) does not exist`);
    if (pod.metadata?.deletionTimestamp) throw new Error(`pod ${this.o.namespace}/${podName} is being deleted`);
    const [selector, account, what] = router ? [router.selector, router.serviceAccount, 'snapshot router pod'] : [this.o.nodeSelector, this.o.nodeServiceAccount, 'node plugin pod'];
    if (!matchesSelector(selector, pod.metadata?.labels ?? {})) throw new Error(`pod ${this.o.namespace}/${podName} is not a ${what} (${selector})`);
    if ((pod.spec?.serviceAccountName ?? 'default') !== account) throw new Error(`pod ${podName} runs as ${pod.spec?.serviceAccountName}, not ${account}`);
    if (router) {
      const id = { router: true as const, pod: { namespace: this.o.namespace, name: podName, uid: podUid } };
      if (!routerFromSan(routerUris(id).map((u) => `URI:${u}`).join(', '))) throw new Error(`pod ${podName} has a name a certificate cannot carry`);
      return id;
    }
    const node = pod.spec?.nodeName;
    if (!node) throw new Error(`pod ${podName} is not on a node yet`);
    const claimed = csr.spec.extra?.[NODE_NAME]?.[0];
    if (claimed && claimed !== node) throw new Error(`the requester's token is bound to node ${claimed}, its pod runs on ${node}`);
    const id = { node, pod: { namespace: this.o.namespace, name: podName, uid: podUid } };
    if (!validIdentity(id)) throw new Error(`node ${node} or pod ${podName} has a name a certificate cannot carry`);
    return id;
  }

  private async setCondition(csr: V1CertificateSigningRequest, c: V1CertificateSigningRequestCondition): Promise<V1CertificateSigningRequest> {
    const body = { ...csr, status: { ...csr.status, conditions: [...(csr.status?.conditions ?? []), { ...c, lastUpdateTime: new Date() }] } };
    return this.kube.certificates.replaceCertificateSigningRequestApproval({ name: csr.metadata!.name!, body });
  }
}

const condition = (csr: V1CertificateSigningRequest, type: string) => csr.status?.conditions?.some((c) => c.type === type && c.status === 'True');
const b64 = (s: string) => Buffer.from(s).toString('base64');
const unb64 = (s: string | undefined) => Buffer.from(s ?? '', 'base64').toString('utf8');
