import https from 'node:https';
import { callSignal } from '../call-context.js';
import { DriverError, errorMessage, unavailable, type ErrorKind } from '../errors.js';
import { log } from '../log.js';
import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import { guardStream, seconds } from './progress.js';
import { ERROR_KIND, ERROR_MESSAGE, UPGRADE, type TransferKind } from './server.js';
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
 * Reads volumes and snapshots from peers' transfer listeners, with this node's certificate
 * (mutual TLS); a peer must present a certificate of the same CA, for the transfer name.
 */
export class TransferClient {
  private readonly timeoutMs: number;
  private readonly stallMs: number;
  private readonly deadlineMs: number;

  constructor(
    private readonly tls: TransferTls,
    private readonly peers: () => Promise<Peer[]> | Peer[],
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
  private request(peer: Peer, method: 'HEAD' | 'GET', kind: TransferKind, id: string, signal = callSignal()): Promise<{ res: IncomingMessage; socket?: Socket; head?: Buffer }> {
    // A GET's answer may take as long as the sender's lock wait and copy: it says 102 within each
    // stall window meanwhile, and any byte resets this idle timeout (none with the stall check off: the deadline bounds it).
    const timeoutMs = method === 'GET' ? this.stallMs : this.timeoutMs;
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
   * the end-to-end checksum matched; anything less (a cut, a bad frame, a wrong digest, a stall, the
   * deadline) rejects, and the caller throws away what was written. A peer at its limit of sends is
   * asked again after a jittered wait; a refusal that names a kind the retry cannot change (no room
   * for the sender's copy, a state that forbids it) is that kind here; a DriverError thrown by `write`
   * (this node's own disk) comes out as it is.
   */
  async fetch(peer: Peer, kind: TransferKind, id: string, size: number, write: (offset: number, data: Buffer) => Promise<void>, alloc?: (n: number) => Buffer): Promise<{ bytes: number; seconds: number }> {
    const started = performance.now();
    const bounds = new AbortController();
    const guard = guardStream({ stallMs: this.stallMs, deadlineMs: this.deadlineMs }, (err) => bounds.abort(err));
    const call = callSignal();
    const signal = call ? AbortSignal.any([bounds.signal, call]) : bounds.signal;
    const why = () => errorMessage(signal.reason instanceof Error ? signal.reason : new Error('the call was cancelled'));
    try {
      const { res, socket, head } = await this.answered(peer, kind, id, signal, why);
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
  private async answered(peer: Peer, kind: TransferKind, id: string, signal: AbortSignal, why: () => string): Promise<{ res: IncomingMessage; socket: Socket; head?: Buffer }> {
    for (let attempt = 0; ; attempt++) {
      const { res, socket, head } = await this.request(peer, 'GET', kind, id, signal).catch((err: unknown) => {
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
