import { createHash } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { runForCall } from '../call-context.js';
import { DriverError, errorMessage } from '../errors.js';
import { isId } from '../ids.js';
import { log } from '../log.js';
import { sendsChanged, sendTurnedAway, transferEnded } from './events.js';
import { dataChunks } from './extents.js';
import { guardStream } from './progress.js';
import type { TransferCredentials } from './credentials.js';
import { describe as describePeer, identityFromSan, type PeerIdentity, type RouterIdentity } from './identity.js';
import { answerCommand, commandRoute, type CommandName, type LocalCommands } from './commands.js';
import { endFrame, frame } from './wire.js';
import { metadataRoute, serveMetadata, type LocalMetadata, type MetadataRequest } from './metadata.js';

export type TransferKind = 'volume' | 'snapshot';

/** A volume or snapshot opened for reading, held (not deleted, not changing) until released. */
export interface OpenedSource {
  path: string;
  size: number;
  /** A regular file (its holes found by SEEK_HOLE) rather than a block device. */
  file: boolean;
  release(): Promise<void>;
}

/** What this node lets peers read: its volumes and snapshots by ID, nothing else. */
export interface TransferSource {
  /** The size of a volume or snapshot this node holds, or null. */
  size(kind: TransferKind, id: string): Promise<number | null>;
  open(kind: TransferKind, id: string): Promise<OpenedSource | null>;
}

/** A read as asked: by whom (the certificate's identity), from where, what, and for which claim. */
export interface ReadRequest {
  who: PeerIdentity;
  address: string;
  kind: TransferKind;
  id: string;
  claim: { namespace: string; name: string } | null;
}

export interface TransferServerOptions {
  host: string;
  port: number;
  credentials: TransferCredentials;
  /** Why this read is refused, or null when it may go ahead (throws when that cannot be decided now). */
  authorize(r: ReadRequest): Promise<string | null>;
  source: TransferSource;
  /** Bytes per second each transfer may send; 0: no limit. */
  bytesPerSecond?: number;
  /** The stall window (progress.ts): less than 1 MiB taken by the receiver in it ends the send; default 60 s. */
  stallMs?: number;
  /** An overall bound on one send, from its request to its end, however it progresses; default 6 h. */
  deadlineMs?: number;
  /** Sends at once; a GET past it is answered 503 with Retry-After before anything is opened. Default 4. */
  maxSends?: number;
  onSent?: (bytes: number, seconds: number) => void;
  /** Snapshot metadata this node answers peers from (metadata.ts); absent: every such request is 404. */
  metadata?: LocalMetadata;
  /** Why a peer may not ask for snapshot metadata (null: it may); throws when that cannot be decided now. */
  authorizePeer?(who: PeerIdentity, address: string): Promise<string | null>;
  /** Snapshot commands this node takes from the snapshot router (commands.ts); absent: every one is 404. */
  commands?: LocalCommands;
  /** Which of them (--transfer-router-takes). */
  allowedCommands?: ReadonlySet<CommandName>;
  /** Why a router certificate may not send commands (null: it may); throws when that cannot be decided now. */
  authorizeRouter?(who: RouterIdentity, address: string): Promise<string | null>;
}

/** What the socket may hold before a write waits: several chunks, so it never runs dry while the next is read. */
const SEND_BUFFER = 4 * 1024 * 1024;

const ROUTE = /^\/v1\/(volumes|snapshots)\/([^/]+)$/;
/** The protocol a GET switches to: frames (wire.ts) straight on the TLS socket, no HTTP chunking to parse. */
export const UPGRADE = 'vpool-transfer/1';
/** The header a refusal names its DriverError kind in, and the one carrying its message (URI-encoded). */
export const ERROR_KIND = 'x-vpool-error-kind';
export const ERROR_MESSAGE = 'x-vpool-error';
const NAME = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** Reads being authorized at once (each a few API reads); past it a request is answered 503 and retried. */
const MAX_AUTHORIZING = 32;

