import { createHash, createPrivateKey, X509Certificate } from 'node:crypto';
import type { V1CertificateSigningRequest } from '@kubernetes/client-node';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { TransferCredentials } from '../transfer/credentials.js';
import { identityFromSan, routerFromSan } from '../transfer/identity.js';
import { certFacts, fingerprint, makeCsr, newKeyPair, splitPem, type KeyPair } from '../transfer/pki.js';
import { orNull, statusOf, type Kube } from './kube.js';

export interface EnrolOptions {
  /** The node this plugin runs on (its certificate names it), or the snapshot router's pod (a router certificate, no node). */
  node: string;
  router?: { pod: string };
  /** The driver's namespace: the trust bundle's ConfigMap is there. */
  namespace: string;
  /** The ConfigMap whose `ca.crt` holds the CAs peers are trusted by (the signer keeps it). */
  trustConfigMap: string;
  signerName: string;
  /** How long a certificate is asked for (the signer may give less). */
  lifetimeSeconds: number;
  /** How often the trust bundle and a pending request are looked at. */
  refreshMs: number;
}

/**
 * This node's transfer credential, from the Kubernetes CertificateSigningRequest API: a key made
 * here (in memory only: it never touches a disk, and a new pod makes a new one), a request for it
 * under the driver's signer name, and the certificate the driver's signer issues once it has checked
 * (from what the API server recorded of the requester: its pod, its node) that the request comes from
 * this node's plugin. Renewed at two thirds of its life, and at once when the trust bundle's newest
 * CA is not the one that signed it (a rotation). The trust bundle is read again every refresh.
 */
export class TransferEnrolment {
  private key: KeyPair | null = null;
  private cert: string | null = null;
  private trust: string[] = [];
  private pending: { name: string; key: KeyPair; since: number } | null = null;
  /** The newest CA of the bundle, and when this plugin first saw it (a rotation is followed only once peers trust it too). */
  private newest: { fingerprint: string; seenAt: number } | null = null;
  private timer?: NodeJS.Timeout;
  private failures = 0;
  private stopped = false;

  constructor(
    private readonly kube: Kube,
    private readonly credentials: TransferCredentials,
    private readonly o: EnrolOptions,
  ) {}

  start(): void {
    const tick = async () => {
      try {
        await this.refresh();
        this.failures = 0;
      } catch (err) {
        this.failures++;
        log.warn('transfer credential: not renewed yet', { error: errorMessage(err) });
      }
      if (this.stopped) return;
      // Fast while waiting for a certificate, at the refresh pace once there is one; backing off on failures.
      const wait = this.cert && !this.pending ? this.o.refreshMs : Math.min(this.o.refreshMs, 1000);
      this.timer = setTimeout(() => void tick(), Math.min(wait * 2 ** Math.min(this.failures, 5), 5 * 60_000));
      this.timer.unref();
    };
    void tick();
  }

  stop(): void {
    this.stopped = true;
    clearTimeout(this.timer);
  }

  private async refresh(): Promise<void> {
    const trust = await this.readTrust();
    const trustChanged = trust.join('') !== this.trust.join('');
    this.trust = trust;
    const fp = fingerprint(trust[0]);
    if (this.newest?.fingerprint !== fp) this.newest = { fingerprint: fp, seenAt: Date.now() };
    if (this.pending) await this.collect();
    if (!this.pending && this.needsCertificate()) await this.request();
    if (trustChanged && this.cert && this.key) this.publish();
  }

  private async readTrust(): Promise<string[]> {
    const cm = await this.kube.core.readNamespacedConfigMap({ name: this.o.trustConfigMap, namespace: this.o.namespace }).catch((err: unknown) => {
      if (statusOf(err) === 404) throw new Error(`the trust bundle ConfigMap ${this.o.namespace}/${this.o.trustConfigMap} does not exist yet (the transfer signer makes it)`);
      throw err;
    });
    const cas = splitPem(cm.data?.['ca.crt'] ?? '');
    if (!cas.length) throw new Error(`ConfigMap ${this.o.namespace}/${this.o.trustConfigMap} holds no CA in ca.crt`);
    return cas;
  }

