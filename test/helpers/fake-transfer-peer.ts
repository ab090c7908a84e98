/**
 * FAKE: a transfer peer that misbehaves on purpose (a real node plugin never would, so none can play
 * it). It speaks the listener's protocol (server.ts: HEAD for the size, a GET upgraded to
 * vpool-transfer/1, frames of wire.ts) with a real TLS certificate of the driver's CA, and is run as
 * its own process so that it can sit in a peer's network namespace:
 *
 *   node fake-transfer-peer.js HOST:PORT TLS_DIR MODE SIZE
 *
 * MODE: trickle (a frame header, then its data one byte a second), silent (never answers a GET),
 * slow-answer (102 every second for 4 s, then a correct stream of SIZE bytes), refuse-exhausted
 * (507 naming the kind 'exhausted'), refuse-precondition (412, 'precondition'); or a receiver, slow-reader, whose HOST:PORT is the listener it asks
 * and whose last argument is the path it GETs (it reads about a KiB a second); or probe, a receiver that
 * sends one HEAD of the path with the certificate in TLS_DIR while checking the server against its ca.crt,
 * (none when its tls.crt is empty), printing "server verified" once the server's certificate passed, then "answered STATUS" or
 * "error MESSAGE", and exits. It prints "listening" once ready and a line per event.
 */
import { createHash } from 'node:crypto';
import https from 'node:https';
import type { Socket } from 'node:net';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { ERROR_KIND, ERROR_MESSAGE, UPGRADE } from '../../src/transfer/server.js';
import { endFrame, frame } from '../../src/transfer/wire.js';

/** ca.crt, tls.crt and tls.key from a directory (a credential the signer issued: transfer-nodes.ts credentialDir). */
async function readTransferTls(dir: string): Promise<{ ca: Buffer; cert: Buffer; key: Buffer }> {
  const [ca, cert, key] = await Promise.all(['ca.crt', 'tls.crt', 'tls.key'].map((f) => readFile(path.join(dir, f))));
  return { ca, cert, key };
}

/** What slow-answer sends: the byte pattern every test can recompute. */
export function fakeContent(size: number): Buffer {
  const b = Buffer.alloc(size);
  for (let i = 0; i < size; i++) b[i] = (i * 7 + 3) & 0xff;
  return b;
}

/** slow-reader: a receiver that GETs `path` from the listener at host:port and then reads about a KiB a second. */
async function slowReader(target: string, tlsDir: string, path: string): Promise<void> {
  const tls = await readTransferTls(tlsDir);
  const at = target.lastIndexOf(':');
  const req = https.request({ host: target.slice(0, at), port: Number(target.slice(at + 1)), path, headers: { connection: 'Upgrade', upgrade: UPGRADE }, ca: tls.ca, cert: tls.cert, key: tls.key, checkServerIdentity: () => undefined, minVersion: 'TLSv1.3', agent: false });
  req.on('upgrade', (_res, socket: Socket) => {
    console.log('upgraded');
    socket.pause();
    socket.on('error', () => undefined);
    const t = setInterval(() => socket.read(1024), 1000);
    socket.once('close', () => {
      clearInterval(t);
      console.log('closed');
    });
  });
  req.on('response', (res) => console.log(`answered ${res.statusCode}`));
  req.on('error', (err) => console.log(`error ${err.message}`));
  req.end();
  console.log('listening');
}

/** probe: one HEAD; the server's certificate is checked against ca.crt (so a refusal seen is the server's). */
async function probe(target: string, tlsDir: string, path: string): Promise<void> {
  const tls = await readTransferTls(tlsDir);
  const at = target.lastIndexOf(':');
  console.log('listening');
  await new Promise<void>((resolve) => {
    const req = https.request({ method: 'HEAD', host: target.slice(0, at), port: Number(target.slice(at + 1)), path, ca: tls.ca, ...(tls.cert.length ? { cert: tls.cert, key: tls.key } : {}), checkServerIdentity: () => undefined, minVersion: 'TLSv1.3', agent: false });
    req.on('socket', (socket) => socket.once('secureConnect', () => console.log((socket as import('node:tls').TLSSocket).authorized ? 'server verified' : 'server not verified')));
    req.on('response', (res) => {
      console.log(`answered ${res.statusCode}`);
      res.resume();
      resolve();
    });
    req.on('error', (err) => {
      console.log(`error ${(err as NodeJS.ErrnoException).code ?? ''} ${err.message}`);
      resolve();
    });
    req.end();
  });
}

async function main(): Promise<void> {
  const [listen, tlsDir, mode, sizeArg] = process.argv.slice(2);
  if (mode === 'slow-reader') return slowReader(listen, tlsDir, sizeArg);
  if (mode === 'probe') return probe(listen, tlsDir, sizeArg);
  const size = Number(sizeArg);
  const [host, port] = [listen.slice(0, listen.lastIndexOf(':')), Number(listen.slice(listen.lastIndexOf(':') + 1))];
  const tls = await readTransferTls(tlsDir);
  const server = https.createServer({ ca: tls.ca, cert: tls.cert, key: tls.key, requestCert: true, rejectUnauthorized: true, minVersion: 'TLSv1.3' }, (req, res) => {
    res.writeHead(req.method === 'HEAD' ? 200 : 400, { 'x-vpool-size': String(size) }).end();
  });
  server.on('upgrade', (_req, socket: Socket) => {
    console.log(`GET ${mode}`);
    socket.on('error', () => undefined);
    socket.once('close', () => console.log(`closed after ${socket.bytesWritten} bytes`));
    const upgrade = `HTTP/1.1 101 Switching Protocols\r\nupgrade: ${UPGRADE}\r\nconnection: Upgrade\r\nx-vpool-size: ${size}\r\n\r\n`;
    if (mode === 'silent') return;
    if (mode === 'refuse-exhausted') {
      socket.end(`HTTP/1.1 507 Insufficient Storage\r\n${ERROR_KIND}: exhausted\r\n${ERROR_MESSAGE}: ${encodeURIComponent('no room for a copy to send')}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      return;
    }
    if (mode === 'refuse-precondition') {
      socket.end(`HTTP/1.1 412 Precondition Failed\r\n${ERROR_KIND}: precondition\r\n${ERROR_MESSAGE}: ${encodeURIComponent('this pool cannot copy an attached volume at one point in time')}\r\nconnection: close\r\ncontent-length: 0\r\n\r\n`);
      return;
    }
    if (mode === 'trickle') {
      socket.write(upgrade);
      socket.write(frame({ offset: 0, data: Buffer.alloc(Math.min(size, 1024 * 1024)) }));
      const t = setInterval(() => socket.write(Buffer.alloc(1)), 1000);
      socket.once('close', () => clearInterval(t));
      return;
    }
    // slow-answer: the sender's lock wait and copy, as the real one says them.
    let n = 0;
    const t = setInterval(() => {
      if (++n <= 4) {
        socket.write('HTTP/1.1 102 Processing\r\n\r\n');
        return;
      }
      clearInterval(t);
      const data = fakeContent(size);
      const head = frame({ offset: 0, data });
      socket.write(upgrade);
      socket.write(head);
      socket.write(data);
      socket.end(endFrame(createHash('sha256').update(head).update(data).digest()));
    }, 1000);
    socket.once('close', () => clearInterval(t));
  });
  server.listen(port, host, () => console.log('listening'));
  process.once('SIGTERM', () => process.exit(0));
}

if (process.argv[1]?.endsWith('fake-transfer-peer.js')) void main();