/** The answer to a source that could not be opened: a kind the client surfaces as its own, or retries. */
function refusal(err: unknown): { status: string; headers: Record<string, string> } {
  const kind = err instanceof DriverError ? err.kind : 'internal';
  const headers = { [ERROR_KIND]: kind, [ERROR_MESSAGE]: encodeURIComponent(errorMessage(err).slice(0, 1000)) };
  switch (kind) {
    case 'exhausted':
      return { status: '507 Insufficient Storage', headers };
    case 'precondition':
      return { status: '412 Precondition Failed', headers };
    case 'busy': // the source's lock stayed taken past its wait: as over the limit, the client comes back
      return { status: '503 Service Unavailable', headers: { ...headers, 'retry-after': '1' } };
    default:
      return { status: '500 Internal Server Error', headers };
  }
}

/** What a request asks for: `/v1/{volumes|snapshots}/<id>?claim=<namespace>/<name>`; null when malformed. */
function route(req: IncomingMessage): { kind: TransferKind; id: string; claim: ReadRequest['claim'] } | null {
  let url: URL;
  try {
    url = new URL(req.url ?? '', 'https://peer');
  } catch {
    return null;
  }
  const m = ROUTE.exec(url.pathname);
  if (!m || [...url.searchParams.keys()].some((k) => k !== 'claim')) return null;
  const kind: TransferKind = m[1] === 'volumes' ? 'volume' : 'snapshot';
  let id: string;
  try {
    id = decodeURIComponent(m[2]);
  } catch {
    return null;
  }
  if (!isId(kind === 'volume' ? 'vol' : 'snap', id)) return null;
  const c = url.searchParams.get('claim');
  if (c === null) return { kind, id, claim: null };
  const [namespace, name, ...rest] = c.split('/');
  return !rest.length && NAME.test(namespace ?? '') && NAME.test(name ?? '') ? { kind, id, claim: { namespace, name } } : null;
}

/** The peer's identity from its certificate (verified against the trusted CAs by the handshake). */
const identityOf = (socket: Socket): PeerIdentity | null => identityFromSan((socket as TLSSocket).getPeerCertificate?.()?.subjectaltname);
const peerOf = (socket: Socket) => {
  const id = identityOf(socket);
  return id ? describePeer(id) : `an unidentified peer at ${socket.remoteAddress}`;
};

/**
 * The transfer listener: HTTPS with mutual TLS (TLS 1.3), so only a peer holding a certificate of
 * the driver's CA gets past the handshake, and it may only read a volume or a snapshot by ID:
 * HEAD says whether this node has it (and its size); a GET that upgrades to vpool-transfer/1
 * gets its data ranges as frames (wire.ts) on the bare TLS stream.
 */
