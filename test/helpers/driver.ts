import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, mkdir, readdir, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import assert from 'node:assert/strict';
import { after, afterEach, before } from 'node:test';
import { connectCsi, type CsiClient } from '../../src/csi/client.js';
import { PROJECT_ROOT } from '../../src/csi/proto.js';
import { listLoopDevices } from '../../src/host/loop.js';
import { readMounts } from '../../src/host/mounts.js';

const execFileP = promisify(execFile);

/** A channel that shares no subchannel (nor its connect backoff) with an earlier one to the same socket. */
export const FRESH_CHANNEL = { 'grpc.use_local_subchannel_pool': 1 };
/** The launcher operators use (node flags included), so tests measure and run what ships. */
export const BIN = path.join(PROJECT_ROOT, 'vpool-csi');

/** Privileged tests skip when not root, except in CI (VPOOL_TEST_REQUIRE_ROOT=1), where they must run. */
export function needsRoot(): { skip: string | false } {
  if (process.getuid?.() === 0) return { skip: false };
  if (process.env.VPOOL_TEST_REQUIRE_ROOT === '1') throw new Error('these tests need root and VPOOL_TEST_REQUIRE_ROOT=1 forbids skipping them');
  return { skip: 'needs root (loop devices, mount)' };
}

export interface Driver {
  dir: string;
  poolDir: string;
  mntDir: string;
  socket: string;
  endpoint: string;
  client: CsiClient;
  proc: ChildProcess;
  logs: string[];
  exited: Promise<number | null>;
  /** Stops the driver with a signal and waits for it. */
  stop(signal?: NodeJS.Signals): Promise<number | null>;
  /** Starts a fresh process on the same pool and socket (after a crash or stop). */
  restart(): Promise<Driver>;
}

export interface DriverOptions {
  dir?: string;
  args?: string[];
  /** --node-id to pass; null leaves the driver to find its own (a VM's product UUID). */
  nodeId?: string | null;
  /** Extra environment of the driver process. */
  env?: Record<string, string>;
  /** A command that runs the driver (ip netns exec NS, to start it in a network namespace). */
  wrap?: string[];
}

/** Starts the real binary on a real unix socket with its own pool and mount root. */
export async function startDriver(opts: DriverOptions = {}): Promise<Driver> {
  // Not tmpfs: loop devices with direct I/O need a real filesystem under the pool.
  const base = process.env.VPOOL_TEST_DIR ?? '/var/tmp';
  await mkdir(base, { recursive: true });
  const dir = opts.dir ?? (await mkdtemp(path.join(base, 'vpool-test-')));
  const poolDir = path.join(dir, 'pool');
  const mntDir = path.join(dir, 'mnt');
  await mkdir(mntDir, { recursive: true });
  const socket = path.join(dir, 'csi.sock');
  const endpoint = `unix://${socket}`;
  const nodeId = opts.nodeId === undefined ? 'test-node' : opts.nodeId;
  const args = ['serve', '--endpoint', endpoint, '--pool-dir', poolDir, '--allowed-root', mntDir, ...(nodeId === null ? [] : ['--node-id', nodeId]), ...(opts.args ?? [])];
  const { proc, client, logs, exited } = await launchDriver(socket, args, { env: opts.env, wrap: opts.wrap });
  const driver: Driver = {
    dir, poolDir, mntDir, socket, endpoint, client, proc, logs, exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      client.close();
      if (proc.exitCode === null) proc.kill(signal);
      return exited;
    },
    async restart() {
      return startDriver({ ...opts, dir });
    },
  };
  return driver;
}

export interface Launched {
  proc: ChildProcess;
  client: CsiClient;
  logs: string[];
  exited: Promise<number | null>;
}

/**
 * Spawns the real binary with these arguments and waits until its socket answers Probe. `wrap` is a
 * command that runs it (unshare ..., to start it in a mount namespace of its own).
 */
