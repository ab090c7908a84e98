import { existsSync } from 'node:fs';
import { Semaphore } from 'async-mutex';
import { callSignal } from '../../../call-context.js';
import { DriverError, invalid, unavailable } from '../../../errors.js';
import { log } from '../../../log.js';
import { POOL_STATES, storageFailure, WIPE_ALGORITHM_NUMBERS, type Affect, type EventWatch, type Libvirt, type PoolInfo } from '../libvirt-api.js';
import { LibvirtMissingError, Virsh } from '../virsh.js';
import { LibvirtConnection, type ConnectionOptions, type Keepalive } from './connection.js';
import { LibvirtRpcError, Proc } from './protocol.js';
import type { XdrReader, XdrWriter } from './xdr.js';

/** remote_nonnull_domain: libvirtd finds a domain by its UUID, the name and id ride along. */
interface DomainRef {
  name: string;
  uuid: Buffer;
  id: number;
}

/** remote_nonnull_storage_pool: found by UUID. */
interface PoolRef {
  name: string;
  uuid: Buffer;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const DEVICE_REMOVED = 15; // VIR_DOMAIN_EVENT_ID_DEVICE_REMOVED
const XML_INACTIVE = 2; // VIR_DOMAIN_XML_INACTIVE
const BLOCK_RESIZE_BYTES = 1;
const TYPED_PARAM_ULLONG = 4; // VIR_TYPED_PARAM_ULLONG: remote_typed_param_value's discriminant

const readDomain = (r: XdrReader): DomainRef => ({ name: r.string(), uuid: Buffer.from(r.fixed(16)), id: r.i32() });
const writeDomain = (w: XdrWriter, d: DomainRef) => w.string(d.name).fixed(d.uuid).i32(d.id);
const writePool = (w: XdrWriter, p: PoolRef) => w.string(p.name).fixed(p.uuid);
// A volume is found by its pool's name and its own; the key is not consulted by the storage driver.
const writeVolume = (w: XdrWriter, pool: string, name: string) => w.string(pool).string(name).string('');
const affectFlags = (a: Affect) => (a.live ? 1 : 0) | (a.config ? 2 : 0);
const uuidText = (b: Buffer) => {
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
};

/**
 * The local libvirtd's unix socket for a URI, as libvirt's own client picks it (remote_sockets.c):
 * the modular virtqemud's socket where it exists, else the monolithic libvirtd's. Null for a URI
 * that is not the local system instance (ssh, tls, session): those go through virsh.
 */
export function localSocketFor(uri: string, runDir = '/run/libvirt'): string | null {
  const m = /^qemu(\+unix)?:\/\/\/system(\?socket=(\/[^&]+))?$/.exec(uri);
  if (!m) return null;
  if (m[3]) return m[3];
  const direct = `${runDir}/virtqemud-sock`;
  const legacy = `${runDir}/libvirt-sock`;
  return existsSync(direct) ? direct : legacy;
}

/**
 * The name libvirtd is asked to open: the URI as libvirt's remote driver sends it, without the
 * transport and the parameters the client itself consumed (`socket`). Sent whole, a `qemu+unix://`
 * name makes libvirtd open it with its own remote driver, a connection to itself, on which its main
 * loop blocks for ever when the client leaves (seen with libvirt 9.0).
 */
export const DAEMON_URI = 'qemu:///system';

export interface RpcLibvirtOptions {
  timeoutMs?: number;
  /** Default DEFAULT_KEEPALIVE; null: none. */
  keepalive?: Keepalive | null;
  /** Long jobs (copies, wipes) at once, each on a connection of its own; more wait their turn. */
  maxJobs?: number;
}

/**
 * libvirt over one held connection to the local libvirtd (its RPC protocol, in TypeScript): a call
 * costs a round trip on an open socket instead of a virsh process and a new connection. Jobs that
 * run for minutes (a volume copied or wiped) each take a connection of their own for their length,
 * so they never fill the held connection's requests in flight: lookups, attaches and capacity
 * answer while copies run. At most maxJobs of them run (libvirtd has max_workers threads, 20 by
 * default, for every client's calls); more wait here.
 */
export class RpcLibvirt implements Libvirt {
  readonly transport = 'rpc' as const;
  readonly virsh: Virsh;
  readonly connection: LibvirtConnection;
  private readonly jobs: Semaphore;

  constructor(
    readonly uri: string,
    private readonly socketPath: string,
    private readonly opts: RpcLibvirtOptions = {},
  ) {
    this.connection = new LibvirtConnection(socketPath, DAEMON_URI, this.connectionOptions());
    this.virsh = new Virsh(uri, opts.timeoutMs ?? 120_000);
    this.jobs = new Semaphore(opts.maxJobs ?? 8);
  }

  private connectionOptions(): ConnectionOptions {
    return { timeoutMs: this.opts.timeoutMs, keepalive: this.opts.keepalive };
  }

  /** Job connections opened so far (a test sees that a copy did not use the held connection). */
  jobConnections = 0;

