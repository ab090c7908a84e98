import net from 'node:net';
import { callSignal } from '../../../call-context.js';
import { DriverError, unavailable } from '../../../errors.js';
import { log } from '../../../log.js';
import { XdrReader, XdrWriter } from './xdr.js';

// libvirt's src/rpc/virnetprotocol.x and src/remote/remote_protocol.x (9.0)
export const REMOTE_PROGRAM = 0x20008086;
const REMOTE_VERSION = 1;
const KEEPALIVE_PROGRAM = 0x6b656570;
const KEEPALIVE_PING = 1;
const KEEPALIVE_PONG = 2;
const enum MessageType {
  Call = 0,
  Reply = 1,
  Message = 2,
}
const enum Status {
  Ok = 0,
  Error = 1,
}
const HEADER_BYTES = 4 + 24;
const MESSAGE_MAX = 33_554_432;

// virterror.h: the codes for "that object does not exist".
const MISSING_CODES = new Set([42 /* NO_DOMAIN */, 49 /* NO_STORAGE_POOL */, 50 /* NO_STORAGE_VOL */, 99 /* DEVICE_MISSING */]);

/** An error libvirtd answered a call with: its virErrorNumber and its message. */
export class LibvirtRpcError extends DriverError {
  constructor(
    readonly code: number,
    readonly domain: number,
    message: string,
  ) {
    super(MISSING_CODES.has(code) ? 'not-found' : 'internal', message);
  }
  override name = 'LibvirtRpcError';

  get missing(): boolean {
    return MISSING_CODES.has(this.code);
  }
}

export type EventListener = (proc: number, body: XdrReader) => void;

interface Pending {
  socket: net.Socket;
  resolve: (body: XdrReader) => void;
  reject: (err: Error) => void;
}

/**
 * One connection to libvirtd over its unix socket, speaking libvirt's RPC protocol: calls carry a
 * serial and are answered in any order, so many are in flight at once; events arrive as messages
 * on the same socket; libvirtd's keepalive pings are answered. When the socket closes (libvirtd
 * restarted or stopped) every call in flight fails as unavailable and the next call connects anew:
 * a caller never holds a dead connection, and the driver's retries go through once libvirtd is back.
 */
export class LibvirtConnection {
  private socket: net.Socket | null = null;
  private opening: Promise<net.Socket> | null = null;
  private serial = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<EventListener>();
  private readonly closeListeners = new Set<(connection: number) => void>();
  private generation = 0;
  private closed = false;

