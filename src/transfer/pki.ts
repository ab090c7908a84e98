// @peculiar/x509's dependency injection needs the Reflect metadata API before it loads.
import 'reflect-metadata';
import { randomBytes, webcrypto, X509Certificate } from 'node:crypto';
import * as x509 from '@peculiar/x509';
import { identityUris, routerUris, type PeerIdentity, type RouterIdentity } from './identity.js';

type CryptoKey = webcrypto.CryptoKey;
type CryptoKeyPair = webcrypto.CryptoKeyPair;

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);

/** ECDSA P-256 with SHA-256 for every key and signature: small, fast, and what every TLS 1.3 stack takes. */
const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface KeyPair {
  keys: CryptoKeyPair;
  /** The private key as PKCS#8 PEM, for Node's TLS. */
  keyPem: string;
}

export interface CertificateAuthority {
  cert: x509.X509Certificate;
  certPem: string;
  keyPem: string;
  key: CryptoKey;
}

const pem = (label: string, der: ArrayBuffer) => `-----BEGIN ${label}-----\n${Buffer.from(der).toString('base64').replace(/(.{64})/g, '$1\n').replace(/\n$/, '')}\n-----END ${label}-----\n`;
const serial = () => {
  const b = randomBytes(16);
  b[0] &= 0x7f; // a positive INTEGER
  return b.toString('hex');
};

export async function newKeyPair(): Promise<KeyPair> {
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as CryptoKeyPair;
  return { keys, keyPem: pem('PRIVATE KEY', await webcrypto.subtle.exportKey('pkcs8', keys.privateKey)) };
}

/** A PKCS#10 request for this node's key: its signature proves the requester holds the key. */
export async function makeCsr(k: KeyPair, node: string): Promise<string> {
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({ name: [{ CN: [node] }], keys: k.keys, signingAlgorithm: ALG });
  return csr.toString('pem');
}

/** A new self-signed CA, allowed to sign end-entity certificates only (path length 0). */
export async function makeCa(commonName: string, lifetimeMs: number): Promise<CertificateAuthority> {
  const k = await newKeyPair();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    name: [{ CN: [commonName] }],
    notBefore: new Date(now - 5 * 60_000),
    notAfter: new Date(now + lifetimeMs),
    keys: k.keys,
    signingAlgorithm: ALG,
    extensions: [new x509.BasicConstraintsExtension(true, 0, true), new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true), await x509.SubjectKeyIdentifierExtension.create(k.keys.publicKey)],
  });
  return { cert, certPem: cert.toString('pem'), keyPem: k.keyPem, key: k.keys.privateKey };
}

/** A CA from PEM (a Secret's tls.crt and tls.key); throws when the key is not the certificate's or it cannot sign. */
export async function loadCa(certPem: string, keyPem: string): Promise<CertificateAuthority> {
  const cert = new x509.X509Certificate(firstPem(certPem));
  const basic = cert.getExtension(x509.BasicConstraintsExtension);
  if (!basic?.ca) throw new Error('the transfer CA certificate is not a CA (basicConstraints CA:TRUE missing)');
  // A dedicated root: every certificate it signs with our URIs is a node identity, and peers trust it alone (no chain is sent).
  if (!(await cert.isSelfSigned())) throw new Error('the transfer CA must be a self-signed CA of its own (an intermediate is not published as a chain, and a CA that signs other certificates would make them node identities)');
  const der = Buffer.from(keyPem.replace(/-----[^-]+-----/g, '').replace(/\s+/g, ''), 'base64');
  const key = await webcrypto.subtle.importKey('pkcs8', der, { name: 'ECDSA', namedCurve: 'P-256' }, true, ['sign']).catch(() => {
    throw new Error('the transfer CA key must be an ECDSA P-256 key in PKCS#8 PEM ("BEGIN PRIVATE KEY")');
  });
  // The key must be the certificate's: sign something and check it with the certificate.
  const probe = randomBytes(32);
  const sig = await webcrypto.subtle.sign(ALG, key, probe);
  if (!(await webcrypto.subtle.verify(ALG, await cert.publicKey.export(ALG, ['verify']), sig, probe))) throw new Error('the transfer CA key does not belong to its certificate');
  return { cert, certPem: cert.toString('pem'), keyPem, key };
}

/** A certificate request, checked: its self-signature, and an ECDSA P-256 key. */
export async function readCsr(request: string): Promise<{ subject: string; publicKey: x509.PublicKey }> {
  const csr = new x509.Pkcs10CertificateRequest(request);
  if (!(await csr.verify())) throw new Error('the request is not signed by its own key');
  const alg = csr.publicKey.algorithm as { name: string; namedCurve?: string };
  if (alg.name !== 'ECDSA' || alg.namedCurve !== 'P-256') throw new Error(`the request's key is ${alg.name} ${alg.namedCurve ?? ''}, not ECDSA P-256`);
  return { subject: csr.subject, publicKey: csr.publicKey };
}

/**
 * A node's certificate, or the snapshot router's: the identity in its SANs, usable as TLS server and
 * client, for `lifetimeMs` (never past the CA's end).
 */
export async function issue(ca: CertificateAuthority, publicKey: x509.PublicKey, id: PeerIdentity | (RouterIdentity & { router: true }), lifetimeMs: number): Promise<string> {
  const uris = 'router' in id ? routerUris(id) : identityUris(id);
  const cn = 'router' in id ? 'snapshot-router' : id.node.slice(0, 64);
  const now = Date.now();
  const notAfter = new Date(Math.min(now + lifetimeMs, ca.cert.notAfter.getTime()));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: [{ CN: [cn] }],
    issuer: ca.cert.subject,
    // Five minutes back: a peer whose clock lags a little still takes a certificate issued just now.
    notBefore: new Date(now - 5 * 60_000),
    notAfter,
    signingKey: ca.key,
    publicKey,
    signingAlgorithm: ALG,
    extensions: [
      new x509.SubjectAlternativeNameExtension(uris.map((value) => ({ type: 'url' as const, value })), true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth, x509.ExtendedKeyUsage.clientAuth]),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.BasicConstraintsExtension(false, undefined, true),
      await x509.AuthorityKeyIdentifierExtension.create(ca.cert),
    ],
  });
  return cert.toString('pem');
}

/** Every certificate in a PEM bundle. */
export function splitPem(bundle: string): string[] {
  return bundle.match(/-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g)?.map((s) => `${s}\n`) ?? [];
}

function firstPem(bundle: string): string {
  const first = splitPem(bundle)[0];
  if (!first) throw new Error('no certificate in the PEM');
  return first;
}

/** When a certificate ends, and which CA (by fingerprint) signed it among `cas`. */
export function certFacts(certPem: string, cas: string[] = []): { notBefore: number; notAfter: number; issuer?: string } {
  const c = new X509Certificate(certPem);
  const issuer = cas.map((p) => new X509Certificate(p)).find((ca) => c.checkIssued(ca) && c.verify(ca.publicKey));
  return { notBefore: Date.parse(c.validFrom), notAfter: Date.parse(c.validTo), issuer: issuer?.fingerprint256 };
}

export const fingerprint = (certPem: string) => new X509Certificate(certPem).fingerprint256;
