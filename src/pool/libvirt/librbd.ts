import { log } from '../../log.js';
import { onShutdown } from '../../shutdown-hooks.js';

/** The Ceph identity the controller may be given for an rbd pool: the cluster's conf, a cephx user and its keyring. */
export interface CephIdentity {
  conf: string;
  /** The cephx user without "client." (as `rbd --id` takes it). */
  user: string;
  keyring: string;
}

/** How a failed librados or librbd call ended, by its errno. */
export type RbdFailure = 'missing' | 'exists' | 'busy' | 'full' | 'denied' | 'unreachable' | 'other';

export class RbdError extends Error {
  constructor(
    readonly failure: RbdFailure,
    readonly errno: number,
    message: string,
  ) {
    super(message);
    this.name = 'RbdError';
  }
}

const ERRNO_NAMES: Record<number, string> = { 1: 'EPERM', 2: 'ENOENT', 13: 'EACCES', 16: 'EBUSY', 17: 'EEXIST', 22: 'EINVAL', 28: 'ENOSPC', 34: 'ERANGE', 39: 'ENOTEMPTY', 107: 'ENOTCONN', 108: 'ESHUTDOWN', 110: 'ETIMEDOUT', 111: 'ECONNREFUSED', 122: 'EDQUOT' };
const BY_ERRNO: Record<number, RbdFailure> = { 2: 'missing', 17: 'exists', 16: 'busy', 39: 'busy', 28: 'full', 122: 'full', 1: 'denied', 13: 'denied', 110: 'unreachable', 107: 'unreachable', 108: 'unreachable', 111: 'unreachable' };

/** A librados/librbd return code (-errno) as the driver's failure; connecting, a missing key or file is a refusal too. */
export function rbdFailureOf(ret: number, connecting = false): RbdFailure {
  const errno = -ret;
  if (connecting && (errno === 2 || errno === 1 || errno === 13 || errno === 22)) return 'denied';
  return BY_ERRNO[errno] ?? 'other';
}

function check(ret: number, what: string, connecting = false): number {
  if (ret >= 0) return ret;
  const errno = -ret;
  throw new RbdError(rbdFailureOf(ret, connecting), errno, `${what} failed: ${ERRNO_NAMES[errno] ?? `errno ${errno}`}`);
}

export interface RbdImageInfo {
  size: number;
  /** Seconds since the epoch. */
  createdAt?: number;
  parent?: { image: string; snapshot: string };
}

export interface RbdSnapshot {
  name: string;
  protected: boolean;
}

/** What the Ceph store asks of Ceph: images, their snapshots and clones, and the pool's room. */
export interface CephImages {
  readonly cephPool: string;
  images(): Promise<string[]>;
  info(image: string): Promise<RbdImageInfo | null>;
  snapshots(image: string): Promise<RbdSnapshot[]>;
  children(image: string): Promise<string[]>;
  create(image: string, bytes: number): Promise<void>;
  resize(image: string, bytes: number): Promise<void>;
  snapCreate(image: string, snap: string): Promise<void>;
  snapProtect(image: string, snap: string): Promise<void>;
  snapUnprotect(image: string, snap: string): Promise<void>;
  snapRemove(image: string, snap: string): Promise<void>;
  clone(image: string, snap: string, target: string): Promise<void>;
  flatten(image: string): Promise<void>;
  remove(image: string): Promise<void>;
  discardAll(image: string): Promise<void>;
  poolSpace(): Promise<{ stored: number; maxAvail: number; quotaBytes: number }>;
  close(): Promise<void>;
}