  constructor(
    readonly socketPath: string,
    /** The URI libvirtd is asked to open (qemu:///system). */
    readonly uri: string,
    private readonly timeoutMs = 120_000,
  ) {}

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
    const socket = await this.connected();
    return this.send(socket, proc, args, opts.timeoutMs ?? this.timeoutMs);
  }

  close(): void {
    this.closed = true;
    this.socket?.destroy();
    this.socket = null;
  }

  private async connected(): Promise<net.Socket> {
    if (this.closed) throw unavailable('the libvirt connection was closed');
    if (this.socket && !this.socket.destroyed) return this.socket;
    this.opening ??= this.open().finally(() => (this.opening = null));
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
      const auth = (await this.send(socket, Proc.AuthList, undefined, this.timeoutMs)).array((r) => r.i32());
      if (auth.length && !auth.includes(0)) throw unavailable(`libvirtd at ${this.socketPath} wants authentication (${auth.join(',')}); run the driver as root or use a virsh URI`);
      await this.send(socket, Proc.ConnectOpen, (w) => w.optionalString(this.uri).u32(0), this.timeoutMs);
    } catch (err) {
      socket.destroy();
      throw err;
    }
    this.socket = socket;
    log.debug('connected to libvirtd', { socket: this.socketPath, uri: this.uri, connection: this.generation });
    return socket;
  }

  private attach(socket: net.Socket, connection: number): void {
    let buffered: Buffer = Buffer.alloc(0);
    socket.on('data', (chunk: Buffer) => {
      buffered = buffered.length ? Buffer.concat([buffered, chunk]) : chunk;
      while (buffered.length >= 4) {
        const len = buffered.readUInt32BE(0);
        if (len < HEADER_BYTES || len > MESSAGE_MAX) {
          socket.destroy(new Error(`libvirtd sent a message of ${len} bytes`));
          return;
        }
        if (buffered.length < len) break;
        const message = buffered.subarray(0, len);
        buffered = buffered.subarray(len);
        this.receive(socket, message);
      }
    });
    socket.on('error', (err) => log.warn('libvirt connection error', { socket: this.socketPath, err: err.message }));
    socket.on('close', () => {
      if (this.socket === socket) this.socket = null;
      const lost = unavailable(`the connection to libvirtd (${this.socketPath}) was lost; libvirtd restarted or stopped`);
      for (const p of [...this.pending.values()]) if (p.socket === socket) p.reject(lost);
      for (const l of [...this.closeListeners]) l(connection);
    });
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
      if (proc === KEEPALIVE_PING) socket.write(frame(KEEPALIVE_PROGRAM, KEEPALIVE_PONG, MessageType.Message, 0, undefined));
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

  private send(socket: net.Socket, proc: number, args: ((w: XdrWriter) => void) | undefined, timeoutMs: number): Promise<XdrReader> {
    const signal = callSignal();
    if (signal?.aborted) return Promise.reject(new DriverError('cancelled', 'the call was cancelled or ran out of time before libvirt was asked'));
    const serial = this.serial++;
    if (this.serial > 0x7fffffff) this.serial = 1;
    return new Promise<XdrReader>((resolve, reject) => {
      let timer: NodeJS.Timeout | undefined;
      const onAbort = () => settle(() => reject(new DriverError('cancelled', `the call was cancelled or ran out of time while libvirt ran procedure ${proc}`)));
      const settle = (fn: () => void) => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        this.pending.delete(serial);
        fn();
      };
      this.pending.set(serial, { socket, resolve: (b) => settle(() => resolve(b)), reject: (e) => settle(() => reject(e)) });
      timer = setTimeout(() => settle(() => reject(unavailable(`libvirtd did not answer procedure ${proc} within ${timeoutMs / 1000} s`))), timeoutMs);
      // libvirt goes on with what it was asked; the caller stops waiting, as with a killed virsh.
      signal?.addEventListener('abort', onAbort, { once: true });
      socket.write(frame(REMOTE_PROGRAM, proc, MessageType.Call, serial, args));
    });
  }
}

function frame(prog: number, proc: number, type: MessageType, serial: number, args: ((w: XdrWriter) => void) | undefined): Buffer {
  const w = new XdrWriter();
  w.u32(0).u32(prog).u32(prog === REMOTE_PROGRAM ? REMOTE_VERSION : 1).i32(proc).u32(type).u32(serial).u32(Status.Ok);
  args?.(w);
  const buf = w.bytes();
  buf.writeUInt32BE(buf.length, 0);
  return buf;
}

/** The remote program's procedure numbers this driver calls (remote_protocol.x). */
export const enum Proc {
  ConnectOpen = 1,
  ConnectGetHostname = 59,
  DomainGetXmlDesc = 14,
  DomainLookupByName = 23,
  DomainLookupByUuid = 24,
  AuthList = 66,
  StoragePoolLookupByName = 84,
  StoragePoolGetInfo = 87,
  StoragePoolGetXmlDesc = 88,
  StorageVolCreateXml = 93,
  StorageVolDelete = 94,
  StorageVolGetXmlDesc = 99,
  StorageVolCreateXmlFrom = 125,
  DomainAttachDeviceFlags = 160,
  DomainDetachDeviceFlags = 161,
  DomainBlockResize = 251,
  StorageVolWipePattern = 259,
  StorageVolResize = 260,
  ConnectListAllDomains = 273,
  StoragePoolListAllVolumes = 282,
  ConnectDomainEventCallbackRegisterAny = 316,
  ConnectDomainEventCallbackDeregisterAny = 317,
  DomainEventCallbackDeviceRemoved = 333,
}