  private needsCertificate(): boolean {
    if (!this.cert) return true;
    const f = certFacts(this.cert, this.trust);
    if (!f.issuer) return true; // its CA is no longer trusted
    // The newest CA comes first: a rotation began. Renewed onto it only once every peer has read the
    // bundle that has it (two refreshes), or a peer still on the old bundle would refuse the new certificate.
    if (f.issuer !== fingerprint(this.trust[0]) && Date.now() - (this.newest?.seenAt ?? 0) >= 2 * this.o.refreshMs) return true;
    return Date.now() > f.notBefore + ((f.notAfter - f.notBefore) * 2) / 3;
  }

  private async request(): Promise<void> {
    const key = await newKeyPair();
    const csr = await makeCsr(key, this.o.router ? 'snapshot-router' : this.o.node);
    // Named by node (or router pod) and key: a retry after a lost answer finds its own request, another node never collides.
    const who = this.o.router ? `router-${this.o.router.pod}` : this.o.node;
    const name = `vpool-csi-transfer-${who.slice(0, 180)}-${createHash('sha256').update(csr).digest('hex').slice(0, 12)}`;
    const body: V1CertificateSigningRequest = {
      apiVersion: 'certificates.k8s.io/v1',
      kind: 'CertificateSigningRequest',
      metadata: { name, labels: { 'app.kubernetes.io/name': 'vpool-csi', ...(this.o.router ? { 'vpool.dev/transfer-role': 'snapshot-router' } : { 'vpool.dev/transfer-node': this.o.node.slice(0, 63) }) } },
      spec: { request: Buffer.from(csr).toString('base64'), signerName: this.o.signerName, expirationSeconds: this.o.lifetimeSeconds, usages: ['digital signature', 'server auth', 'client auth'] },
    };
    await this.kube.certificates.createCertificateSigningRequest({ body });
    this.pending = { name, key, since: Date.now() };
    log.info('transfer credential: certificate requested', { csr: name, signer: this.o.signerName });
    await this.collect();
  }

  private async collect(): Promise<void> {
    const p = this.pending!;
    const csr = await orNull(this.kube.certificates.readCertificateSigningRequest({ name: p.name }));
    const denied = csr?.status?.conditions?.find((c) => (c.type === 'Denied' || c.type === 'Failed') && c.status === 'True');
    if (!csr || denied) {
      this.pending = null;
      throw new Error(csr ? `certificate request ${p.name} ${denied!.type.toLowerCase()}: ${denied!.message ?? denied!.reason ?? ''}` : `certificate request ${p.name} is gone`);
    }
    if (!csr.status?.certificate) {
      if (Date.now() - p.since > 60_000) log.warn('transfer credential: the signer has not answered yet', { csr: p.name, waitingSeconds: Math.round((Date.now() - p.since) / 1000) });
      return;
    }
    const cert = Buffer.from(csr.status.certificate, 'base64').toString('utf8');
    try {
      this.check(cert, p.key);
    } catch (err) {
      this.pending = null; // a bad certificate is not collected again: the next tick asks anew
      throw err;
    }
    this.key = p.key;
    this.cert = cert;
    this.pending = null;
    const f = certFacts(cert, this.trust);
    log.info('transfer credential: certificate issued', { csr: p.name, notAfter: new Date(f.notAfter).toISOString() });
    this.publish();
  }

  /** A certificate is taken only for this node (or this router pod), for this key, from a trusted CA. */
  private check(cert: string, key: KeyPair): void {
    const c = new X509Certificate(cert);
    if (this.o.router) {
      const r = routerFromSan(c.subjectAltName);
      if (!r || r.pod.name !== this.o.router.pod) throw new Error(`the issued certificate is ${r ? `pod ${r.pod.name}'s` : 'no router certificate'}, not the snapshot router's of pod ${this.o.router.pod}`);
    } else {
      const id = identityFromSan(c.subjectAltName);
      if (!id || id.node !== this.o.node) throw new Error(`the issued certificate names ${id ? `node ${id.node}` : 'no node'}, not ${this.o.node}`);
    }
    if (!c.checkPrivateKey(createPrivateKey(key.keyPem))) throw new Error('the issued certificate is not for this key');
    if (!certFacts(cert, this.trust).issuer) throw new Error('the issued certificate is not signed by a CA of the trust bundle');
  }

  private publish(): void {
    this.credentials.set({ key: this.key!.keyPem, cert: this.cert!, trust: this.trust });
  }
}