  /** A missing object as the sentinel the backend expects; every other error as libvirt said it. */
  private async call(proc: Proc, args?: (w: XdrWriter) => void, timeoutMs?: number, on: LibvirtConnection = this.connection): Promise<XdrReader> {
    try {
      return await on.call(proc, args, { timeoutMs });
    } catch (err) {
      if (err instanceof LibvirtRpcError && err.missing) throw new LibvirtMissingError(err.message);
      throw (err instanceof LibvirtRpcError && storageFailure(err.message)) || err;
    }
  }

  /** One long call on a connection of its own, closed after it (libvirtd goes on with a job whose client left, as with a killed virsh). */
  private async job(proc: Proc, args: (w: XdrWriter) => void, timeoutMs: number): Promise<XdrReader> {
    const release = await this.jobTurn(proc, timeoutMs);
    const own = new LibvirtConnection(this.socketPath, DAEMON_URI, { ...this.connectionOptions(), maxInFlight: 1 });
    this.jobConnections++;
    try {
      return await this.call(proc, args, timeoutMs, own);
    } finally {
      // A job its caller stopped waiting for still runs in libvirtd: its turn (and its connection) end when libvirtd has answered.
      void own.idle().then(() => {
        own.close();
        release();
      });
    }
  }

  /** A turn among the jobs, waited for within the call's time and signal. */
  private jobTurn(proc: Proc, timeoutMs: number): Promise<() => void> {
    const signal = callSignal();
    return new Promise((resolve, reject) => {
      let given = false;
      const fail = (err: Error) => {
        if (given) return;
        given = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        reject(err);
      };
      const onAbort = () => fail(new DriverError('cancelled', `the call was cancelled while it waited for a turn among libvirt's long jobs (procedure ${proc})`));
      const timer = setTimeout(() => fail(unavailable(`no turn among libvirt's long jobs within ${timeoutMs / 1000} s for procedure ${proc}`)), timeoutMs);
      if (signal?.aborted) onAbort();
      else signal?.addEventListener('abort', onAbort, { once: true });
      void this.jobs.acquire().then(([, release]) => {
        // A turn that comes after its caller left is given back at once.
        if (given) return release();
        given = true;
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
        resolve(release);
      });
    });
  }