// Sizes of librbd's structs on the 64-bit ABIs koffi ships for (librbd.h, Ceph 16.2).
const LINKED_SPEC = 48; // int64 pool_id; char *pool_name, *pool_namespace, *image_id, *image_name; bool trash
const SNAP_SPEC = 24; // uint64 id; int namespace_type; char *name
const SNAP_INFO = 24; // uint64 id; uint64 size; const char *name
const MAX_DISCARD = 1 << 30; // rbd_discard returns the length as an int
// The features a clone may be asked for: given explicitly, librbd does not drop the ones it sets itself
// (operations, migrating, non-primary, data-pool, striping), and refuses them (EINVAL).
const CLONE_FEATURES = 1n | 4n | 8n | 16n | 32n | 64n; // layering, exclusive-lock, object-map, fast-diff, deep-flatten, journaling
/**
 * Calls as long as the data (a flatten, a removal, a discard) at once at most: they run on libuv's
 * threads (16, the launcher's UV_THREADPOOL_SIZE), which files, DNS and every other Ceph call share.
 */
const LONG_CALLS = 4;

type Fn = ((...args: unknown[]) => number) & { async: (...args: unknown[]) => void };

/** A call on one of koffi's worker threads (off the event loop); its return code. */
function onWorker(fn: Fn, ...args: unknown[]): Promise<number> {
  return new Promise((resolve, reject) => fn.async(...args, (err: unknown, ret: number) => (err ? reject(err) : resolve(ret))));
}

/**
 * librados and librbd (Debian's librbd1) in this process through koffi, on one held connection:
 * each `rbd` command would be a process and a new connection to the monitors (30-45 ms), and a call
 * runs several. Calls that talk to the cluster run on koffi's worker threads, off the event loop;
 * none can be cancelled, so every one is bounded by Ceph's own timeouts, set here (monitor 20 s,
 * OSD 60 s): a hung cluster is an error, never a call that waits on. Loaded on first use, so a
 * process without a Ceph identity never loads it.
 */
export class Librbd implements CephImages {
  private constructor(
    private readonly lib: Record<string, Fn>,
    private readonly koffi: typeof import('koffi'),
    private readonly cluster: unknown,
    private readonly io: unknown,
    readonly cephPool: string,
  ) {}

