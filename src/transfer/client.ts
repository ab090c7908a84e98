import https from 'node:https';
import { callSignal } from '../call-context.js';
import { DriverError, unavailable } from '../errors.js';
import { log } from '../log.js';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { REFUSAL_KIND, REFUSAL_MESSAGE, UPGRADE, type TransferKind } from './server.js';
import { TRANSFER_SERVER_NAME, type TransferTls } from './tls.js';
import { transferEnded } from './events.js';
import { FrameReader } from './wire.js';

/** A peer's transfer listener: host (a name or an address) and port. */
export interface Peer {
  host: string;
  port: number;
}

export function parsePeer(s: string): Peer {
  const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || !(port > 0 && port < 65536)) throw new Error(`a transfer peer is host:port, not ${JSON.stringify(s)}`);
  return { host: m[1].replace(/^\[|\]$/g, ''), port };
}

const label = (p: Peer) => `${p.host}:${p.port}`;

/**
 * Reads volumes and snapshots from peers' transfer listeners, with this node's certificate
 * (mutual TLS); a peer must present a certificate of the same CA, for the transfer name.
 */
export class TransferClient {
  private readonly timeoutMs: number;
  private readonly stallMs: number;

  constructor(
    private readonly tls: TransferTls,
    private readonly peers: () => Promise<Peer[]> | Peer[],
    /** timeoutMs: for an answer; stallMs: for the next byte of a stream (a cut link sends no reset). */
    o: { timeoutMs?: number; stallMs?: number } = {},
  ) {
    this.timeoutMs = o.timeoutMs ?? 10_000;
    this.stallMs = o.stallMs ?? 60_000;
  }

  /** A request; a GET asks to upgrade to the frame stream, and its answer then comes with the bare socket. */
  private request(peer: Peer, method: 'HEAD' | 'GET', kind: TransferKind, id: string): Promise<{ res: IncomingMessage; socket?: Socket; head?: Buffer }> {
    return new Promise((resolve, reject) => {
      const req = https.request({
        host: peer.host,
        port: peer.port,
        method,
        path: `/v1/${kind === 'volume' ? 'volumes' : 'snapshots'}/${encodeURIComponent(id)}`,
        headers: method === 'GET' ? { connection: 'Upgrade', upgrade: UPGRADE } : {},
        ca: this.tls.ca,
        cert: this.tls.cert,
        key: this.tls.key,
        servername: TRANSFER_SERVER_NAME,
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

  /** The peer holding a volume or snapshot, and its size; null when no peer has it (or none answers). */
  async locate(kind: TransferKind, id: string): Promise<{ peer: Peer; size: number } | null> {
    const peers = await this.peers();
    const asks = peers.map(async (peer) => {
      const { res } = await this.request(peer, 'HEAD', kind, id);
      res.resume();
      if (res.statusCode !== 200) return null;
      const size = Number(res.headers['x-vpool-size']);
      return Number.isSafeInteger(size) && size > 0 ? { peer, size } : null;
    });
    const answers = await Promise.allSettled(asks);
    for (const [i, a] of answers.entries()) if (a.status === 'rejected') log.warn('a transfer peer did not answer', { peer: label(peers[i]), err: String(a.reason) });
    return answers.map((a) => (a.status === 'fulfilled' ? a.value : null)).find((a) => a !== null) ?? null;
  }

  /**
   * Streams a volume or snapshot from a peer into `write` (offset, data), in order. Resolves once
   * the end-to-end checksum matched; anything less (a cut, a bad frame, a wrong digest) rejects,
   * and the caller throws away what was written.
   */
  async fetch(peer: Peer, kind: TransferKind, id: string, size: number, write: (offset: number, data: Buffer) => Promise<void>, alloc?: (n: number) => Buffer): Promise<{ bytes: number; seconds: number }> {
    const started = performance.now();
    const { res, socket, head } = await this.request(peer, 'GET', kind, id).catch((err: unknown) => {
      throw err instanceof DriverError ? err : unavailable(`transfer peer ${label(peer)}: ${String(err)}`);
    });
    if (!socket) {
      res.resume();
      const refused = res.headers[REFUSAL_KIND];
      if (refused === 'precondition' || refused === 'exhausted') {
        throw new DriverError(refused, `transfer peer ${label(peer)} cannot send ${kind} ${id}: ${decodeURIComponent(String(res.headers[REFUSAL_MESSAGE] ?? ''))}`);
      }
      throw unavailable(`transfer peer ${label(peer)} answered ${res.statusCode} for ${kind} ${id}`);
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