  private async maybe<T>(fn: () => Promise<T>): Promise<T | null> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof LibvirtMissingError) return null;
      throw err;
    }
  }

  async hostname(): Promise<string> {
    return (await this.call(Proc.ConnectGetHostname)).string();
  }

  private async pool(name: string): Promise<PoolRef> {
    const r = await this.call(Proc.StoragePoolLookupByName, (w) => w.string(name));
    return { name: r.string(), uuid: Buffer.from(r.fixed(16)) };
  }

  poolXml(pool: string): Promise<string | null> {
    return this.maybe(async () => {
      const p = await this.pool(pool);
      return (await this.call(Proc.StoragePoolGetXmlDesc, (w) => writePool(w, p).u32(0))).string();
    });
  }

  async poolInfo(pool: string): Promise<PoolInfo> {
    const p = await this.pool(pool);
    const r = await this.call(Proc.StoragePoolGetInfo, (w) => writePool(w, p));
    const state = r.u32(); // unsigned char, a 4-byte unit in XDR
    const info = { state: POOL_STATES[state] ?? `state ${state}`, capacity: r.u64Saturating(), allocation: r.u64Saturating(), available: r.u64Saturating() };
    return { ...info, running: info.state === 'running' };
  }

  async volumeNames(pool: string): Promise<string[]> {
    const p = await this.pool(pool);
    const r = await this.call(Proc.StoragePoolListAllVolumes, (w) => writePool(w, p).i32(1).u32(0));
    return r.array((v) => {
      v.string(); // pool
      const name = v.string();
      v.string(); // key
      return name;
    });
  }

  volumeXml(pool: string, name: string): Promise<string | null> {
    return this.maybe(async () => (await this.call(Proc.StorageVolGetXmlDesc, (w) => writeVolume(w, pool, name).u32(0))).string());
  }

  async createVolume(pool: string, xml: string): Promise<void> {
    const p = await this.pool(pool);
    await this.call(Proc.StorageVolCreateXml, (w) => writePool(w, p).string(xml).u32(0));
  }

  async createVolumeFrom(pool: string, xml: string, source: string, timeoutMs: number): Promise<void> {
    const p = await this.pool(pool);
    await this.job(Proc.StorageVolCreateXmlFrom, (w) => writeVolume(writePool(w, p).string(xml), pool, source).u32(0), timeoutMs);
  }

  async resizeVolume(pool: string, name: string, capacity: number): Promise<void> {
    await this.call(Proc.StorageVolResize, (w) => writeVolume(w, pool, name).u64(capacity).u32(0));
  }

  async wipeVolume(pool: string, name: string, algorithm: string, timeoutMs: number): Promise<void> {
    const alg = WIPE_ALGORITHM_NUMBERS[algorithm];
    if (alg === undefined) throw invalid(`unknown wipe algorithm ${algorithm}`);
    await this.job(Proc.StorageVolWipePattern, (w) => writeVolume(w, pool, name).u32(alg).u32(0), timeoutMs);
  }

  async deleteVolume(pool: string, name: string, opts: { withSnapshots?: boolean } = {}): Promise<void> {
    // VIR_STORAGE_VOL_DELETE_WITH_SNAPSHOTS
    await this.call(Proc.StorageVolDelete, (w) => writeVolume(w, pool, name).u32(opts.withSnapshots ? 2 : 0));
  }

  private async domain(id: string): Promise<DomainRef> {
    const r = UUID_RE.test(id)
      ? await this.call(Proc.DomainLookupByUuid, (w) => w.fixed(Buffer.from(id.replace(/-/g, ''), 'hex')))
      : await this.call(Proc.DomainLookupByName, (w) => w.string(id));
    return readDomain(r);
  }

  domainXml(domain: string, inactive = false): Promise<string | null> {
    return this.maybe(async () => {
      const d = await this.domain(domain);
      return (await this.call(Proc.DomainGetXmlDesc, (w) => writeDomain(w, d).u32(inactive ? XML_INACTIVE : 0))).string();
    });
  }

  async domainUuids(): Promise<string[]> {
    const r = await this.call(Proc.ConnectListAllDomains, (w) => w.i32(1).u32(0));
    return r.array(readDomain).map((d) => uuidText(d.uuid));
  }

  async attachDevice(domain: string, xml: string, affect: Affect): Promise<void> {
    const d = await this.domain(domain);
    await this.call(Proc.DomainAttachDeviceFlags, (w) => writeDomain(w, d).string(xml).u32(affectFlags(affect)));
  }

  async detachDevice(domain: string, xml: string, affect: Affect): Promise<void> {
    const d = await this.domain(domain);
    await this.call(Proc.DomainDetachDeviceFlags, (w) => writeDomain(w, d).string(xml).u32(affectFlags(affect)));
  }

  async blockResize(domain: string, target: string, bytes: number): Promise<void> {
    const d = await this.domain(domain);
    await this.call(Proc.DomainBlockResize, (w) => writeDomain(w, d).string(target).u64(bytes).u32(BLOCK_RESIZE_BYTES));
  }

  async setBlockIoTune(domain: string, target: string, fields: Record<string, number>, affect: Affect): Promise<void> {
    const d = await this.domain(domain);
    const entries = Object.entries(fields);
    await this.call(Proc.DomainSetBlockIoTune, (w) => {
      writeDomain(w, d).string(target).u32(entries.length);
      for (const [field, value] of entries) w.string(field).i32(TYPED_PARAM_ULLONG).u64(value);
      w.u32(affectFlags(affect));
    });
  }

  /**
   * A device-removed callback registered on the held connection for this one domain. It ends at
   * the time bound, at stop(), or when the connection is lost (the caller then reads the domain).
   */
  deviceRemoved(domain: string, timeoutMs: number): EventWatch {
    const lines: string[] = [];
    const waiting: Array<(line: string | null) => void> = [];
    let ended = false;
    let callbackId: number | null = null;
    let connection = -1;
    const push = (line: string | null) => {
      if (line === null) ended = true;
      const w = waiting.shift();
      if (w) w(line);
      else if (line !== null) lines.push(line);
      if (line === null) while (waiting.length) waiting.shift()!(null);
    };
    // Events read before the registration's reply has been handled (the reply and the first event
    // can come in one read) are held until the callback ID is known, then kept or dropped by it.
    let early: Array<{ id: number; alias: string }> | null = [];
    const offEvent = this.connection.onEvent((proc, body) => {
      if (proc !== Proc.DomainEventCallbackDeviceRemoved || ended) return;
      const id = body.i32();
      readDomain(body);
      const alias = body.string();
      if (early) early.push({ id, alias });
      else if (id === callbackId) push(alias);
    });
    const offClose = this.connection.onClose((lost) => {
      if (lost === connection) end();
    });
    const timer = setTimeout(() => end(), timeoutMs);
    const end = () => {
      clearTimeout(timer);
      offEvent();
      offClose();
      if (!ended) push(null);
    };
    const registered = (async () => {
      const d = await this.domain(domain);
      const r = await this.call(Proc.ConnectDomainEventCallbackRegisterAny, (w) => {
        w.i32(DEVICE_REMOVED).u32(1);
        writeDomain(w, d);
      });
      connection = this.connection.connections;
      callbackId = r.i32();
      const held = early ?? [];
      early = null;
      for (const e of held) if (e.id === callbackId && !ended) push(e.alias);
    })().catch((err: unknown) => {
      log.warn('cannot watch device-removed events; reading the domain instead', { domain, err: String(err) });
      end();
    });
    return {
      ready: registered.then(() => callbackId !== null && !ended),
      next: () => (lines.length ? Promise.resolve(lines.shift()!) : ended ? Promise.resolve(null) : new Promise((resolve) => waiting.push(resolve))),
      stop: async () => {
        end();
        await registered;
        if (callbackId !== null && connection === this.connection.connections) {
          const id = callbackId;
          await this.call(Proc.ConnectDomainEventCallbackDeregisterAny, (w) => w.i32(id)).catch(() => undefined);
        }
      },
    };
  }

  close(): void {
    this.connection.close();
  }
}
