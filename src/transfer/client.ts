import https from 'node:https';
import type { PeerCertificate } from 'node:tls';
import { callSignal } from '../call-context.js';
import { denied, DriverError, unavailable } from '../errors.js';
import { log } from '../log.js';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { UPGRADE, type TransferKind } from './server.js';
import type { TransferCredentials } from './credentials.js';
import { identityFromSan } from './identity.js';
import { transferEnded } from './events.js';
import { FrameReader } from './wire.js';

/** A peer's transfer listener, and the node and pod its certificate must name. */
export interface Peer {
  host: string;
  port: number;
  node: string;
  pod: { namespace: string; name: string; uid: string };
}

/** The claim a read is for (the server checks it is this node's and names the source). */
export interface Claim {
  namespace: string;
  name: string;
}

const label = (p: Peer) => `node ${p.node} (${p.host}:${p.port})`;
const reasonOf = (res: IncomingMessage) => {
  const r = res.headers['x-vpool-reason'];
  try {
    return typeof r === 'string' ? decodeURIComponent(r) : '';
  } catch {
    return '';
  }
};

/** What CreateVolume asks of the transfer: where a source is, and its bytes. */
export type SourceFetcher = Pick<TransferClient, 'locate' | 'fetch'>;

/**
 * Reads volumes and snapshots from the node that holds them, with this node's certificate (mutual
 * TLS): the node is the one the cluster says holds the claim's source, and the peer must present a
 * certificate of a trusted CA naming that node and its plugin pod, or nothing is asked of it.
 */
export class TransferClient {
  private readonly timeoutMs: number;
  private readonly stallMs: number;

  constructor(
    private readonly credentials: TransferCredentials,
    /** The running peers; `fresh`: listed now, not from a cache (a peer's pod was replaced). */
    private readonly peers: (fresh?: boolean) => Promise<Peer[]> | Peer[],
    /** The node holding kind/id for this claim, from the cluster (throws when it does not say). */
    private readonly holderOf: (kind: TransferKind, id: string, claim: Claim) => Promise<string>,
    /** timeoutMs: for an answer; stallMs: for the next byte of a stream (a cut link sends no reset). */
    o: { timeoutMs?: number; stallMs?: number } = {},
  ) {
    this.timeoutMs = o.timeoutMs ?? 10_000;
    this.stallMs = o.stallMs ?? 60_000;
  }

