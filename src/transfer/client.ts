import https from 'node:https';
import { callSignal } from '../call-context.js';
import { denied, DriverError, errorMessage, unavailable, type ErrorKind } from '../errors.js';
import { log } from '../log.js';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { guardStream, seconds } from './progress.js';
import { ERROR_KIND, ERROR_MESSAGE, UPGRADE, type TransferKind } from './server.js';
import type { TransferCredentials } from './credentials.js';
import { expectPeer } from './identity.js';
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

/** What CreateVolume asks of the transfer: where a source is, and its bytes. */
export type SourceFetcher = Pick<TransferClient, 'locate' | 'fetch'>;

const label = (p: Peer) => `node ${p.node} (${p.host}:${p.port})`;

/** A refusal's reason as the peer encoded it; a malformed one is shown as it came, not thrown. */
function peerMessage(h: string | string[] | undefined): string {
  const raw = String(h ?? '');
  try {
    return decodeURIComponent(raw);
  } catch {
    return raw;
  }
}

/**
 * Reads volumes and snapshots from the node that holds them, with this node's certificate (mutual
 * TLS): the node is the one the cluster says holds the claim's source, and the peer must present a
 * certificate of a trusted CA naming that node and its plugin pod, or nothing is asked of it.
 */
export class TransferClient {
  private readonly timeoutMs: number;
  private readonly stallMs: number;
  private readonly deadlineMs: number;

  constructor(
    private readonly credentials: TransferCredentials,
    /** The running peers; `fresh`: listed now, not from a cache (a peer's pod was replaced). */
    private readonly peers: (fresh?: boolean) => Promise<Peer[]> | Peer[],
    /** The node holding kind/id for this claim, from the cluster (throws when it does not say). */
    private readonly holderOf: (kind: TransferKind, id: string, claim: Claim) => Promise<string>,
    /**
     * timeoutMs: for the answer to a HEAD; stallMs: the stall window (progress.ts), which also bounds
     * the wait for a GET's answer between the sender's 102s; deadlineMs: the whole of one fetch.
     */
    o: { timeoutMs?: number; stallMs?: number; deadlineMs?: number } = {},
  ) {
    this.timeoutMs = o.timeoutMs ?? 10_000;
    this.stallMs = o.stallMs ?? 60_000;
    this.deadlineMs = o.deadlineMs ?? 6 * 3600_000;
  }

