import net from 'node:net';
import { callSignal, detached } from '../../../call-context.js';
import { DriverError, unavailable } from '../../../errors.js';
import { log } from '../../../log.js';
import { FrameAssembler, HEADER_BYTES } from './frames.js';
import { encodeArgs, frame, KEEPALIVE_PING, KEEPALIVE_PONG, KEEPALIVE_PROGRAM, LibvirtRpcError, MessageType, Proc, REMOTE_PROGRAM, Status } from './protocol.js';
import { XdrReader, type XdrWriter } from './xdr.js';

export type EventListener = (proc: number, body: XdrReader) => void;

interface Pending {
  socket: net.Socket;
  resolve: (body: XdrReader) => void;
  reject: (err: Error) => void;
}

/**
 * libvirt's keepalive protocol (virkeepalive.c), as virsh's -k/-K set it: when nothing has come from
 * libvirtd for `intervalMs`, a ping is sent; `count` pings in a row without a word back and the
 * connection is declared dead. So a hung libvirtd is noticed within intervalMs × (count + 1).
 */
export interface Keepalive {
  intervalMs: number;
  count: number;
}

export interface ConnectionOptions {
  /** The most a call waits for its reply (its own timeoutMs may say otherwise). */
  timeoutMs?: number;
  /** Default DEFAULT_KEEPALIVE; null: none (a hung libvirtd is then noticed per call, at its timeout). */
  keepalive?: Keepalive | null;
  /**
   * Calls sent at once; the rest wait their turn here. libvirtd stops reading a client that has
   * max_client_requests (5 by default) calls in flight, and then reads neither its further calls
   * nor its keepalive pings: one under that keeps the connection readable.
   */
  maxInFlight?: number;
}

export const DEFAULT_KEEPALIVE: Keepalive = { intervalMs: 5_000, count: 3 };
const DEFAULT_MAX_IN_FLIGHT = 4;
// virdrvfeature: the remote party takes part in the keepalive program.
const FEATURE_PROGRAM_KEEPALIVE = 10;

/**
 * One connection to libvirtd over its unix socket, speaking libvirt's RPC protocol: calls carry a
 * serial and are answered in any order, so several are in flight at once; events arrive as messages
 * on the same socket; keepalive runs both ways (libvirtd's pings answered, ours sent when it is
 * silent). When the socket closes (libvirtd restarted or stopped) or keepalive declares it dead,
 * every call in flight fails as unavailable and the next call connects anew: a caller never holds
 * a dead connection, and the driver's retries go through once libvirtd is back.
 */
export class LibvirtConnection {
  private socket: net.Socket | null = null;
  private opening: Promise<net.Socket> | null = null;
  private serial = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<EventListener>();
  private readonly closeListeners = new Set<(connection: number) => void>();
  private readonly deaths = new WeakMap<net.Socket, string>();
  private generation = 0;
  private closed = false;
  private inFlight = 0;
  private readonly turns: Array<() => void> = [];
  private readonly timeoutMs: number;
  private readonly keepalive: Keepalive | null;
  private readonly maxInFlight: number;

  constructor(
    readonly socketPath: string,
    /** The URI libvirtd is asked to open (qemu:///system). */
    readonly uri: string,
    opts: ConnectionOptions = {},
  ) {
    // A transport or a parameter in the name makes libvirtd open it through its remote driver, to itself (rpc-libvirt.ts: DAEMON_URI).
    if (!/^[a-z]+:\/\/\/[a-z]+$/.test(uri)) throw new Error(`libvirt connection: ${JSON.stringify(uri)} is not a name libvirtd opens itself (driver:///instance)`);
    this.timeoutMs = opts.timeoutMs ?? 120_000;
    this.keepalive = opts.keepalive === undefined ? DEFAULT_KEEPALIVE : opts.keepalive;
    this.maxInFlight = opts.maxInFlight ?? DEFAULT_MAX_IN_FLIGHT;
  }

  /** How many times a connection was made: a test sees a reconnect by it. */
  get connections(): number {
    return this.generation;
  }

