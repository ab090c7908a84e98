import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { FrameAssembler } from '../../src/pool/libvirt/rpc/frames.js';
import { LibvirtConnection } from '../../src/pool/libvirt/rpc/connection.js';
import { Proc } from '../../src/pool/libvirt/rpc/protocol.js';
import { RpcLibvirt } from '../../src/pool/libvirt/rpc/rpc-libvirt.js';
import { XdrReader, XdrWriter } from '../../src/pool/libvirt/rpc/xdr.js';
import { FakeLibvirtd, message, type FakeCall } from '../helpers/fake-libvirtd.js';

const URI = 'qemu:///system';
const UUID = Buffer.alloc(16, 7);
const domainRef = (w: XdrWriter, name: string) => w.string(name).fixed(UUID).i32(1);
const poolRef = (w: XdrWriter, name: string) => w.string(name).fixed(UUID);

async function waitFor<T>(what: () => T | undefined | false, limitMs: number, message: string): Promise<T> {
  const end = performance.now() + limitMs;
  for (;;) {
    const v = what();
    if (v) return v;
    if (performance.now() > end) throw new Error(message);
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('libvirt RPC framing: messages cut from a byte stream', () => {
  it('joins a message split anywhere (its length word included) and cuts several out of one chunk', () => {
    const a = message(0x20008086, 59, 1, 1, (w) => w.string('host-a'));
    const b = message(0x20008086, 59, 1, 2, (w) => w.string('host-b'.repeat(1000)));
    const stream = Buffer.concat([a, b]);
    for (const cut of [1, 2, 3, 5, 4096]) {
      const f = new FrameAssembler();
      const out: Buffer[] = [];
      for (let i = 0; i < stream.length; i += cut) out.push(...f.push(stream.subarray(i, i + cut)));
      assert.deepEqual(out.map((m) => m.toString('hex')), [a.toString('hex'), b.toString('hex')], `chunks of ${cut}`);
      assert.equal(f.pending, 0);
    }
    assert.equal(new FrameAssembler().push(stream).length, 2);
  });

  it('refuses a length no libvirt message has', () => {
    const tooShort = Buffer.alloc(8);
    tooShort.writeUInt32BE(8, 0);
    assert.throws(() => new FrameAssembler().push(tooShort), /message of 8 bytes/);
    const tooLong = Buffer.alloc(4);
    tooLong.writeUInt32BE(64 * 1024 * 1024, 0);
    assert.throws(() => new FrameAssembler().push(tooLong), /message of 67108864 bytes/);
  });

  it('reads an unsigned hyper exactly up to 2^53 - 1 and refuses one past it instead of rounding', () => {
    const w = new XdrWriter().u64(Number.MAX_SAFE_INTEGER);
    assert.equal(new XdrReader(Buffer.from(w.bytes())).u64(), Number.MAX_SAFE_INTEGER);
    const past = Buffer.alloc(8);
    past.writeBigUInt64BE(2n ** 60n + 1n);
    assert.throws(() => new XdrReader(past).u64(), /1152921504606846977 .* past what the driver holds exactly/);
    assert.throws(() => new XdrWriter().u64(2 ** 60), /not an unsigned 64-bit size/);
  });
});

// The connection against a FAKE libvirtd (test/helpers/fake-libvirtd.ts: a scripted socket modelling
// virnetserverclient.c's keepalive and max_client_requests), for what a real daemon does only by chance.
describe('libvirt connection against a FAKE libvirtd', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-fake-libvirtd-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  let n = 0;
  const sock = () => path.join(dir, `libvirt-${++n}.sock`);

  it('asks libvirtd to open qemu:///system, never the client\'s qemu+unix://...?socket= URI (which libvirtd would open through its remote driver, to itself)', async () => {
    const s = sock();
    const fake = await FakeLibvirtd.start(s, (call) => {
      if (call.proc === Proc.ConnectGetHostname) call.client.send(call.client.reply(call, (w) => w.string("vm")));
    });
    const rpc = new RpcLibvirt(`qemu+unix:///system?socket=${s}`, s);
    try {
      await rpc.connection.call(Proc.ConnectGetHostname);
      assert.deepEqual(fake.opened, ['qemu:///system']);
      assert.throws(() => new LibvirtConnection(s, `qemu+unix:///system?socket=${s}`), /is not a name libvirtd opens itself/);
    } finally {
      rpc.close();
      await fake.stop();
    }
  });

  it('delivers an event that arrives in the same read as its registration reply', async () => {
    const s = sock();
    const fake = await FakeLibvirtd.start(s, (call) => {
      if (call.proc === Proc.DomainLookupByName) call.client.send(call.client.reply(call, (w) => domainRef(w, 'dom')));
      else if (call.proc === Proc.ConnectDomainEventCallbackRegisterAny)
        // The reply (callback ID 7) and the first event for it in one write: one read on the client.
        call.client.send(
          call.client.reply(call, (w) => w.i32(7)),
          call.client.event(Proc.DomainEventCallbackDeviceRemoved, (w) => domainRef(w.i32(7), 'dom').string('ua-vpool-1')),
          call.client.event(Proc.DomainEventCallbackDeviceRemoved, (w) => domainRef(w.i32(99), 'dom').string('someone-elses')),
        );
      else if (call.proc === Proc.ConnectDomainEventCallbackDeregisterAny) call.client.send(call.client.reply(call));
    });
    const rpc = new RpcLibvirt(URI, s);
    try {
      const watch = rpc.deviceRemoved('dom', 30_000);
      assert.equal(await watch.next(), 'ua-vpool-1');
      await watch.stop();
      assert.equal(await watch.next(), null, 'the other callback\'s event was not taken for this one');
      assert.ok(fake.calls.some((c) => c.proc === Proc.ConnectDomainEventCallbackDeregisterAny));
    } finally {
      rpc.close();
      await fake.stop();
    }
  });

  it('reassembles a 24 MiB reply written in 64 KiB pieces and a small one written a byte at a time', async () => {
    const s = sock();
    const big = 'x'.repeat(24 * 1024 * 1024);
    let calls = 0;
    const fake = await FakeLibvirtd.start(s, async (call) => {
      const reply = call.client.reply(call, (w) => w.string(calls++ === 0 ? big : 'tiny-host'));
      const piece = calls === 1 ? 64 * 1024 : 1;
      for (let i = 0; i < reply.length; i += piece) {
        call.client.socket.write(reply.subarray(i, i + piece));
        if (piece === 1) await new Promise((r) => setImmediate(r));
      }
    });
    const rpc = new RpcLibvirt(URI, s);
    try {
      assert.equal(await rpc.hostname(), big);
      assert.equal(await rpc.hostname(), 'tiny-host');
    } finally {
      rpc.close();
      await fake.stop();
    }
  });

  it('reads a pool size past 2^53 (an NFS or EFS pool says exabytes) as 2^53 - 1, where the strict reader would refuse it', async () => {
    const s = sock();
    const fake = await FakeLibvirtd.start(s, (call) => {
      if (call.proc === Proc.StoragePoolLookupByName) call.client.send(call.client.reply(call, (w) => poolRef(w, 'p')));
      else if (call.proc === Proc.StoragePoolGetInfo) {
        call.client.send(
          call.client.reply(call, (w) => {
            w.u32(2);
            for (const v of [2n ** 60n, 1n, 1n]) {
              const b = Buffer.alloc(8);
              b.writeBigUInt64BE(v);
              w.fixed(b);
            }
          }),
        );
      }
    });
    const rpc = new RpcLibvirt(URI, s);
    try {
      const info = await rpc.poolInfo('p');
      assert.equal(info.capacity, Number.MAX_SAFE_INTEGER);
      assert.equal(info.allocation, 1);
    } finally {
      rpc.close();
      await fake.stop();
    }
  });

  it('a connection closed right after its handshake: the call reconnects or fails UNAVAILABLE, never waits for its timeout', async () => {
    const s = sock();
    let first = true;
    const fake = await FakeLibvirtd.start(s, (call) => call.client.send(call.client.reply(call, (w) => w.string('host'))), {
      afterHandshake: (client) => {
        if (first) client.socket.end();
        first = false;
      },
    });
    const conn = new LibvirtConnection(s, URI, { timeoutMs: 60_000 });
    try {
      const outcome = await conn.call(Proc.ConnectGetHostname).then(
        (r) => r.string(),
        (e: Error & { kind?: string }) => `${e.kind}: ${e.message}`,
      );
      assert.ok(outcome === 'host' || /^unavailable: the connection to libvirtd .* (closed|lost)/.test(outcome), outcome);
      assert.doesNotMatch(outcome, /did not answer/);
      // Once the close is seen, the next call is made on a new connection.
      await waitFor(() => fake.clients[0].socket.destroyed, 10_000, 'the first connection did not close');
      assert.equal((await conn.call(Proc.ConnectGetHostname)).string(), 'host');
      assert.equal(conn.connections, 2);
    } finally {
      conn.close();
      await fake.stop();
    }
  });

  it('keeps under max_client_requests on the held connection, and long copies on connections of their own leave it free', async () => {
    const s = sock();
    const held: FakeCall[] = [];
    let mostInFlight = 0;
    const fake = await FakeLibvirtd.start(s, (call) => {
      mostInFlight = Math.max(mostInFlight, call.client.inFlight);
      if (call.proc === Proc.StoragePoolLookupByName) call.client.send(call.client.reply(call, (w) => poolRef(w, 'p')));
      else if (call.proc === Proc.StorageVolCreateXmlFrom || call.proc === Proc.ConnectGetHostname) held.push(call);
      else if (call.proc === Proc.StoragePoolGetInfo) call.client.send(call.client.reply(call, (w) => w.u32(2).u64(10).u64(5).u64(5)));
    });
    const rpc = new RpcLibvirt(URI, s);
    try {
      // Six copies, each a job libvirtd answers only when the test says so (a copy of a large volume).
      const copies = Array.from({ length: 6 }, (_, i) => rpc.createVolumeFrom('p', `<volume><name>c${i}</name></volume>`, 'src', 600_000));
      await waitFor(() => held.filter((c) => c.proc === Proc.StorageVolCreateXmlFrom).length === 6, 30_000, 'the six copies did not all reach libvirtd');
      assert.equal(rpc.jobConnections, 6);
      assert.equal(new Set(held.map((c) => c.client)).size, 6, 'each copy on a connection of its own');
      // Meanwhile the held connection answers at once.
      assert.equal((await rpc.poolInfo('p')).capacity, 10);
      for (const c of held.splice(0)) c.client.send(c.client.reply(c));
      await Promise.all(copies);
      assert.ok(mostInFlight <= 4, `libvirtd saw ${mostInFlight} calls in flight on one connection`);
    } finally {
      rpc.close();
      await fake.stop();
    }
  });

  it('sends at most four calls at once, so libvirtd (which stops reading a client at five) still reads its keepalive pings', async () => {
    const s = sock();
    const held: FakeCall[] = [];
    let mostInFlight = 0;
    const fake = await FakeLibvirtd.start(s, (call) => {
      mostInFlight = Math.max(mostInFlight, call.client.inFlight);
      held.push(call);
    });
    const conn = new LibvirtConnection(s, URI, { keepalive: { intervalMs: 100, count: 2 } });
    try {
      const slow = Array.from({ length: 6 }, () => conn.call(Proc.ConnectGetHostname).then((r) => r.string()));
      await waitFor(() => held.length === 4, 30_000, 'four calls did not reach libvirtd');
      // Many keepalive intervals with four calls unanswered: pings are read and answered, the connection lives.
      const pings = fake.pings;
      await waitFor(() => fake.pings >= pings + 6, 30_000, 'no pings got through while four calls were out');
      assert.equal(conn.connections, 1, 'the connection was never declared dead');
      assert.equal(held.length, 4, 'the fifth and sixth calls wait on this side');
      for (const c of held.splice(0)) c.client.send(c.client.reply(c, (w) => w.string('h')));
      await waitFor(() => held.length === 2, 30_000, 'the last two calls were not sent after the first four were answered');
      for (const c of held.splice(0)) c.client.send(c.client.reply(c, (w) => w.string('h')));
      assert.deepEqual(await Promise.all(slow), Array(6).fill('h'));
      assert.equal(mostInFlight, 4);
    } finally {
      conn.close();
      await fake.stop();
    }
  });

  it('a call its caller stopped waiting for keeps its place until libvirtd answers it (libvirtd still counts it)', async () => {
    const s = sock();
    const held: FakeCall[] = [];
    let mostInFlight = 0;
    const fake = await FakeLibvirtd.start(s, (call) => {
      mostInFlight = Math.max(mostInFlight, call.client.inFlight);
      held.push(call);
    });
    const conn = new LibvirtConnection(s, URI, { keepalive: { intervalMs: 100, count: 2 } });
    try {
      // Four calls whose callers give up after 200 ms; libvirtd has not answered them.
      const gaveUp = await Promise.all(Array.from({ length: 4 }, () => conn.call(Proc.ConnectGetHostname, undefined, { timeoutMs: 200 }).then(() => 'answered', (e: Error) => e.message)));
      for (const g of gaveUp) assert.match(g, /did not answer procedure 59 within/);
      assert.equal(held.length, 4);
      // A fifth waits for one of them to be answered, not for its callers to leave.
      const fifth = conn.call(Proc.ConnectGetHostname).then((r) => r.string());
      const pings = fake.pings;
      await waitFor(() => fake.pings >= pings + 4, 30_000, 'no pings while four calls were out');
      assert.equal(held.length, 4, 'the fifth was not sent while libvirtd had four');
      const first = held.shift()!;
      first.client.send(first.client.reply(first, (w) => w.string('late')));
      await waitFor(() => held.length === 4, 30_000, 'the fifth was not sent after one of the four was answered');
      const last = held.pop()!;
      last.client.send(last.client.reply(last, (w) => w.string('fifth')));
      assert.equal(await fifth, 'fifth');
      assert.equal(mostInFlight, 4);
      assert.equal(conn.connections, 1, 'the connection was never declared dead');
      for (const c of held.splice(0)) c.client.send(c.client.reply(c, (w) => w.string('late')));
      await conn.idle();
    } finally {
      conn.close();
      await fake.stop();
    }
  });

  it('declares a frozen libvirtd dead by keepalive (interval x (count + 1)), fails its calls UNAVAILABLE, and reconnects once it is back', async () => {
    const s = sock();
    const fake = await FakeLibvirtd.start(s, (call) => {
      if (!fake.frozen) call.client.send(call.client.reply(call, (w) => w.string('host')));
    });
    const conn = new LibvirtConnection(s, URI, { timeoutMs: 120_000, keepalive: { intervalMs: 200, count: 2 } });
    try {
      assert.equal((await conn.call(Proc.ConnectGetHostname)).string(), 'host');
      fake.freeze();
      const started = performance.now();
      const err = await conn.call(Proc.ConnectGetHostname).then(
        () => null,
        (e: Error & { kind?: string }) => e,
      );
      const tookMs = performance.now() - started;
      assert.equal(err?.kind, 'unavailable');
      assert.match(err!.message, /answered none of 2 keepalive pings/);
      // Far below the 120 s call timeout: the keepalive, not the timeout, ended it (a generous bound for a slow machine).
      assert.ok(tookMs < 60_000, `took ${tookMs} ms`);
      // While it stays frozen a new connection cannot finish its handshake either, and fails the same way.
      await assert.rejects(conn.call(Proc.ConnectGetHostname), /keepalive pings/);
      fake.thaw();
      assert.equal((await conn.call(Proc.ConnectGetHostname)).string(), 'host');
      assert.ok(conn.connections >= 3);
    } finally {
      conn.close();
      await fake.stop();
    }
  });

  it('answers libvirtd\'s pings and sends its own only while libvirtd is silent', async () => {
    const s = sock();
    const fake = await FakeLibvirtd.start(s, (call) => call.client.send(call.client.reply(call, (w) => w.string('host'))));
    const conn = new LibvirtConnection(s, URI, { keepalive: { intervalMs: 100, count: 3 } });
    try {
      await conn.call(Proc.ConnectGetHostname);
      // Silent libvirtd that still answers pings: the connection lives on through many intervals.
      await waitFor(() => fake.pings >= 5, 30_000, 'no pings were sent to a silent libvirtd');
      assert.equal((await conn.call(Proc.ConnectGetHostname)).string(), 'host');
      assert.equal(conn.connections, 1, 'pings answered: the connection was never given up');
      // libvirtd's own ping gets a pong.
      const pongs: number[] = [];
      fake.clients[0].socket.on('data', (d: Buffer) => {
        if (d.length >= 16 && d.readUInt32BE(4) === 0x6b656570 && d.readInt32BE(12) === 2) pongs.push(1);
      });
      fake.clients[0].send(message(0x6b656570, 1, 2, 0));
      await waitFor(() => pongs.length > 0, 30_000, 'no pong');
    } finally {
      conn.close();
      await fake.stop();
    }
  });
});
