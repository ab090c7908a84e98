import { createHash } from 'node:crypto';
import https from 'node:https';
import type { AddressInfo } from 'node:net';
import type { TLSSocket } from 'node:tls';
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
  onSent?: (bytes: number, seconds: number) => void;
}

/** What a response may hold before a write waits: several chunks, so the socket never runs dry while the next is read. */
const SEND_BUFFER = 4 * 1024 * 1024;

const ROUTE = /^\/v1\/(volumes|snapshots)\/([^/?]+)$/;

/**
 * The transfer listener: HTTPS with mutual TLS (TLS 1.3), so only a peer holding a certificate of
 * the driver's CA gets past the handshake, and it may only read a volume or a snapshot by ID:
 * HEAD says whether this node has it (and its size), GET streams its data ranges (wire.ts).
 */
export async function startTransferServer(o: TransferServerOptions): Promise<{ port: number; close(): Promise<void> }> {
  const server = https.createServer({ ca: o.tls.ca, cert: o.tls.cert, key: o.tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3', highWaterMark: SEND_BUFFER }, (req, res) => {
    const m = ROUTE.exec(req.url ?? '');
    const kind: TransferKind | null = m ? (m[1] === 'volumes' ? 'volume' : 'snapshot') : null;
    const id = m ? decodeURIComponent(m[2]) : '';
    if (!kind || !isId(kind === 'volume' ? 'vol' : 'snap', id) || (req.method !== 'GET' && req.method !== 'HEAD')) {
      res.writeHead(400).end();
      return;
    }
    const peer = (req.socket as TLSSocket).getPeerCertificate()?.subject?.CN ?? req.socket.remoteAddress;
    void serve(o, kind, id, req.method === 'HEAD', res, String(peer)).catch((err: unknown) => {
      log.error('a transfer failed on the sending side', { kind, id, peer, err: String(err) });
      res.destroy();
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
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

async function serve(o: TransferServerOptions, kind: TransferKind, id: string, head: boolean, res: import('node:http').ServerResponse, peer: string): Promise<void> {
  if (head) {
    const size = await o.source.size(kind, id);
    res.writeHead(size === null ? 404 : 200, size === null ? {} : { 'x-vpool-size': String(size) }).end();
    return;
  }
  const src = await o.source.open(kind, id);
  if (!src) {
    res.writeHead(404).end();
    return;
  }
  const started = performance.now();
  let sent = 0;
  let ok = false;
  let lastProgress = started;
  try {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'x-vpool-size': String(src.size) });
    log.info('sending a volume to a peer', { kind, id, peer, size: src.size });
    const hash = createHash('sha256');
    // Backpressure: past the socket's buffer, wait for it to drain (or for the peer to go); the listeners go with the wait.
    const write = async (...bufs: Buffer[]) => {
      if (res.destroyed) throw new Error('the peer went away');
      res.cork();
      let more = true;
      for (const b of bufs) more = res.write(b);
      res.uncork();
      if (more) return;
      await new Promise<void>((resolve, reject) => {
        const done = (err?: Error) => {
          res.off('drain', onDrain);
          res.off('close', onClose);
          if (err) reject(err);
          else resolve();
        };
        const onDrain = () => done();
        const onClose = () => done(new Error('the peer went away'));
        res.on('drain', onDrain);
        res.on('close', onClose);
      });
    };
    for await (const chunk of dataChunks(src.path, src.size, { file: src.file })) {
      const h = frame(chunk);
      hash.update(h);
      hash.update(chunk.data);
      await write(h, chunk.data);
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
    await write(endFrame(hash.digest()));
    res.end();
    const seconds = (performance.now() - started) / 1000;
    o.onSent?.(sent, seconds);
    ok = true;
    log.info('sent a volume to a peer', { kind, id, peer, bytes: sent, seconds: Number(seconds.toFixed(3)) });
  } finally {
    transferEnded({ direction: 'sent', bytes: sent, seconds: (performance.now() - started) / 1000, ok });
    await src.release();
  }
}