  /** A request; a GET asks to upgrade to the frame stream, and its answer then comes with the bare socket. */
  private request(peer: Peer, method: 'HEAD' | 'GET', kind: TransferKind, id: string, claim: Claim, signal = callSignal()): Promise<{ res: IncomingMessage; socket?: Socket; head?: Buffer }> {
    const m = this.credentials.material;
    if (!m) return Promise.reject(unavailable('this node has no transfer certificate yet (its certificate request is not answered)'));
    // A GET's answer may take as long as the sender's lock wait and copy: it says 102 within each
    // stall window meanwhile, and any byte resets this idle timeout (none with the stall check off: the deadline bounds it).
    const timeoutMs = method === 'GET' ? this.stallMs : this.timeoutMs;
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
        checkServerIdentity: expectPeer(peer, 'transfer peer'),
        minVersion: 'TLSv1.3',
        agent: false,
        timeout: timeoutMs,
        signal,
      });
      req.once('response', (res: IncomingMessage) => resolve({ res }));
      req.once('upgrade', (res: IncomingMessage, socket: Socket, head: Buffer) => {
        // From here the stream's own bounds (fetch's guard), not an idle timer any byte resets.
        socket.setTimeout(0);
        resolve({ res, socket, head });
      });
      req.once('timeout', () => req.destroy(new Error(`no answer within ${seconds(timeoutMs)}`)));
      req.once('error', reject);
      req.end();
    });
  }

  /** A refusal of a HEAD as the caller's error: PERMISSION_DENIED for a refused read, the rest retryable. */
  private answerError(peer: Peer, res: IncomingMessage, kind: TransferKind, id: string): DriverError {
    const reason = peerMessage(res.headers[ERROR_MESSAGE]);
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
   * the end-to-end checksum matched; anything less (a cut, a bad frame, a wrong digest, a stall, the
   * deadline) rejects, and the caller throws away what was written. A peer at its limit of sends is
   * asked again after a jittered wait; a refusal that names a kind the retry cannot change (no room
   * for the sender's copy, a state that forbids it) is that kind here; a DriverError thrown by `write`
   * (this node's own disk) comes out as it is.
   */
  async fetch(peer: Peer, kind: TransferKind, id: string, claim: Claim, size: number, write: (offset: number, data: Buffer) => Promise<void>, alloc?: (n: number) => Buffer): Promise<{ bytes: number; seconds: number }> {
    const started = performance.now();
    const bounds = new AbortController();
    const guard = guardStream({ stallMs: this.stallMs, deadlineMs: this.deadlineMs }, (err) => bounds.abort(err));
    const call = callSignal();
    const signal = call ? AbortSignal.any([bounds.signal, call]) : bounds.signal;
    const why = () => errorMessage(signal.reason instanceof Error ? signal.reason : new Error('the call was cancelled'));
    try {
      const { res, socket, head } = await this.answered(peer, kind, id, claim, signal, why);
      if (Number(res.headers['x-vpool-size']) !== size) {
        socket.destroy();
        throw unavailable(`${kind} ${id} on ${label(peer)} is ${String(res.headers['x-vpool-size'])} bytes now, not ${size}`);
      }
      return await this.receive(peer, kind, id, size, { socket, head, started, guard, signal, why }, write, alloc);
    } finally {
      guard.stop();
    }
  }

  /** The GET's 101, after as many jittered waits as the peer asks for (503) within the deadline. */
  private async answered(peer: Peer, kind: TransferKind, id: string, claim: Claim, signal: AbortSignal, why: () => string): Promise<{ res: IncomingMessage; socket: Socket; head?: Buffer }> {
    for (let attempt = 0; ; attempt++) {
      const { res, socket, head } = await this.request(peer, 'GET', kind, id, claim, signal).catch((err: unknown) => {
        throw err instanceof DriverError ? err : unavailable(`transfer peer ${label(peer)}: ${signal.aborted ? why() : String(err)}`);
      });
      if (socket) return { res, socket, head };
      res.resume();
      const refusedKind = res.headers[ERROR_KIND];
      const message = peerMessage(res.headers[ERROR_MESSAGE]);
      if (res.statusCode === 503) {
        // Up to 2^attempt times what the peer asked for, at most 15 s, jittered: waiting receivers do not come back in step.
        const asked = Math.max(1, Number(res.headers['retry-after']) || 1) * 1000;
        const wait = Math.min(15_000, asked * 2 ** Math.min(attempt, 4)) * (0.5 + Math.random());
        log.info('the transfer peer is at its limit of sends; asking again', { kind, id, peer: label(peer), attempt: attempt + 1, seconds: Number((wait / 1000).toFixed(1)), ...(message ? { reason: message } : {}) });
        await new Promise<void>((resolve, reject) => {
          const onAbort = () => {
            clearTimeout(timer);
            reject(unavailable(`transfer peer ${label(peer)} stayed at its limit of sends: ${why()}`));
          };
          const timer = setTimeout(() => {
            signal.removeEventListener('abort', onAbort);
            resolve();
          }, wait);
          if (signal.aborted) onAbort();
          else signal.addEventListener('abort', onAbort, { once: true });
        });
        continue;
      }
      if (res.statusCode === 403) throw denied(`${label(peer)} refused to send ${kind} ${id}: ${message || 'not authorized'}`);
      if (refusedKind === 'exhausted' || refusedKind === 'precondition') throw new DriverError(refusedKind as ErrorKind, `transfer peer ${label(peer)} refused to send ${kind} ${id}: ${message}`);
      throw unavailable(`transfer peer ${label(peer)} answered ${res.statusCode} for ${kind} ${id}${message ? `: ${message}` : ''}`);
    }
  }

  private async receive(
    peer: Peer,
    kind: TransferKind,
    id: string,
    size: number,
    s: { socket: Socket; head?: Buffer; started: number; guard: ReturnType<typeof guardStream>; signal: AbortSignal; why: () => string },
    write: (offset: number, data: Buffer) => Promise<void>,
    alloc?: (n: number) => Buffer,
  ): Promise<{ bytes: number; seconds: number }> {
    const { socket, head, started } = s;
    const reader = new FrameReader(size, write, alloc);
    let received = 0;
    let lastProgress = started;
    const ended = (ok: boolean) => transferEnded({ direction: 'received', bytes: reader.bytes, seconds: (performance.now() - started) / 1000, ok });
    const onAbort = () => socket.destroy(new Error(s.why()));
    if (s.signal.aborted) onAbort();
    else s.signal.addEventListener('abort', onAbort, { once: true });
    s.guard.watch(() => received);
    try {
      if (head && head.length > 0) await reader.push(head);
      for await (const chunk of socket) {
        received += (chunk as Buffer).length;
        await reader.push(chunk as Buffer);
        if (performance.now() - lastProgress > 10_000) {
          lastProgress = performance.now();
          log.info('receiving a volume from a peer: progress', { kind, id, peer: label(peer), bytes: reader.bytes, of: size, seconds: Math.round((lastProgress - started) / 1000) });
        }
      }
    } catch (err) {
      socket.destroy();
      ended(false);
      // This node's own fault (its disk, written through `write`) keeps its kind: retrying the network would not help.
      if (err instanceof DriverError) throw err;
      throw unavailable(`the transfer of ${kind} ${id} from ${label(peer)} broke off: ${s.signal.aborted ? s.why() : errorMessage(err)}`);
    } finally {
      s.signal.removeEventListener('abort', onAbort);
    }
    ended(reader.complete);
    if (!reader.complete) throw unavailable(`the transfer of ${kind} ${id} from ${label(peer)} ended before its end (${reader.bytes} bytes arrived)`);
    return { bytes: reader.bytes, seconds: (performance.now() - started) / 1000 };
  }
}
