import { createHash } from 'node:crypto';
import https from 'node:https';
import type { IncomingMessage } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
import { DriverError, type ErrorKind } from '../errors.js';
import { isId } from '../ids.js';
import { log } from '../log.js';
import { transferEnded } from './events.js';
import { dataChunks } from './extents.js';
import type { TransferTls } from './tls.js';
import { endFrame, frame } from './wire.js';

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

export interface TransferServerOptions {
  host: string;
  port: number;
  tls: TransferTls;
  source: TransferSource;
  /** Bytes per second each transfer may send; 0: no limit. */
  bytesPerSecond?: number;
  /** A stream that moves no byte this long is given up (and its source released); default 60 s. */
  stallMs?: number;
  onSent?: (bytes: number, seconds: number) => void;
}

/** What the socket may hold before a write waits: several chunks, so it never runs dry while the next is read. */
const SEND_BUFFER = 4 * 1024 * 1024;

const ROUTE = /^\/v1\/(volumes|snapshots)\/([^/?]+)$/;
/** The protocol a GET switches to: frames (wire.ts) straight on the TLS socket, no HTTP chunking to parse. */
export const UPGRADE = 'vpool-transfer/1';
/** Headers of a refusal to send: the driver's error kind and its message (URI-encoded). */
export const REFUSAL_KIND = 'x-vpool-refused';
export const REFUSAL_MESSAGE = 'x-vpool-reason';

function route(req: IncomingMessage): { kind: TransferKind; id: string } | null {
  const m = ROUTE.exec(req.url ?? '');
  if (!m) return null;
  const kind: TransferKind = m[1] === 'volumes' ? 'volume' : 'snapshot';
  let id: string;
  try {
    id = decodeURIComponent(m[2]);
  } catch {
    return null;
  }
  return isId(kind === 'volume' ? 'vol' : 'snap', id) ? { kind, id } : null;
}

const peerOf = (socket: Socket) => String((socket as TLSSocket).getPeerCertificate?.()?.subject?.CN ?? socket.remoteAddress);

/**
 * The transfer listener: HTTPS with mutual TLS (TLS 1.3), so only a peer holding a certificate of
 * the driver's CA gets past the handshake, and it may only read a volume or a snapshot by ID:
 * HEAD says whether this node has it (and its size); a GET that upgrades to vpool-transfer/1
 * gets its data ranges as frames (wire.ts) on the bare TLS stream.
 */
export async function startTransferServer(o: TransferServerOptions): Promise<{ port: number; close(): Promise<void> }> {
  const streams = new Set<Socket>();
  const server = https.createServer({ ca: o.tls.ca, cert: o.tls.cert, key: o.tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3', highWaterMark: SEND_BUFFER }, (req, res) => {
    const r = route(req);
    if (!r || req.method !== 'HEAD') {
      // A GET must ask for the upgrade (it arrives as 'upgrade', not here).
      res.writeHead(r && req.method === 'GET' ? 426 : 400, r && req.method === 'GET' ? { upgrade: UPGRADE, connection: 'Upgrade' } : {}).end();
      return;
    }
    void o.source.size(r.kind, r.id).then(
      (size) => res.writeHead(size === null ? 404 : 200, size === null ? {} : { 'x-vpool-size': String(size) }).end(),
      (err: unknown) => {
        log.error('a transfer peer asked for a size that could not be read', { ...r, peer: peerOf(req.socket), err: String(err) });
        res.writeHead(500).end();
      },
    );
  });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    const r = route(req);
    const answer = (status: string, headers = '') => socket.end(`HTTP/1.1 ${status}\r\nconnection: close\r\n${headers}content-length: 0\r\n\r\n`);
    if (head.length > 0) socket.unshift(head);
    if (!r || req.method !== 'GET' || String(req.headers.upgrade).toLowerCase() !== UPGRADE) return answer('400 Bad Request');
    streams.add(socket);
    socket.once('close', () => streams.delete(socket));
    // A receiver gone without a reset (a cut link) would hold the source's lock forever: no progress this long ends the stream.
    const stallMs = o.stallMs ?? 60_000;
    socket.setTimeout(stallMs, () => socket.destroy(new Error(`the receiver took nothing for ${stallMs / 1000} s`)));
    const peer = peerOf(socket);
    void serve(o, r.kind, r.id, socket, peer, answer).catch((err: unknown) => {
      log.error('a transfer failed on the sending side', { ...r, peer, err: String(err) });
      socket.destroy();
    });
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

/** Refusals the receiver passes on to its caller as they are (not a retryable UNAVAILABLE): the state of the source forbids reading it, or there is no room to. */
const PASSED_ON: ReadonlySet<ErrorKind> = new Set(['precondition', 'exhausted']);

async function serve(o: TransferServerOptions, kind: TransferKind, id: string, socket: Socket, peer: string, answer: (status: string, headers?: string) => void): Promise<void> {
  let src: OpenedSource | null;
  try {
    src = await o.source.open(kind, id);
  } catch (err) {
    if (!(err instanceof DriverError) || !PASSED_ON.has(err.kind)) throw err;
    log.warn('refused to send', { kind, id, peer, reason: err.message });
    answer('409 Conflict', `${REFUSAL_KIND}: ${err.kind}\r\n${REFUSAL_MESSAGE}: ${encodeURIComponent(err.message)}\r\n`);
    return;
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
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nupgrade: ${UPGRADE}\r\nconnection: Upgrade\r\nx-vpool-size: ${src.size}\r\n\r\n`);
    log.info('sending a volume to a peer', { kind, id, peer, size: src.size });
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
    await new Promise<void>((resolve) => socket.end(resolve));
    const seconds = (performance.now() - started) / 1000;
    o.onSent?.(sent, seconds);
    ok = true;
    log.info('sent a volume to a peer', { kind, id, peer, bytes: sent, seconds: Number(seconds.toFixed(3)) });
  } finally {
    transferEnded({ direction: 'sent', bytes: sent, seconds: (performance.now() - started) / 1000, ok });
    await src.release();
  }
}
