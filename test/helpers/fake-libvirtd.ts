import net from 'node:net';
import { FrameAssembler } from '../../src/pool/libvirt/rpc/frames.js';
import { REMOTE_PROGRAM } from '../../src/pool/libvirt/rpc/protocol.js';
import { XdrReader, XdrWriter } from '../../src/pool/libvirt/rpc/xdr.js';

/**
 * A FAKE libvirtd: a scripted unix socket that speaks libvirt's RPC framing (virnetprotocol.x) so a
 * test can make happen what a real libvirtd does only by chance: a reply and an event in one read,
 * a reply in tiny pieces, a close right after the handshake, a value past 2^53, a daemon that stops
 * answering (SIGSTOP). It models virnetserverclient.c where that matters: keepalive pings get pongs,
 * and a client with max_client_requests (5) calls in flight is not read until one is answered.
 * The handshake (AuthList, ConnectOpen, ConnectSupportsFeature) is answered like libvirtd answers
 * root on its unix socket; every other call goes to the test's script.
 */
export const KEEPALIVE_PROGRAM = 0x6b656570;
const MAX_CLIENT_REQUESTS = 5;

export interface FakeCall {
  proc: number;
  serial: number;
  body: XdrReader;
  client: FakeClient;
}

export class FakeClient {
  inFlight = 0;
  frozen = false;
  constructor(readonly socket: net.Socket) {}

  /** A reply message (status OK) for a call, its body written by `body`. */
  reply(call: FakeCall, body?: (w: XdrWriter) => void): Buffer {
    this.inFlight--;
    if (this.inFlight < MAX_CLIENT_REQUESTS && !this.frozen) this.socket.resume();
    return message(REMOTE_PROGRAM, call.proc, 1, call.serial, body);
  }

  /** An event message of the remote program. */
  event(proc: number, body: (w: XdrWriter) => void): Buffer {
    return message(REMOTE_PROGRAM, proc, 2, 0, body);
  }

  send(...messages: Buffer[]): void {
    if (!this.socket.destroyed) this.socket.write(Buffer.concat(messages));
  }
}

export function message(prog: number, proc: number, type: number, serial: number, body?: (w: XdrWriter) => void): Buffer {
  const w = new XdrWriter();
  w.u32(0).u32(prog).u32(1).i32(proc).u32(type).u32(serial).u32(0);
  body?.(w);
  const buf = Buffer.from(w.bytes());
  buf.writeUInt32BE(buf.length, 0);
  return buf;
}

export class FakeLibvirtd {
  readonly clients: FakeClient[] = [];
  /** Every call after the handshake, in order. */
  readonly calls: FakeCall[] = [];
  /** Frozen as by SIGSTOP: nothing read, nothing answered, new connections accepted by the kernel and left alone. */
  frozen = false;
  pings = 0;
  /** The names clients asked ConnectOpen to open. */
  readonly opened: Array<string | null> = [];
  private constructor(
    readonly server: net.Server,
    readonly socketPath: string,
    private readonly script: (call: FakeCall) => void,
    private readonly afterHandshake: (client: FakeClient) => void,
  ) {}

  static async start(socketPath: string, script: (call: FakeCall) => void, opts: { afterHandshake?: (client: FakeClient) => void } = {}): Promise<FakeLibvirtd> {
    let fake!: FakeLibvirtd;
    const server = net.createServer((socket) => fake.accept(socket));
    fake = new FakeLibvirtd(server, socketPath, script, opts.afterHandshake ?? (() => undefined));
    await new Promise<void>((resolve) => server.listen(socketPath, resolve));
    return fake;
  }

  freeze(): void {
    this.frozen = true;
    for (const c of this.clients) {
      c.frozen = true;
      c.socket.pause();
    }
  }

  thaw(): void {
    this.frozen = false;
    for (const c of this.clients) {
      c.frozen = false;
      if (c.inFlight < MAX_CLIENT_REQUESTS) c.socket.resume();
    }
  }

  async stop(): Promise<void> {
    for (const c of this.clients) c.socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private accept(socket: net.Socket): void {
    const client = new FakeClient(socket);
    this.clients.push(client);
    if (this.frozen) {
      client.frozen = true;
      socket.pause();
    }
    const frames = new FrameAssembler();
    socket.on('error', () => undefined);
    socket.on('data', (chunk) => {
      for (const m of frames.push(chunk)) this.receive(client, m);
    });
  }

  private receive(client: FakeClient, m: Buffer): void {
    const r = new XdrReader(m.subarray(4));
    const prog = r.u32();
    r.u32();
    const proc = r.i32();
    const type = r.u32();
    const serial = r.u32();
    r.u32();
    if (prog === KEEPALIVE_PROGRAM) {
      this.pings++;
      if (proc === 1) client.send(message(KEEPALIVE_PROGRAM, 2, 2, 0));
      return;
    }
    if (type !== 0) return;
    client.inFlight++;
    // virnetserverclient.c: a client with max_client_requests calls in flight is not read any further.
    if (client.inFlight >= MAX_CLIENT_REQUESTS) client.socket.pause();
    const call: FakeCall = { proc, serial, body: r, client };
    if (proc === 66) client.send(client.reply(call, (w) => w.u32(1).i32(0))); // AuthList: none needed
    else if (proc === 1) {
      this.opened.push(r.optionalString()); // ConnectOpen
      client.send(client.reply(call));
    }
    else if (proc === 60) {
      client.send(client.reply(call, (w) => w.i32(1))); // ConnectSupportsFeature: yes
      this.afterHandshake(client);
    } else {
      this.calls.push(call);
      this.script(call);
    }
  }
}