  static async connect(identity: CephIdentity, cephPool: string): Promise<Librbd> {
    let koffi: typeof import('koffi');
    let rados: ReturnType<typeof import('koffi').load>;
    let rbd: ReturnType<typeof import('koffi').load>;
    try {
      koffi = (await import('koffi')).default as unknown as typeof import('koffi');
      // koffi runs a worker call on a stack of its own, 128 KiB by default: librados connecting (DNS, cephx) and
      // librbd opening an image want more. Settable only before koffi loads its first library in this process.
      try {
        koffi.config({ ...koffi.config(), async_stack_size: 1 << 20 });
      } catch (err) {
        log.warn('cannot give koffi\'s worker calls a 1 MiB stack (a library was loaded before)', { err: String(err) });
      }
      rados = koffi.load('librados.so.2');
      rbd = koffi.load('librbd.so.1');
    } catch (err) {
      throw new Error(`a Ceph identity needs librados and librbd (Debian packages librados2 and librbd1): ${String(err)}`);
    }
    const lib: Record<string, Fn> = {};
    const def = (l: typeof rados, proto: string) => {
      const fn = l.func(proto) as unknown as Fn;
      lib[/(\w+)\(/.exec(proto)![1]!] = fn;
    };
    def(rados, 'int rados_create2(_Out_ void **cluster, const char *clustername, const char *name, uint64_t flags)');
    def(rados, 'int rados_conf_read_file(void *cluster, const char *path)');
    def(rados, 'int rados_conf_set(void *cluster, const char *option, const char *value)');
    def(rados, 'int rados_connect(void *cluster)');
    def(rados, 'void rados_shutdown(void *cluster)');
    def(rados, 'int rados_ioctx_create(void *cluster, const char *pool, _Out_ void **io)');
    def(rados, 'void rados_ioctx_destroy(void *io)');
    def(rados, 'int rados_mon_command(void *cluster, const char **cmd, size_t cmdlen, const char *inbuf, size_t inbuflen, _Out_ void **outbuf, _Out_ size_t *outlen, _Out_ void **outs, _Out_ size_t *outslen)');
    def(rados, 'void rados_buffer_free(void *buf)');
    def(rbd, 'int rbd_list(void *io, void *names, _Inout_ size_t *size)');
    def(rbd, 'int rbd_create(void *io, const char *name, uint64_t size, _Inout_ int *order)');
    def(rbd, 'int rbd_clone(void *pio, const char *pname, const char *psnap, void *cio, const char *cname, uint64_t features, _Inout_ int *order)');
    def(rbd, 'int rbd_remove(void *io, const char *name)');
    def(rbd, 'int rbd_open(void *io, const char *name, _Out_ void **image, const char *snap)');
    def(rbd, 'int rbd_close(void *image)');
    def(rbd, 'int rbd_resize(void *image, uint64_t size)');
    def(rbd, 'int rbd_get_size(void *image, _Out_ uint64_t *size)');
    def(rbd, 'int rbd_get_features(void *image, _Out_ uint64_t *features)');
    def(rbd, 'int rbd_get_parent(void *image, void *parent_image, void *parent_snap)');
    def(rbd, 'void rbd_linked_image_spec_cleanup(void *spec)');
    def(rbd, 'void rbd_snap_spec_cleanup(void *spec)');
    def(rbd, 'int rbd_get_create_timestamp(void *image, void *timespec)');
    def(rbd, 'int rbd_flatten(void *image)');
    def(rbd, 'int rbd_list_children3(void *image, void *images, _Inout_ size_t *max)');
    def(rbd, 'void rbd_linked_image_spec_list_cleanup(void *images, size_t n)');
    def(rbd, 'int rbd_snap_list(void *image, void *snaps, _Inout_ int *max)');
    def(rbd, 'int rbd_snap_get_namespace_type(void *image, uint64_t snap_id, _Out_ int *type)');
    def(rbd, 'void rbd_snap_list_end(void *snaps)');
    def(rbd, 'int rbd_snap_is_protected(void *image, const char *snap, _Out_ int *protected)');
    def(rbd, 'int rbd_snap_create(void *image, const char *snap)');
    def(rbd, 'int rbd_snap_remove(void *image, const char *snap)');
    def(rbd, 'int rbd_snap_protect(void *image, const char *snap)');
    def(rbd, 'int rbd_snap_unprotect(void *image, const char *snap)');
    def(rbd, 'int rbd_discard(void *image, uint64_t ofs, uint64_t len)');

    const out: unknown[] = [null];
    check(lib.rados_create2!(out, 'ceph', `client.${identity.user}`, 0), 'rados_create2');
    const cluster = out[0];
    try {
      check(lib.rados_conf_read_file!(cluster, identity.conf), `reading the Ceph configuration ${identity.conf}`);
      const conf: Record<string, string> = {
        keyring: identity.keyring,
        client_mount_timeout: '20',
        rados_mon_op_timeout: '20',
        rados_osd_op_timeout: '60',
        // Its failures reach the driver as return codes; nothing of Ceph's own logging on the driver's stderr or disk.
        log_to_stderr: 'false',
        err_to_stderr: 'false',
        log_file: '',
        admin_socket: '',
      };
      for (const [k, v] of Object.entries(conf)) check(lib.rados_conf_set!(cluster, k, v), `setting ${k}`);
      check(await onWorker(lib.rados_connect!, cluster), `connecting to Ceph as client.${identity.user}`, true);
      const io: unknown[] = [null];
      check(await onWorker(lib.rados_ioctx_create!, cluster, cephPool, io), `opening the Ceph pool ${cephPool}`);
      const conn = new Librbd(lib, koffi, cluster, io[0], cephPool);
      onShutdown(() => conn.close());
      return conn;
    } catch (err) {
      lib.rados_shutdown!(cluster);
      throw err;
    }
  }

  private inFlight = 0;
  private closed = false;
  private longRunning = 0;
  private readonly longQueue: Array<() => void> = [];

  /** A call on a worker, counted so the connection is never closed under it. */
  private async worker(name: string, ...args: unknown[]): Promise<number> {
    // An image opened before the close is still closed.
    if (this.closed && name !== 'rbd_close') throw new RbdError('unreachable', 108, 'the Ceph connection is closed (the driver is stopping)');
    this.inFlight++;
    try {
      return await onWorker(this.lib[name]!, ...args);
    } finally {
      this.inFlight--;
    }
  }

  private async call(name: string, what: string, ...args: unknown[]): Promise<number> {
    return check(await this.worker(name, ...args), what);
  }

  /** Runs a call as long as its data with at most LONG_CALLS others. */
  private async long<R>(run: () => Promise<R>): Promise<R> {
    if (this.longRunning >= LONG_CALLS) await new Promise<void>((r) => this.longQueue.push(r));
    this.longRunning++;
    try {
      return await run();
    } finally {
      this.longRunning--;
      this.longQueue.shift()?.();
    }
  }

  /** Opens an image for the length of `use`; null when it does not exist. */
  private async withImage<R>(image: string, use: (img: unknown) => Promise<R>): Promise<R | null> {
    const out: unknown[] = [null];
    const ret = await this.worker('rbd_open', this.io, image, out, null);
    if (ret === -2) return null;
    check(ret, `opening image ${image}`);
    try {
      return await use(out[0]);
    } finally {
      await this.worker('rbd_close', out[0]).catch((err: unknown) => log.warn('closing an rbd image failed', { image, err: String(err) }));
    }
  }

  private async withExisting<R>(image: string, use: (img: unknown) => Promise<R>): Promise<R> {
    const r = await this.withImage(image, use);
    if (r === null) throw new RbdError('missing', 2, `image ${this.cephPool}/${image} does not exist`);
    return r;
  }

  async images(): Promise<string[]> {
    for (let size = 4096; ; ) {
      const buf = Buffer.alloc(size);
      const len = [size];
      const ret = await this.worker('rbd_list', this.io, buf, len);
      if (ret === -34) {
        size = Math.max(Number(len[0]), size * 2);
        continue;
      }
      // Success returns the bytes written (names, each ended by a NUL); the size is left as given.
      check(ret, `listing the images of ${this.cephPool}`);
      return buf.subarray(0, ret).toString('utf8').split('\0').filter(Boolean);
    }
  }

  info(image: string): Promise<RbdImageInfo | null> {
    return this.withImage(image, async (img) => {
      const size: unknown[] = [0];
      await this.call('rbd_get_size', `size of ${image}`, img, size);
      const ts = Buffer.alloc(16);
      const created = (await this.worker('rbd_get_create_timestamp', img, ts)) === 0 ? Number(ts.readBigInt64LE(0)) : undefined;
      // No snapshot listing here: this is every listed volume's lookup, and only a removal needs them (snapshots()).
      return { size: Number(size[0]), createdAt: created, parent: await this.parentOf(img, image) };
    });
  }

  /** The image's parent in this Ceph pool (a parent elsewhere is not one of ours), from the open image. */
  private async parentOf(img: unknown, image: string): Promise<{ image: string; snapshot: string } | undefined> {
    const spec = Buffer.alloc(LINKED_SPEC);
    const snap = Buffer.alloc(SNAP_SPEC);
    const ret = await this.worker('rbd_get_parent', img, spec, snap);
    if (ret === -2) return undefined;
    check(ret, `parent of ${image}`);
    try {
      const pool = this.koffi.decode(spec, 8, 'const char *') as string;
      const parent = { image: this.koffi.decode(spec, 32, 'const char *') as string, snapshot: this.koffi.decode(snap, 16, 'const char *') as string };
      return pool === this.cephPool ? parent : undefined;
    } finally {
      this.lib.rbd_linked_image_spec_cleanup!(spec);
      this.lib.rbd_snap_spec_cleanup!(snap);
    }
  }

  /**
   * The image's user snapshots: librbd lists every namespace's (mirror, group, trash), and those
   * are Ceph's own, named in no user's namespace, and never the driver's to touch.
   */
  private async snapList(img: unknown): Promise<string[]> {
    for (let max = 16; ; ) {
      const buf = Buffer.alloc(SNAP_INFO * max);
      const n = [max];
      const ret = await this.worker('rbd_snap_list', img, buf, n);
      if (ret === -34) {
        max = Math.max(Number(n[0]), max * 2);
        continue;
      }
      check(ret, 'listing snapshots');
      let all: Array<{ id: bigint; name: string }>;
      try {
        all = Array.from({ length: ret }, (_, i) => ({ id: buf.readBigUInt64LE(SNAP_INFO * i), name: this.koffi.decode(buf, SNAP_INFO * i + 16, 'const char *') as string }));
      } finally {
        this.lib.rbd_snap_list_end!(buf);
      }
      const user: string[] = [];
      for (const s of all) {
        const type = [0];
        if ((await this.worker('rbd_snap_get_namespace_type', img, s.id, type)) === 0 && Number(type[0]) === 0) user.push(s.name);
      }
      return user;
    }
  }

  async snapshots(image: string): Promise<RbdSnapshot[]> {
    return this.withExisting(image, async (img) => {
      const out: RbdSnapshot[] = [];
      for (const name of await this.snapList(img)) {
        const p = [0];
        await this.call('rbd_snap_is_protected', `protection of ${image}@${name}`, img, name, p);
        out.push({ name, protected: Number(p[0]) === 1 });
      }
      return out;
    });
  }

  /** The images cloned from any snapshot of this one; clones in another pool as pool/image (they block its removal all the same). */
  async children(image: string): Promise<string[]> {
    return this.withExisting(image, async (img) => {
      for (let max = 16; ; ) {
        const buf = Buffer.alloc(LINKED_SPEC * max);
        const n = [max];
        const ret = await this.worker('rbd_list_children3', img, buf, n);
        if (ret === -34) {
          max = Math.max(Number(n[0]), max * 2);
          continue;
        }
        check(ret, `listing the clones of ${image}`);
        const count = Number(n[0]);
        try {
          return Array.from({ length: count }, (_, i) => {
            const pool = this.koffi.decode(buf, LINKED_SPEC * i + 8, 'const char *') as string;
            const name = this.koffi.decode(buf, LINKED_SPEC * i + 32, 'const char *') as string;
            return pool === this.cephPool ? name : `${pool}/${name}`;
          });
        } finally {
          if (count) this.lib.rbd_linked_image_spec_list_cleanup!(buf, count);
        }
      }
    });
  }

  async create(image: string, bytes: number): Promise<void> {
    await this.call('rbd_create', `creating ${image}`, this.io, image, bytes, [0]);
  }

  async resize(image: string, bytes: number): Promise<void> {
    await this.withExisting(image, (img) => this.call('rbd_resize', `resizing ${image}`, img, bytes));
  }

  async snapCreate(image: string, snap: string): Promise<void> {
    await this.withExisting(image, (img) => this.call('rbd_snap_create', `snapshot ${image}@${snap}`, img, snap));
  }

  async snapProtect(image: string, snap: string): Promise<void> {
    await this.withExisting(image, (img) => this.call('rbd_snap_protect', `protecting ${image}@${snap}`, img, snap));
  }

  /** Long: librbd looks for clones in every pool first. */
  async snapUnprotect(image: string, snap: string): Promise<void> {
    await this.long(() => this.withExisting(image, (img) => this.call('rbd_snap_unprotect', `unprotecting ${image}@${snap}`, img, snap)));
  }

  async snapRemove(image: string, snap: string): Promise<void> {
    await this.withExisting(image, (img) => this.call('rbd_snap_remove', `removing ${image}@${snap}`, img, snap));
  }

  /** A clone with its parent's features (a clone v1: the snapshot must be protected). */
  async clone(image: string, snap: string, target: string): Promise<void> {
    const features = await this.withExisting(image, async (img) => {
      const f: unknown[] = [0];
      await this.call('rbd_get_features', `features of ${image}`, img, f);
      return BigInt(f[0] as number | bigint) & CLONE_FEATURES;
    });
    await this.call('rbd_clone', `cloning ${image}@${snap} to ${target}`, this.io, image, snap, this.io, target, features, [0]);
  }

  async flatten(image: string): Promise<void> {
    await this.long(() => this.withExisting(image, (img) => this.call('rbd_flatten', `flattening ${image}`, img)));
  }

  async remove(image: string): Promise<void> {
    await this.long(() => this.call('rbd_remove', `removing ${image}`, this.io, image));
  }

  /** Discards the whole image: it reads zeros and its objects are freed. */
  async discardAll(image: string): Promise<void> {
    await this.long(() => this.discardWhole(image));
  }

  private async discardWhole(image: string): Promise<void> {
    await this.withExisting(image, async (img) => {
      const size: unknown[] = [0];
      await this.call('rbd_get_size', `size of ${image}`, img, size);
      const total = Number(size[0]);
      for (let at = 0; at < total; at += MAX_DISCARD) await this.call('rbd_discard', `discarding ${image}`, img, at, Math.min(MAX_DISCARD, total - at));
    });
  }

  /**
   * The pool's room from the monitors' `df`: `stored` (what its images hold, before replication),
   * `max_avail` (what can still be written, after its replication or erasure coding, the fullest
   * OSD its rule uses and the copies its objects really have now), and its byte quota (0: none),
   * which max_avail does not count.
   */
  async poolSpace(): Promise<{ stored: number; maxAvail: number; quotaBytes: number }> {
    const outbuf: unknown[] = [null];
    const outlen: unknown[] = [0];
    const outs: unknown[] = [null];
    const outslen: unknown[] = [0];
    const cmd = JSON.stringify({ prefix: 'df', detail: 'detail', format: 'json' });
    const ret = await this.worker('rados_mon_command', this.cluster, [cmd], 1, '', 0, outbuf, outlen, outs, outslen);
    let text = '';
    let said = '';
    try {
      if (ret >= 0 && outbuf[0] && Number(outlen[0]) > 0) text = this.koffi.decode(outbuf[0], 'char', Number(outlen[0])) as string;
      if (outs[0] && Number(outslen[0]) > 0) said = this.koffi.decode(outs[0], 'char', Number(outslen[0])) as string;
    } finally {
      if (outbuf[0]) this.lib.rados_buffer_free!(outbuf[0]);
      if (outs[0]) this.lib.rados_buffer_free!(outs[0]);
    }
    check(ret, `the monitors' df${said ? ` (${said})` : ''}`);
    const df = JSON.parse(text) as { pools: Array<{ name: string; stats: { stored?: number; bytes_used?: number; max_avail: number; quota_bytes?: number } }> };
    const p = df.pools.find((x) => x.name === this.cephPool);
    if (!p) throw new RbdError('missing', 2, `ceph df does not list the Ceph pool ${this.cephPool}`);
    return { stored: p.stats.stored ?? p.stats.bytes_used ?? 0, maxAvail: p.stats.max_avail, quotaBytes: p.stats.quota_bytes ?? 0 };
  }

  /**
   * On the way out: new calls are refused, those under way are waited for (the shutdown hooks'
   * bound ends the wait), then the connection goes, releasing its watches and locks at once
   * rather than after the OSDs' watch timeout. Left open while a call still runs in librbd.
   */
  async close(): Promise<void> {
    this.closed = true;
    while (this.inFlight > 0) await new Promise((r) => setTimeout(r, 50));
    this.lib.rados_ioctx_destroy!(this.io);
    this.lib.rados_shutdown!(this.cluster);
  }
}
