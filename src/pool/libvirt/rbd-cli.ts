import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { CommandError, run } from '../../exec.js';

/** The Ceph identity the controller may be given for an rbd pool: the cluster's conf, a cephx user and its keyring. */
export interface CephIdentity {
  conf: string;
  /** The cephx user without "client." (as `rbd --id` takes it). */
  user: string;
  keyring: string;
}

/** How a failed rbd or ceph command ended, by the errno the tools exit with. */
export type RbdFailure = 'missing' | 'exists' | 'busy' | 'full' | 'denied' | 'unreachable' | 'other';

export class RbdError extends Error {
  constructor(
    readonly failure: RbdFailure,
    message: string,
  ) {
    super(message);
    this.name = 'RbdError';
  }
}

// rbd exits with the errno of what failed (its main returns -r); the ceph tool exits 1 for any
// failure to connect, timeouts included, so a failed connection is told by its words first.
const NO_CONNECTION = /couldn't connect to the cluster|error connecting to the cluster|failed to fetch mon config|unable to find a keyring|RADOS (timed out|permission denied|object not found)|conf_read_file/i;
const REFUSED = /\(13\)|\(1\) Operation not permitted|Permission denied|PermissionDenied|unable to find a keyring|\(2\) No such file|object not found|conf_read_file/i;

/** How a failed Ceph tool ended, from its words where they say it, else from its errno. */
export function rbdFailureOf(exitCode: number | undefined, stderr: string, timedOut: boolean): RbdFailure {
  if (timedOut) return 'unreachable';
  if (NO_CONNECTION.test(stderr)) return REFUSED.test(stderr) ? 'denied' : 'unreachable';
  return BY_ERRNO[exitCode ?? -1] ?? 'other';
}

const BY_ERRNO: Record<number, RbdFailure> = { 2: 'missing', 17: 'exists', 16: 'busy', 39: 'busy', 28: 'full', 122: 'full', 1: 'denied', 13: 'denied', 110: 'unreachable', 107: 'unreachable', 111: 'unreachable' };

export interface RbdImageInfo {
  size: number;
  /** Seconds since the epoch (rbd's create_timestamp). */
  createdAt?: number;
  parent?: { image: string; snapshot: string };
  snapshotCount: number;
}

export interface RbdSnapshot {
  name: string;
  protected: boolean;
}

/**
 * The `rbd` and `ceph` command-line tools against one Ceph pool, as the controller's own Ceph user,
 * through the one runner. Every call gives up on a monitor or OSD that does not answer well before
 * the runner's timeout, so a hung cluster is an error the caller sees, never a call that waits on.
 */
export class RbdCli {
  constructor(
    private readonly identity: CephIdentity,
    readonly cephPool: string,
  ) {}

  private common(): string[] {
    return [
      '--conf', this.identity.conf, '--id', this.identity.user, '--keyring', this.identity.keyring,
      // Ceph's own timeouts (default: wait for ever): a monitor or OSD that does not answer fails the command.
      '--client_mount_timeout', '20', '--rados_mon_op_timeout', '20', '--rados_osd_op_timeout', '60',
    ];
  }

  async run(tool: 'rbd' | 'ceph', args: string[], timeoutMs = 90_000): Promise<string> {
    try {
      // Never stopped half-way by a cancelled call: each command has its own bound, and what follows it (a clone's
      // flatten, the cleanup after a failure) must run to its end, or a retry would find half a step.
      return (await run(tool, [...this.common(), ...args], { timeoutMs, uninterruptible: true })).stdout;
    } catch (err) {
      if (!(err instanceof CommandError)) throw err;
      const failure = rbdFailureOf(err.exitCode, err.stderr, err.timedOut);
      // librbd logs a line per failing step: the last lines say what failed.
      const said = err.stderr.trim().split('\n').filter((l) => l.trim()).slice(-2).join(' / ');
      throw new RbdError(failure, `${tool} ${args.filter((a) => !a.startsWith('--')).slice(0, 3).join(' ')} ${err.timedOut ? 'timed out' : 'failed'}: ${said || err.message}`);
    }
  }

  private spec(image: string, snap?: string): string {
    return `${this.cephPool}/${image}${snap ? `@${snap}` : ''}`;
  }

  /** Every image's name (one read of the pool's directory, however many images). */
  async images(): Promise<string[]> {
    return JSON.parse(await this.run('rbd', ['ls', '--format', 'json', '--pool', this.cephPool])) as string[];
  }