  /** Told of every event message (procedure number and body) on the current connection. */
  onEvent(listener: EventListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Told of the number of each connection that is lost; a watch on events made on it ends then. */
  onClose(listener: (connection: number) => void): () => void {
    this.closeListeners.add(listener);
    return () => this.closeListeners.delete(listener);
  }

  /** A call of the remote program: the arguments already encoded, the reply's body to decode. */
  async call(proc: number, args?: (w: XdrWriter) => void, opts: { timeoutMs?: number } = {}): Promise<XdrReader> {
    const timeoutMs = opts.timeoutMs ?? this.timeoutMs;
    const deadline = performance.now() + timeoutMs;
    // Encoded first: a value the protocol cannot carry fails here, before anything is waiting on it.
    const body = encodeArgs(args);
    await this.turn(proc, timeoutMs);
    let settled: Promise<void> = Promise.resolve();
    try {
      const socket = await this.bounded(this.connected(), deadline, proc);
      const sent = this.send(socket, proc, body, Math.max(1, deadline - performance.now()));
      settled = sent.settled;
      return await sent.reply;
    } finally {
      // The slot is libvirtd's until it has answered or the connection is gone: a caller that stopped
      // waiting leaves the call running there, and libvirtd counts it against max_client_requests.
      void settled.then(() => {
        this.inFlight--;
        this.turns.shift()?.();
        if (this.inFlight === 0 && !this.turns.length) for (const w of this.idleWaiters.splice(0)) w();
      });
    }
  }

  /** Resolves once no call is out on this connection (each answered, or the connection gone). */
  async idle(): Promise<void> {
    while (this.inFlight > 0 || this.turns.length) await new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  private readonly idleWaiters: Array<() => void> = [];

  /** Waits for `p` no longer than the call's deadline (and its signal). */
  private bounded<T>(p: Promise<T>, deadline: number, proc: number): Promise<T> {
    const signal = callSignal();
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => reject(unavailable(`libvirtd was not reached for procedure ${proc} within the call's time`)), Math.max(1, deadline - performance.now()));
      const onAbort = () => reject(new DriverError('cancelled', `the call was cancelled before libvirt was asked (procedure ${proc})`));
      if (signal?.aborted) onAbort();
      signal?.addEventListener('abort', onAbort, { once: true });
      p.then(resolve, reject).finally(() => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      });
    });
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
    this.socket = null;
  }

  /** Waits until fewer than maxInFlight calls are out; the wait counts in the call's time and ends with it. */
  private turn(proc: number, timeoutMs: number): Promise<void> {
    if (this.inFlight < this.maxInFlight && !this.turns.length) {
      this.inFlight++;
      return Promise.resolve();
    }
    const signal = callSignal();
    if (signal?.aborted) return Promise.reject(new DriverError('cancelled', `the call was cancelled before libvirt was asked (procedure ${proc})`));
    return new Promise<void>((resolve, reject) => {
      const go = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.inFlight++;
        resolve();
      };
      const drop = (err: Error) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        const i = this.turns.indexOf(go);
        if (i >= 0) this.turns.splice(i, 1);
        reject(err);
      };
      const onAbort = () => drop(new DriverError('cancelled', `the call was cancelled or ran out of time before libvirt was asked (procedure ${proc})`));
      const timer = setTimeout(() => drop(unavailable(`libvirtd did not take procedure ${proc} within ${timeoutMs / 1000} s: ${this.maxInFlight} calls were ahead of it`)), timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.turns.push(go);
    });
  }

  private async connected(): Promise<net.Socket> {
    if (this.closed) throw unavailable('the libvirt connection was closed');
    if (this.socket && !this.socket.destroyed) return this.socket;
    // Not in the first caller's context: its cancellation must not fail the handshake every caller shares.
    this.opening ??= detached(() => this.open()).finally(() => (this.opening = null));
    return this.opening;
  }

  private async open(): Promise<net.Socket> {
    const socket = await new Promise<net.Socket>((resolve, reject) => {
      const s = net.createConnection(this.socketPath);
      s.once('connect', () => resolve(s));
      s.once('error', (err) => reject(unavailable(`cannot reach libvirtd at ${this.socketPath}: ${err.message}`)));
    });
    this.generation++;
    // The connection alone does not keep the process up (a call in flight does, by its timer).
    socket.unref();
    this.attach(socket, this.generation);
    try {
      // libvirtd lets root on its unix socket past polkit after the client asks which auth it needs.
      const auth = (await this.send(socket, Proc.AuthList, encodeArgs(undefined), this.timeoutMs).reply).array((r) => r.i32());
      if (auth.length && !auth.includes(0)) throw unavailable(`libvirtd at ${this.socketPath} wants authentication (${auth.join(',')}); run the driver as root or use a virsh URI`);
      await this.send(socket, Proc.ConnectOpen, encodeArgs((w) => w.optionalString(this.uri).u32(0)), this.timeoutMs).reply;
      // Asking for the feature is what makes libvirtd ping this client too (remoteDispatchConnectSupportsFeature).
      if (this.keepalive) await this.send(socket, Proc.ConnectSupportsFeature, encodeArgs((w) => w.i32(FEATURE_PROGRAM_KEEPALIVE)), this.timeoutMs).reply;
    } catch (err) {
      socket.destroy();
      throw err;
    }
    if (this.closed) {
      socket.destroy();
      throw unavailable('the libvirt connection was closed');
    }
    if (socket.destroyed) throw unavailable(`the connection to libvirtd (${this.socketPath}) closed as it was opened`);
    this.socket = socket;
    log.debug('connected to libvirtd', { socket: this.socketPath, uri: this.uri, connection: this.generation });
    return socket;
  }

  private attach(socket: net.Socket, connection: number): void {
    const frames = new FrameAssembler();
    let lastHeard = performance.now();
    let unanswered = 0;
    socket.on('data', (chunk: Buffer) => {
      lastHeard = performance.now();
      unanswered = 0;
      let messages: Buffer[];
      try {
        messages = frames.push(chunk);
      } catch (err) {
        this.kill(socket, (err as Error).message);
        return;
      }
      for (const m of messages) this.receive(socket, m);
    });
    // Started with the socket, so a libvirtd that accepted the connection and then hung is found out during the handshake too.
    const ka = this.keepalive;
    // Looked at four times an interval: a ping goes after each whole interval of silence, and the
    // connection is given up after count + 1 intervals of it (count pings unanswered), within a quarter interval.
    const ticker = ka
      ? setInterval(() => {
          const silent = performance.now() - lastHeard;
          if (silent >= (ka.count + 1) * ka.intervalMs) {
            this.kill(socket, `libvirtd answered none of ${ka.count} keepalive pings (${((ka.intervalMs * (ka.count + 1)) / 1000).toFixed(1)} s without a word): declared dead`);
            return;
          }
          if (silent >= (unanswered + 1) * ka.intervalMs && unanswered < ka.count) {
            unanswered++;
            socket.write(frame(KEEPALIVE_PROGRAM, KEEPALIVE_PING, MessageType.Message, 0, encodeArgs(undefined)));
          }
        }, Math.max(1, ka.intervalMs / 4))
      : undefined;
    ticker?.unref();
    socket.on('error', (err) => log.warn('libvirt connection error', { socket: this.socketPath, err: err.message }));
    socket.on('close', () => {
      clearInterval(ticker);
      if (this.socket === socket) this.socket = null;
      const death = this.deaths.get(socket);
      const lost = unavailable(death ? `the connection to libvirtd (${this.socketPath}) was given up: ${death}` : `the connection to libvirtd (${this.socketPath}) was lost; libvirtd restarted or stopped`);
      for (const p of [...this.pending.values()]) if (p.socket === socket) p.reject(lost);
      for (const l of [...this.closeListeners]) l(connection);
    });
  }

  private kill(socket: net.Socket, why: string): void {
    if (socket.destroyed) return;
    this.deaths.set(socket, why);
    log.warn('libvirt connection given up', { socket: this.socketPath, why });
    socket.destroy();
  }

  private receive(socket: net.Socket, message: Buffer): void {
    const r = new XdrReader(message.subarray(4));
    const prog = r.u32();
    r.u32(); // version
    const proc = r.i32();
    const type = r.u32();
    const serial = r.u32();
    const status = r.u32();
    if (prog === KEEPALIVE_PROGRAM) {
      if (proc === KEEPALIVE_PING) socket.write(frame(KEEPALIVE_PROGRAM, KEEPALIVE_PONG, MessageType.Message, 0, encodeArgs(undefined)));
      return;
    }
    if (prog !== REMOTE_PROGRAM) return;
    if (type === MessageType.Message) {
      for (const l of [...this.listeners]) {
        try {
          l(proc, new XdrReader(message.subarray(HEADER_BYTES)));
        } catch (err) {
          log.warn('a libvirt event could not be read', { proc, err: String(err) });
        }
      }
      return;
    }
    if (type !== MessageType.Reply) return;
    const p = this.pending.get(serial);
    if (!p) return;
    this.pending.delete(serial);
    if (status === Status.Ok) {
      p.resolve(r);
      return;
    }
    try {
      const code = r.i32();
      const domain = r.i32();
      const text = r.optionalString() ?? `libvirt error ${code}`;
      p.reject(new LibvirtRpcError(code, domain, text));
    } catch {
      p.reject(new LibvirtRpcError(1, 0, 'libvirtd answered with an error it did not describe'));
    }
  }

  /**
   * Sends one call. `reply` is the caller's: it ends with the answer, or when the caller stops
   * waiting (its time or its signal). `settled` is the connection's: it ends only when libvirtd has
   * answered or the connection is gone, for libvirtd runs a call its client stopped waiting for.
   */
  private send(socket: net.Socket, proc: number, body: Buffer, timeoutMs: number): { reply: Promise<XdrReader>; settled: Promise<void> } {
    const signal = callSignal();
    if (signal?.aborted) return { reply: Promise.reject(new DriverError('cancelled', 'the call was cancelled or ran out of time before libvirt was asked')), settled: Promise.resolve() };
    // A socket that closed before this call was written would never answer it, and its close has already been told.
    if (socket.destroyed || !socket.writable) {
      const death = this.deaths.get(socket);
      return { reply: Promise.reject(unavailable(`the connection to libvirtd (${this.socketPath}) closed before procedure ${proc} was sent${death ? `: ${death}` : ''}`)), settled: Promise.resolve() };
    }
    const serial = this.serial++;
    if (this.serial > 0x7fffffff) this.serial = 1;
    const message = frame(REMOTE_PROGRAM, proc, MessageType.Call, serial, body);
    let settle!: () => void;
    const settled = new Promise<void>((resolve) => (settle = resolve));
    const reply = new Promise<XdrReader>((resolve, reject) => {
      let waiting = true;
      const stopWaiting = () => {
        waiting = false;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      };
      // libvirt goes on with what it was asked; the caller stops waiting, as with a killed virsh.
      const onAbort = () => {
        stopWaiting();
        reject(new DriverError('cancelled', `the call was cancelled or ran out of time while libvirt ran procedure ${proc}`));
      };
      const timer = setTimeout(() => {
        stopWaiting();
        reject(unavailable(`libvirtd did not answer procedure ${proc} within ${Math.round(timeoutMs) / 1000} s`));
      }, timeoutMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      const done = (fn: () => void) => {
        this.pending.delete(serial);
        settle();
        if (waiting) {
          stopWaiting();
          fn();
        }
      };
      this.pending.set(serial, { socket, resolve: (b) => done(() => resolve(b)), reject: (e) => done(() => reject(e)) });
      socket.write(message, (err) => {
        if (err) this.pending.get(serial)?.reject(unavailable(`procedure ${proc} could not be sent to libvirtd (${this.socketPath}): ${err.message}`));
      });
    });
    return { reply, settled };
  }
}
