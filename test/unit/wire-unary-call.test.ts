// The CLI's gRPC unary call (src/csi/wire/unary-call.ts) against a real grpc-js server (what the driver
// serves with) and against node http2 servers that misbehave the ways a wrong socket or a hung driver does.
import * as grpc from '@grpc/grpc-js';
import assert from 'node:assert/strict';
import { link, mkdtemp, rm } from 'node:fs/promises';
import http2 from 'node:http2';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CallError, grpcTimeout, STATUS, UnaryChannel } from '../../src/csi/wire/unary-call.js';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from '../../src/project.js';

let dir: string;
before(async () => (dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-unary-'))));
after(async () => rm(dir, { recursive: true, force: true }));

const raw = (name: string): grpc.MethodDefinition<Buffer, Buffer> => ({ path: `/t.T/${name}`, requestStream: false, responseStream: false, requestSerialize: (b) => b, requestDeserialize: (b) => b, responseSerialize: (b) => b, responseDeserialize: (b) => b });

async function grpcServer(sock: string, handlers: Record<string, grpc.handleUnaryCall<Buffer, Buffer>>): Promise<grpc.Server> {
  const s = new grpc.Server();
  s.addService(Object.fromEntries(Object.keys(handlers).map((n) => [n, raw(n)])), handlers);
  await new Promise<void>((res, rej) => s.bindAsync(`unix://${sock}`, grpc.ServerCredentials.createInsecure(), (e) => (e ? rej(e) : res())));
  return s;
}

const refusal = async (p: Promise<unknown>): Promise<CallError> => {
  const err = await p.then(() => assert.fail('the call should have failed'), (e: unknown) => e);
  assert.ok(err instanceof CallError, String(err));
  return err;
};

describe('the CLI\'s gRPC unary call', () => {
  it('against grpc-js: the answer, a status with a percent-encoded message, an empty answer, and a cancel the handler sees', async () => {
    const sock = path.join(dir, 'g.sock');
    let cancelled: () => void = () => undefined;
    const sawCancel = new Promise<void>((r) => (cancelled = r));
    const server = await grpcServer(sock, {
      Echo: (call, cb) => cb(null, Buffer.concat([Buffer.from('echo:'), call.request])),
      Refuse: (_call, cb) => cb({ code: grpc.status.RESOURCE_EXHAUSTED, details: 'pool has 47.9Mi free, 5Ti asked: 100% full ✓' }),
      Empty: (_call, cb) => cb(null, Buffer.alloc(0)),
      Hold: (call) => call.on('cancelled', () => cancelled()),
    });
    const ch = new UnaryChannel(sock);
    try {
      assert.equal((await ch.call('/t.T/Echo', Buffer.from('hi'))).toString(), 'echo:hi');
      const e = await refusal(ch.call('/t.T/Refuse', Buffer.alloc(0)));
      assert.equal(e.code, STATUS.RESOURCE_EXHAUSTED);
      assert.equal(e.details, 'pool has 47.9Mi free, 5Ti asked: 100% full ✓');
      assert.equal((await ch.call('/t.T/Empty', Buffer.alloc(0))).length, 0);
      assert.equal((await refusal(ch.call('/t.T/Nope', Buffer.alloc(0)))).code, STATUS.UNIMPLEMENTED);
      const stop = new AbortController();
      const held = ch.call('/t.T/Hold', Buffer.alloc(0), { signal: stop.signal });
      setImmediate(() => stop.abort());
      assert.equal((await refusal(held)).code, STATUS.CANCELLED);
      await sawCancel;
    } finally {
      ch.close();
      server.forceShutdown();
    }
  });

  it('no socket, and a socket nobody accepts on: UNAVAILABLE naming the errno', async () => {
    const ch = new UnaryChannel(path.join(dir, 'absent.sock'));
    const e = await refusal(ch.call('/t.T/Echo', Buffer.alloc(0)));
    assert.equal(e.code, STATUS.UNAVAILABLE);
    assert.match(e.details, /^No connection established\. Last error: connect ENOENT /);
    ch.close();
    const sock = path.join(dir, 'listening.sock');
    const l = net.createServer().listen(sock);
    await new Promise((r) => l.once('listening', r));
    // A second name for the socket outlives the listener (node unlinks only its own name): what a driver killed by SIGKILL leaves.
    await link(sock, path.join(dir, 'stale.sock'));
    await new Promise((r) => l.close(r));
    const c2 = new UnaryChannel(path.join(dir, 'stale.sock'));
    assert.match((await refusal(c2.call('/t.T/Echo', Buffer.alloc(0)))).details, /^No connection established\. Last error: connect ECONNREFUSED /);
    c2.close();
  });

  it('a deadline is sent in units grpc-timeout takes (at most 8 digits)', () => {
    assert.equal(grpcTimeout(2000), '2000m');
    assert.equal(grpcTimeout(0.2), '1m');
    assert.equal(grpcTimeout(99_999_999), '99999999m');
    assert.equal(grpcTimeout(100_000_000), '100000S');
    assert.equal(grpcTimeout(30 * 24 * 3600 * 1000), '2592000S');
    assert.equal(grpcTimeout(1e18), '99999999H');
  });

  it('a process that closes its channel to a driver that never answered exits by itself', async () => {
    // In a child process: what keeps it alive (a session, a socket, a timer) would keep it from exiting.
    const sock = path.join(dir, 'hung-exit.sock');
    const sockets: net.Socket[] = [];
    const l = net.createServer((s) => sockets.push(s)).listen(sock);
    await new Promise((r) => l.once('listening', r));
    const code = `import { UnaryChannel } from ${JSON.stringify(path.join(PROJECT_ROOT, 'dist', 'src', 'csi', 'wire', 'unary-call.js'))};
      const ch = new UnaryChannel(${JSON.stringify(sock)});
      const stop = new AbortController();
      const p = ch.call('/t.T/Echo', Buffer.alloc(0), { signal: stop.signal, deadline: Date.now() + 40 * 24 * 3600 * 1000 }).catch((e) => console.log('ended', e.code));
      setTimeout(() => stop.abort(), 200);
      await p;
      ch.close();`;
    try {
      const { stdout } = await promisify(execFile)(process.execPath, ['--input-type=module', '-e', code], { timeout: 20_000 });
      assert.equal(stdout.trim(), `ended ${STATUS.CANCELLED}`, 'a 40-day deadline does not fire at once, the cancel ends the call, and the process exits');
    } finally {
      sockets.forEach((s) => s.destroy());
      l.close();
    }
  });

  it('a driver that accepts and never answers: DEADLINE_EXCEEDED at the deadline, and close() lets the process go', async () => {
    const sock = path.join(dir, 'hung.sock');
    const sockets: net.Socket[] = [];
    const l = net.createServer((s) => sockets.push(s)).listen(sock);
    await new Promise((r) => l.once('listening', r));
    const ch = new UnaryChannel(sock);
    const started = Date.now();
    const e = await refusal(ch.call('/t.T/Echo', Buffer.alloc(0), { deadline: Date.now() + 300 }));
    assert.equal(e.code, STATUS.DEADLINE_EXCEEDED);
    assert.ok(Date.now() - started >= 290);
    ch.close();
    sockets.forEach((s) => s.destroy());
    l.close();
  });

  it('not a gRPC server, an answer past the size allowed, and a cut-short answer are refused', async () => {
    const sock = path.join(dir, 'h2.sock');
    const server = http2.createServer();
    server.on('stream', (stream, headers) => {
      const p = headers[':path'];
      if (p === '/t.T/NotFound') return stream.respond({ ':status': 404 }, { endStream: true });
      if (p === '/t.T/Busy') return stream.respond({ ':status': 503 }, { endStream: true });
      if (p === '/t.T/Refused') {
        stream.on('error', () => undefined); // this side's own record of the reset
        return stream.close(http2.constants.NGHTTP2_REFUSED_STREAM);
      }
      if (p === '/t.T/NoStatus' || p === '/t.T/BadStatus') {
        stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
        stream.on('wantTrailers', () => stream.sendTrailers(p === '/t.T/BadStatus' ? { 'grpc-status': 'abc' } : {}));
        return stream.end();
      }
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => stream.sendTrailers({ 'grpc-status': '0' }));
      if (p === '/t.T/Big') {
        const frame = Buffer.alloc(5 + 2048);
        frame.writeUInt32BE(2048, 1);
        stream.end(frame);
      } else {
        const frame = Buffer.alloc(5 + 3);
        frame.writeUInt32BE(100, 1); // says 100 bytes, carries 3
        stream.end(frame);
      }
    });
    server.listen(sock);
    await new Promise((r) => server.once('listening', r));
    const ch = new UnaryChannel(sock);
    try {
      const e404 = await refusal(ch.call('/t.T/NotFound', Buffer.alloc(0)));
      assert.equal(e404.code, STATUS.UNIMPLEMENTED);
      assert.match(e404.details, /HTTP status code 404/);
      assert.equal((await refusal(ch.call('/t.T/Busy', Buffer.alloc(0)))).code, STATUS.UNAVAILABLE);
      // A server that is there and answers oddly is not "no driver listening".
      const refused = await refusal(ch.call('/t.T/Refused', Buffer.alloc(0)));
      assert.equal(refused.code, STATUS.UNAVAILABLE);
      assert.match(refused.details, /REFUSED_STREAM/);
      const none = await refusal(ch.call('/t.T/NoStatus', Buffer.alloc(0)));
      assert.equal(none.code, STATUS.UNKNOWN);
      assert.match(none.details, /without a gRPC status/);
      assert.equal((await refusal(ch.call('/t.T/BadStatus', Buffer.alloc(0)))).code, STATUS.UNKNOWN);
      const big = await refusal(ch.call('/t.T/Big', Buffer.alloc(0), { maxReceiveBytes: 1024 }));
      assert.equal(big.code, STATUS.RESOURCE_EXHAUSTED);
      assert.equal((await refusal(ch.call('/t.T/Short', Buffer.alloc(0)))).code, STATUS.INTERNAL);
    } finally {
      ch.close();
      server.close();
    }
  });
});