export async function startTransferServer(o: TransferServerOptions): Promise<{ port: number; close(): Promise<void> }> {
  const streams = new Set<Socket>();
  const maxSends = o.maxSends ?? 4;
  const bounds = { stallMs: o.stallMs ?? 60_000, deadlineMs: o.deadlineMs ?? 6 * 3600_000 };
  let sends = 0;
  const material = await o.credentials.ready();
  const tlsOf = (m: typeof material) => ({ ca: m.trust, cert: m.cert, key: m.key });
  const server = https.createServer({ ...tlsOf(material), requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3', highWaterMark: SEND_BUFFER }, (req, res) => {
    const c = commandRoute(req.method, req.url);
    if (c) {
      if (c === 'bad') return void res.writeHead(400).end();
      return void answerCommand(req, c, res, {
        commands: o.commands,
        allowed: o.allowedCommands,
        authorizeRouter: o.authorizeRouter,
        // The same bound as every other authorization: a flood is turned away before it costs the node's API share.
        admit: () => (authorizing < MAX_AUTHORIZING ? (authorizing++, () => void authorizing--) : null),
        peer: () => peerOf(req.socket),
      });
    }
    const m = metadataRoute(req.method, req.url);
    if (m) {
      if (m === 'bad') return void res.writeHead(400).end();
      return void answerMetadata(req.socket, m, res);
    }
    const r = route(req);
    if (!r || req.method !== 'HEAD') {
      // A GET must ask for the upgrade (it arrives as 'upgrade', not here).
      res.writeHead(r && req.method === 'GET' ? 426 : 400, r && req.method === 'GET' ? { upgrade: UPGRADE, connection: 'Upgrade' } : {}).end();
      return;
    }
    void check(req.socket, r)
      .then(async (refused) => {
        if (refused) return void res.writeHead(refused.status, { [ERROR_MESSAGE]: encodeURIComponent(refused.reason) }).end();
        const size = await o.source.size(r.kind, r.id);
        res.writeHead(size === null ? 404 : 200, size === null ? {} : { 'x-vpool-size': String(size) }).end();
      })
      .catch((err: unknown) => {
        log.error('a transfer peer asked for a size that could not be read', { kind: r.kind, id: r.id, peer: peerOf(req.socket), err: String(err) });
        res.writeHead(500).end();
      });
  });
  // A renewed certificate or a rotated CA is taken by the next handshake: nothing restarts.
  o.credentials.onChange((m) => server.setSecureContext({ ...tlsOf(m), minVersion: 'TLSv1.3' }));
  /** Who asks, and whether they may: null to go ahead, else the HTTP status and the reason (logged with the peer's node, pod and claim). */
  let authorizing = 0;
  const check = async (socket: Socket, r: NonNullable<ReturnType<typeof route>>): Promise<{ status: number; reason: string } | null> => {
    const who = identityOf(socket);
    // Each check reads the API several times: a flood of requests is turned away before it costs the node's API share.
    if (authorizing >= MAX_AUTHORIZING) return { status: 503, reason: `${MAX_AUTHORIZING} reads are being authorized already` };
    const claim = r.claim ? `${r.claim.namespace}/${r.claim.name}` : undefined;
    if (!who) {
      log.warn('refused a transfer read: the certificate names no node', { kind: r.kind, id: r.id, remote: socket.remoteAddress, claim });
      return { status: 403, reason: 'the client certificate names no node' };
    }
    let reason: string | null;
    authorizing++;
    try {
      reason = await o.authorize({ who, address: socket.remoteAddress ?? '', kind: r.kind, id: r.id, claim: r.claim });
    } catch (err) {
      log.warn('a transfer read could not be authorized now', { kind: r.kind, id: r.id, node: who.node, pod: who.pod.name, claim, err: String(err) });
      return { status: 503, reason: `the read could not be authorized now: ${errorMessage(err)}` };
    } finally {
      authorizing--;
    }
    if (reason === null) return null;
    log.warn('refused a transfer read', { kind: r.kind, id: r.id, node: who.node, pod: `${who.pod.namespace}/${who.pod.name}`, remote: socket.remoteAddress, claim, reason });
    return { status: 403, reason };
  };
  /** A peer's snapshot metadata request: every live node plugin of the driver may ask (only ranges cross, never data). */
  const answerMetadata = async (socket: Socket, m: MetadataRequest, res: import('node:http').ServerResponse): Promise<void> => {
    const who = identityOf(socket);
    if (!who) return void res.writeHead(403, { [ERROR_MESSAGE]: encodeURIComponent('the client certificate names no node') }).end();
    if (!o.metadata || !o.authorizePeer) {
      log.warn('a peer asked for snapshot metadata, which this listener does not serve', { ...m, node: who.node });
      return void res.writeHead(404).end();
    }
    if (authorizing >= MAX_AUTHORIZING) return void res.writeHead(503, { 'retry-after': '2' }).end();
    let reason: string | null;
    authorizing++;
    try {
      reason = await o.authorizePeer(who, socket.remoteAddress ?? '');
    } catch (err) {
      log.warn('a snapshot metadata request could not be authorized now', { ...m, node: who.node, err: String(err) });
      return void res.writeHead(503, { 'retry-after': '2', [ERROR_MESSAGE]: encodeURIComponent(errorMessage(err)) }).end();
    } finally {
      authorizing--;
    }
    if (reason !== null) {
      log.warn('refused a snapshot metadata request', { ...m, node: who.node, pod: `${who.pod.namespace}/${who.pod.name}`, remote: socket.remoteAddress, reason });
      return void res.writeHead(403, { [ERROR_MESSAGE]: encodeURIComponent(reason) }).end();
    }
    try {
      await serveMetadata(m, res, o.metadata);
    } catch (err) {
      log.error('a snapshot metadata request failed', { ...m, node: who.node, err: String(err) });
      res.destroy();
    }
  };
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const r = route(req);
    const answer = (status: string, headers: Record<string, string> = {}) =>
      socket.end(`HTTP/1.1 ${status}\r\n${Object.entries(headers).map(([k, v]) => `${k}: ${v}\r\n`).join('')}connection: close\r\ncontent-length: 0\r\n\r\n`);
    if (head.length > 0) socket.unshift(head);
    if (!r || req.method !== 'GET' || String(req.headers.upgrade).toLowerCase() !== UPGRADE) return answer('400 Bad Request');
    const peer = peerOf(socket);
    const send = (): void => {
      if (socket.destroyed) return; // gone while its read was being authorized
      // Each send holds buffers, a read of the disk and (for a volume) a copy: past the limit the peer
      // is told to come back, before the source is even looked at.
      if (sends >= maxSends) {
        log.info('turned a send away: this node is at its limit of concurrent sends', { ...r, peer, sends, limit: maxSends });
        sendTurnedAway();
        return void answer('503 Service Unavailable', { 'retry-after': '1' });
      }
      sendsChanged(++sends);
      streams.add(socket);
      // Ends the opening (its lock wait, its copy) and the stream when the receiver goes or a bound passes.
      const gone = new AbortController();
      const guard = guardStream(bounds, (err) => socket.destroy(err));
      // Why the socket ended (a bound, a reset) is what the log should say, not the write that noticed.
      let why: Error | undefined;
      socket.on('error', (err) => (why ??= err));
      socket.once('close', () => {
        streams.delete(socket);
        gone.abort(new Error('the receiver went away'));
      });
      void serve(o, r.kind, r.id, socket, peer, answer, { gone: gone.signal, guard, sends, stallMs: bounds.stallMs })
        .catch((err: unknown) => {
          log.error('a transfer failed on the sending side', { ...r, peer, err: String(why ?? err) });
          socket.destroy();
        })
        .finally(() => {
          guard.stop();
          sendsChanged(--sends);
        });
    };
    // Authorized first (a refused read is not counted against the limit), then bounded.
    void check(socket, r).then(
      (refused) => (refused ? answer(`${refused.status} ${refused.status === 403 ? 'Forbidden' : 'Service Unavailable'}`, { [ERROR_MESSAGE]: encodeURIComponent(refused.reason), ...(refused.status === 503 ? { 'retry-after': '2' } : {}) }) : send()),
      (err: unknown) => {
        log.error('a transfer read could not be checked', { kind: r.kind, id: r.id, peer, err: String(err) });
        socket.destroy();
      },
    );
  });
  server.on('tlsClientError', (err, socket) => log.warn('refused a transfer peer', { remote: socket.remoteAddress, reason: err.message }));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.port, o.host, () => resolve());
  });
  log.info('transfer listener ready', { host: o.host, port: (server.address() as AddressInfo).port });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      // Upgraded sockets are no longer the HTTP server's: they are closed here.
      for (const s of streams) s.destroy();
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