  /** A request; a GET asks to upgrade to the frame stream, and its answer then comes with the bare socket. */
  private request(peer: Peer, method: 'HEAD' | 'GET', kind: TransferKind, id: string, claim: Claim): Promise<{ res: IncomingMessage; socket?: Socket; head?: Buffer }> {
    const m = this.credentials.material;
    if (!m) return Promise.reject(unavailable('this node has no transfer certificate yet (its certificate request is not answered)'));
    return new Promise((resolve, reject) => {
      const req = https.request({
        host: peer.host,
        port: peer.port,
        method,
        path: `/v1/${kind === 'volume' ? 'volumes' : 'snapshots'}/${encodeURIComponent(id)}?claim=${encodeURIComponent(`${claim.namespace}/${claim.name}`)}`,
        headers: method === 'GET' ? { connection: 'Upgrade', upgrade: UPGRADE } : {},
        ca: m.trust,
        cert: m.cert,
        key: m.key,
        // The peer is the node it was meant to be: its certificate names that node and its plugin pod.
        checkServerIdentity: (_host: string, cert: PeerCertificate) => {
          const who = identityFromSan(cert.subjectaltname);
          if (who?.node === peer.node && who.pod.uid === peer.pod.uid) return undefined;
          return new Error(`the transfer peer at ${peer.host}:${peer.port} is ${who ? `node ${who.node} (pod ${who.pod.name})` : 'no node'}, not node ${peer.node} (pod ${peer.pod.name})`);
        },
        minVersion: 'TLSv1.3',
        agent: false,
        timeout: this.timeoutMs,
        signal: callSignal(),
      });
      req.once('response', (res: IncomingMessage) => resolve({ res }));
      req.once('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
        // From here the stream's own bound: no byte for stallMs (a cut link, a peer frozen) ends it.
        socket.setTimeout(this.stallMs, () => socket.destroy(new Error(`no data for ${this.stallMs / 1000} s`)));
        resolve({ res, socket, head });
      });
      req.once('timeout', () => req.destroy(new Error(`no answer within ${this.timeoutMs / 1000} s`)));
      req.once('error', reject);
      req.end();
    });
  }

  /** A refusal or failure as the caller's error: a peer's refusal is PERMISSION_DENIED, the rest retryable. */
  private answerError(peer: Peer, res: IncomingMessage, kind: TransferKind, id: string): DriverError {
    const reason = reasonOf(res);
    if (res.statusCode === 403) return denied(`${label(peer)} refused to send ${kind} ${id}: ${reason || 'not authorized'}`);
    return unavailable(`${label(peer)} answered ${res.statusCode} for ${kind} ${id}${reason ? `: ${reason}` : ''}`);
  }

  /**
   * The peer holding a volume or snapshot for this claim, and its size: the node the cluster names
   * as the holder, asked alone. Null when that node says it has no such source.
   */
  async locate(kind: TransferKind, id: string, claim: Claim): Promise<{ peer: Peer; size: number } | null> {
    const holder = await this.holderOf(kind, id, claim);
    const ask = async (fresh: boolean) => {
      const peer = (await this.peers(fresh)).find((p) => p.node === holder);
      if (!peer) throw unavailable(`${kind} ${id} is on node ${holder}, which has no running plugin with a transfer listener`);
      return { peer, answer: await this.request(peer, 'HEAD', kind, id, claim).catch((err: unknown) => err as Error) };
    };
    let { peer, answer } = await ask(false);
    // A failure may be a listing older than the peer's pod (restarted: a new pod, a new address or UID): list again once.
    if (answer instanceof Error && !(answer instanceof DriverError)) {
      const again = await ask(true);
      if (again.peer.pod.uid !== peer.pod.uid || again.peer.host !== peer.host) ({ peer, answer } = again);
    }
    if (answer instanceof Error) {
      log.warn('a transfer peer did not answer', { peer: label(peer), err: String(answer) });
      throw answer instanceof DriverError ? answer : unavailable(`${label(peer)} did not answer: ${String(answer)}`);
    }
    const { res } = answer;
    res.resume();
    if (res.statusCode === 404) return null;
    if (res.statusCode !== 200) throw this.answerError(peer, res, kind, id);
    const size = Number(res.headers['x-vpool-size']);
    if (!(Number.isSafeInteger(size) && size > 0)) throw unavailable(`${label(peer)} gave no size for ${kind} ${id}`);
    return { peer, size };
  }

  /**
   * Streams a volume or snapshot from a peer into `write` (offset, data), in order. Resolves once
   * the end-to-end checksum matched; anything less (a cut, a bad frame, a wrong digest) rejects,
   * and the caller throws away what was written.
   */
  async fetch(peer: Peer, kind: TransferKind, id: string, claim: Claim, size: number, write: (offset: number, data: Buffer) => Promise<void>, alloc?: (n: number) => Buffer): Promise<{ bytes: number; seconds: number }> {
    const started = performance.now();
    const { res, socket, head } = await this.request(peer, 'GET', kind, id, claim).catch((err: unknown) => {
      throw err instanceof DriverError ? err : unavailable(`transfer peer ${label(peer)}: ${String(err)}`);
    });
    if (!socket) {
      res.resume();
      throw this.answerError(peer, res, kind, id);
    }
    if (Number(res.headers['x-vpool-size']) !== size) {
      socket.destroy();
      throw unavailable(`${kind} ${id} on ${label(peer)} is ${String(res.headers['x-vpool-size'])} bytes now, not ${size}`);
    }
    const reader = new FrameReader(size, write, alloc);
    let lastProgress = started;
    const ended = (ok: boolean) => transferEnded({ direction: 'received', bytes: reader.bytes, seconds: (performance.now() - started) / 1000, ok });
    // The call's cancellation reaches the stream too (the request's signal covered only the answer).
    const signal = callSignal();
    const onAbort = () => socket.destroy(new Error('the call was cancelled'));
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      if (head && head.length > 0) await reader.push(head);
      for await (const chunk of socket) {
        await reader.push(chunk as Buffer);
        if (performance.now() - lastProgress > 10_000) {
          lastProgress = performance.now();
          log.info('receiving a volume from a peer: progress', { kind, id, peer: label(peer), bytes: reader.bytes, of: size, seconds: Math.round((lastProgress - started) / 1000) });
        }
      }
    } catch (err) {
      socket.destroy();
      ended(false);
      throw unavailable(`the transfer of ${kind} ${id} from ${label(peer)} broke off: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    ended(reader.complete);
    if (!reader.complete) throw unavailable(`the transfer of ${kind} ${id} from ${label(peer)} ended before its end (${reader.bytes} bytes arrived)`);
    return { bytes: reader.bytes, seconds: (performance.now() - started) / 1000 };
  }
}