export async function launchDriver(socket: string, args: string[], opts: { env?: Record<string, string>; wrap?: string[] } = {}): Promise<Launched> {
  const argv = [...(opts.wrap ?? []), BIN, ...args];
  const proc = spawn(argv[0], argv.slice(1), { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...opts.env } });
  const logs: string[] = [];
  let buf = '';
  proc.stderr?.on('data', (d: Buffer) => {
    buf += d.toString();
    const lines = buf.split('\n');
    buf = lines.pop() ?? '';
    logs.push(...lines);
  });
  const exited = new Promise<number | null>((resolve) => proc.once('exit', (code) => resolve(code)));
  let client = connectCsi(`unix://${socket}`, undefined, FRESH_CHANNEL);
  // Generous: under QEMU's TCG emulation, beside a busy host, node alone takes seconds to load the
  // driver, and two drivers starting at once in a two-CPU VM have been seen to take 90 s to answer.
  const started = Date.now();
  const deadline = started + 180_000;
  let last: unknown;
  let socketAt: number | undefined;
  let probes = 0;
  for (;;) {
    try {
      await stat(socket);
      socketAt ??= Date.now();
      probes++;
      await client.probe({}, { deadline: Date.now() + 10_000 });
      return { proc, client, logs, exited };
    } catch (err) {
      last = err;
      // A fresh channel for the next try: grpc-js backs off a channel that failed to connect (a
      // killed driver's socket file refuses until the new process binds it) for longer each time.
      client.close();
      if (proc.exitCode !== null || Date.now() > deadline) {
        if (proc.exitCode === null) proc.kill('SIGKILL');
        const socketSeen = socketAt === undefined ? 'its socket never appeared' : `its socket appeared after ${((socketAt - started) / 1000).toFixed(1)} s; ${probes} Probes failed since`;
        throw new Error(`driver did not start in ${((Date.now() - started) / 1000).toFixed(0)} s (exit ${proc.exitCode}; ${socketSeen}; last probe: ${String(last)}):\n${[...logs, buf].join('\n')}`);
      }
      client = connectCsi(`unix://${socket}`, undefined, FRESH_CHANNEL);
      await new Promise((r) => setTimeout(r, 50));
    }
  }
}

/** What a test may leave behind: nothing. Loop devices on the pool, mounts under the test dir, images. */
export async function leftovers(d: Driver): Promise<string[]> {
  const found: string[] = [];
  // An error the CSI edge had no kind for is a bug to fix, not an INTERNAL to ship (src/csi/rpc.ts).
  for (const l of d.logs) if (l.includes('"unmapped":true')) found.push(`unmapped error: ${l.slice(0, 400)}`);
  for (const l of await listLoopDevices()) if (l.backingFile.startsWith(d.dir + '/')) found.push(`loop ${l.device} -> ${l.backingFile}`);
  for (const m of await readMounts()) if (m.mountPoint.startsWith(d.dir + '/')) found.push(`mount ${m.mountPoint}`);
  for (const sub of ['volumes', 'snapshots', '.tmp']) {
    // .changes counts commits (src/pool/file/record-index.ts): bookkeeping of the pool, not a volume's file.
    for (const f of await readdir(path.join(d.poolDir, sub)).catch(() => [])) if (f !== '.changes') found.push(`pool file ${sub}/${f}`);
  }
  return found;
}

/**
 * Stops the driver and returns what it left behind (the caller asserts it is nothing), then
 * clears even a failed test's mounts and loop devices so the next test starts clean.
 */
export async function finish(d: Driver): Promise<string[]> {
  const left = await leftovers(d);
  await d.stop();
  const mounts = (await readMounts()).filter((m) => m.mountPoint.startsWith(d.dir + '/')).reverse();
  for (const m of mounts) await execFileP('umount', ['-l', m.mountPoint]).catch(() => undefined);
  for (const l of await listLoopDevices()) {
    if (l.backingFile.startsWith(d.dir + '/')) await execFileP('losetup', ['-d', l.device]).catch(() => undefined);
  }
  await rm(d.dir, { recursive: true, force: true });
  return left;
}

export async function sha256File(file: string): Promise<string> {
  return createHash('sha256').update(await readFile(file)).digest('hex');
}

export async function tempDir(prefix: string): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), prefix));
}

/** A deterministic pattern of `bytes` bytes, different for each seed. */
export function pattern(seed: string, bytes: number): Buffer {
  const out = Buffer.alloc(bytes);
  let block = createHash('sha256').update(seed).digest();
  for (let off = 0; off < bytes; off += block.length) {
    block.copy(out, off);
    block = createHash('sha256').update(block).digest();
  }
  return out;
}

/** The gRPC status name an RPC failed with (or 'OK'), for asserting exact codes. */
export function codeOf(p: Promise<unknown>): Promise<string> {
  // Handled at once: a call that fails before its turn to be awaited is not an unhandled rejection.
  const outcome = p.then(
    () => ({ ok: true as const }),
    (err: unknown) => ({ ok: false as const, err }),
  );
  return (async () => {
    const { status } = await import('@grpc/grpc-js');
    const o = await outcome;
    if (o.ok) return 'OK';
    const code = (o.err as { code?: number }).code;
    return code === undefined ? `not a gRPC error: ${String(o.err)}` : status[code];
  })();
}

export const MiB = 1024 * 1024;

/**
 * The hooks of a suite that shares one driver: started before its tests, checked after each test
 * for anything left behind, stopped and checked again at the end.
 */
export function useDriver(set: (d: Driver) => void, opts: DriverOptions = {}): void {
  let d: Driver;
  before(async () => {
    d = await startDriver(opts);
    set(d);
  });
  afterEach(async () => {
    assert.deepEqual(await leftovers(d), [], 'each test leaves no loop device, mount or pool file');
  });
  after(async () => {
    assert.deepEqual(await finish(d), [], 'nothing may be left behind');
  });
}