  async info(image: string): Promise<RbdImageInfo | null> {
    try {
      const i = JSON.parse(await this.run('rbd', ['info', '--format', 'json', this.spec(image)])) as { size: number; create_timestamp?: string; parent?: { pool: string; image: string; snapshot: string }; snapshot_count?: number };
      const created = i.create_timestamp ? Date.parse(i.create_timestamp) : NaN;
      return {
        size: i.size,
        createdAt: Number.isFinite(created) ? created / 1000 : undefined,
        // A parent in another pool is not one of ours: only same-pool parents form our chains.
        parent: i.parent && i.parent.pool === this.cephPool ? { image: i.parent.image, snapshot: i.parent.snapshot } : undefined,
        snapshotCount: i.snapshot_count ?? 0,
      };
    } catch (err) {
      if (err instanceof RbdError && err.failure === 'missing') return null;
      throw err;
    }
  }

  async snapshots(image: string): Promise<RbdSnapshot[]> {
    const list = JSON.parse(await this.run('rbd', ['snap', 'ls', '--format', 'json', this.spec(image)])) as Array<{ name: string; protected?: string }>;
    return list.map((s) => ({ name: s.name, protected: s.protected === 'true' }));
  }

  /** The images cloned from any snapshot of this one (in this pool; clones in another pool block its removal all the same, and are counted). */
  async children(image: string): Promise<string[]> {
    const list = JSON.parse(await this.run('rbd', ['children', '--all', '--format', 'json', this.spec(image)])) as Array<{ pool: string; image: string }>;
    return list.map((c) => (c.pool === this.cephPool ? c.image : `${c.pool}/${c.image}`));
  }

  async create(image: string, bytes: number): Promise<void> {
    await this.run('rbd', ['create', '--size', `${bytes}B`, this.spec(image)]);
  }

  async resize(image: string, bytes: number): Promise<void> {
    await this.run('rbd', ['resize', '--no-progress', '--size', `${bytes}B`, this.spec(image)]);
  }

  async snapCreate(image: string, snap: string): Promise<void> {
    await this.run('rbd', ['snap', 'create', '--no-progress', this.spec(image, snap)]);
  }

  async snapProtect(image: string, snap: string): Promise<void> {
    await this.run('rbd', ['snap', 'protect', this.spec(image, snap)]);
  }

  async snapUnprotect(image: string, snap: string): Promise<void> {
    await this.run('rbd', ['snap', 'unprotect', this.spec(image, snap)]);
  }

  async snapRemove(image: string, snap: string): Promise<void> {
    await this.run('rbd', ['snap', 'rm', '--no-progress', this.spec(image, snap)]);
  }

  async clone(image: string, snap: string, target: string): Promise<void> {
    await this.run('rbd', ['clone', this.spec(image, snap), this.spec(target)]);
  }

  /** Copies what the image reads from its parent into it, so it has none; as long as the data is. */
  async flatten(image: string, timeoutMs: number): Promise<void> {
    await this.run('rbd', ['flatten', '--no-progress', this.spec(image)], timeoutMs);
  }

  async remove(image: string): Promise<void> {
    await this.run('rbd', ['rm', '--no-progress', this.spec(image)]);
  }

  /**
   * Discards the whole image (reads give zeros, its objects are freed): an rbd diff of one zero
   * extent, applied with import-diff, the one rbd tool that discards a range.
   */
  async discardAll(image: string, size: number, timeoutMs: number): Promise<void> {
    const header = Buffer.from('rbd diff v1\n', 'ascii');
    const rec = (tag: string, ...nums: number[]) => {
      const b = Buffer.alloc(1 + 8 * nums.length);
      b.write(tag, 0, 'ascii');
      nums.forEach((n, i) => b.writeBigUInt64LE(BigInt(n), 1 + 8 * i));
      return b;
    };
    const dir = await mkdtemp(path.join(tmpdir(), 'vpool-rbd-'));
    try {
      const file = path.join(dir, 'zero.diff');
      await writeFile(file, Buffer.concat([header, rec('s', size), rec('z', 0, size), Buffer.from('e', 'ascii')]));
      await this.run('rbd', ['import-diff', '--no-progress', file, this.spec(image)], timeoutMs);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }

  /**
   * The pool's room as Ceph reports it: `stored` (what its images hold, before replication),
   * `max_avail` (what can still be written to it, after its replication or erasure coding, the
   * fullest OSD its rule uses, and the copies its objects really have now), and its byte quota
   * (0: none), which max_avail does not count.
   */
  async poolSpace(): Promise<{ stored: number; maxAvail: number; quotaBytes: number }> {
    const df = JSON.parse(await this.run('ceph', ['df', 'detail', '--format', 'json'])) as { pools: Array<{ name: string; stats: { stored?: number; bytes_used?: number; max_avail: number; quota_bytes?: number } }> };
    const p = df.pools.find((x) => x.name === this.cephPool);
    if (!p) throw new RbdError('missing', `ceph df does not list the Ceph pool ${this.cephPool}`);
    return { stored: p.stats.stored ?? p.stats.bytes_used ?? 0, maxAvail: p.stats.max_avail, quotaBytes: p.stats.quota_bytes ?? 0 };
  }
}