interface SendContext {
  /** Aborted when the receiver goes or a bound passes. */
  gone: AbortSignal;
  guard: ReturnType<typeof guardStream>;
  /** Sends at this node, this one included. */
  sends: number;
  stallMs: number;
}

async function serve(o: TransferServerOptions, kind: TransferKind, id: string, socket: Socket, peer: string, answer: (status: string, headers?: Record<string, string>) => void, c: SendContext): Promise<void> {
  // Opening may wait for the source's lock and copy a volume (minutes for a large one on a filesystem
  // without reflink): an interim 102 within each stall window tells the receiver this node is at it,
  // so its wait for the answer is bounded by the stall window and the deadline, not by a guess at how
  // long a copy takes. The opening runs under the receiver's presence: gone, it stops (a command
  // killed, a lock wait ended), as a CSI call's work stops when its call is cancelled.
  // At least every second, whatever this node's own window, so a receiver with a shorter one is not left waiting.
  const working = setInterval(() => socket.write('HTTP/1.1 102 Processing\r\n\r\n'), Math.max(100, Math.min(1000, (c.stallMs || 3000) / 3)));
  const asked = performance.now();
  let src: OpenedSource | null;
  try {
    src = await runForCall(c.gone, () => o.source.open(kind, id));
  } catch (err) {
    if (c.gone.aborted) {
      log.warn('stopped opening a source for a send: the receiver went away or a bound passed', { kind, id, peer, reason: errorMessage(c.gone.reason), err: errorMessage(err) });
      return;
    }
    const { status, headers } = refusal(err);
    log.warn('refused a send: the source could not be opened', { kind, id, peer, status, err: errorMessage(err) });
    answer(status, headers);
    return;
  } finally {
    clearInterval(working);
  }
  if (!src) {
    answer('404 Not Found');
    return;
  }
  const started = performance.now();
  let sent = 0;
  let ok = false;
  let lastProgress = started;
  try {
    if (c.gone.aborted) throw c.gone.reason;
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: ${UPGRADE}\r\nconnection: Upgrade\r\nx-vpool-size: ${src.size}\r\n\r\n`);
    // What the receiver took: bytes past this process's buffers. Waiting: bytes queued for it.
    c.guard.watch(() => socket.bytesWritten - socket.writableLength, () => socket.writableLength > 0);
    log.info('sending a volume to a peer', { kind, id, peer, size: src.size, sends: c.sends, openedInSeconds: Number(((started - asked) / 1000).toFixed(3)) });
    const hash = createHash('sha256');
    // Backpressure: past the socket's buffer, wait for it to drain (or for the peer to go); the listeners go with the wait.
    const write = async (bufs: Buffer[], written?: () => void) => {
      if (socket.destroyed) throw new Error('the peer went away');
      socket.cork();
      let more = true;
      for (const [i, b] of bufs.entries()) more = i === bufs.length - 1 && written ? socket.write(b, () => written()) : socket.write(b);
      socket.uncork();
      if (more) return;
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error) => {
          socket.off('drain', onDrain);
          socket.off('close', onClose);
          if (err) reject(err);
          else resolve();
        };
        const onDrain = () => done();
        const onClose = () => done(new Error('the peer went away'));
        socket.on('drain', onDrain);
        socket.on('close', onClose);
      });
    };
    for await (const chunk of dataChunks(src.path, src.size, { file: src.file })) {
      const h = frame(chunk);
      hash.update(h);
      hash.update(chunk.data);
      await write([h, chunk.data], chunk.written);
      sent += chunk.data.length;
      if (performance.now() - lastProgress > 10_000) {
        lastProgress = performance.now();
        log.info('sending a volume to a peer: progress', { kind, id, peer, bytes: sent, seconds: Math.round((lastProgress - started) / 1000) });
      }
      if (o.bytesPerSecond) {
        const due = (sent / o.bytesPerSecond) * 1000 - (performance.now() - started);
        if (due > 0) await new Promise((r) => setTimeout(r, due));
      }
    }
    await write([endFrame(hash.digest())]);
    // The end's callback also runs when the socket is destroyed first (a stall, the deadline): that is no success.
    await new Promise<void>((resolve, reject) => socket.end((err?: Error | null) => (err ? reject(err) : resolve())));
    const seconds = (performance.now() - started) / 1000;
    o.onSent?.(sent, seconds);
    ok = true;
    log.info('sent a volume to a peer', { kind, id, peer, bytes: sent, seconds: Number(seconds.toFixed(3)) });
  } finally {
    transferEnded({ direction: 'sent', bytes: sent, seconds: (performance.now() - started) / 1000, ok });
    await src.release();
  }
}
