import { randomBytes } from 'node:crypto';
import * as fs from 'node:fs';
import { open, rename, rm, unlink, type FileHandle } from 'node:fs/promises';
import { errno } from '../../errors.js';
import path from 'node:path';

/** Opens a file for the length of `fn`, closing it however `fn` ends. */
async function withFile<T>(file: string, flags: string, fn: (fh: FileHandle) => Promise<T>, mode?: number): Promise<T> {
  const fh = await open(file, flags, mode);
  try {
    return await fn(fh);
  } finally {
    await fh.close();
  }
}

/** One callback-style fs call as a promise: cheaper per call than a FileHandle (no object to track and close). */
function fsCall<T>(fn: (cb: (err: NodeJS.ErrnoException | null, value: T) => void) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => fn((err, value) => (err ? reject(err) : resolve(value))));
}

/** Opens a new file (O_EXCL: never one already there, never through a symlink); its descriptor. */
export function createExclusive(file: string, mode = 0o600): Promise<number> {
  return fsCall<number>((cb) => fs.open(file, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_EXCL, mode, cb));
}

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // closing after a failure: the failure is what the caller reports
  }
}

/**
 * What a new file costs on the event loop, and why: a thread-pool trip costs a wake-up of a libuv
 * thread and one of the event loop (on a busy two-core node, the main thread preempted), far more
 * than these calls on a file just created on a local filesystem: sizing it (ftruncate of an empty
 * file: the inode only), writing a few hundred bytes to the page cache, closing it. They wait on the
 * disk only when the journal itself cannot take a change, which the one-byte count of a commit
 * (record-index.ts) already waits for on the event loop. The open (a directory lookup and an inode
 * to allocate, which may read the disk), the fsync and the rename stay on libuv's threads.
 *
 * Makes a new sparse file of `bytes` bytes (O_EXCL); removed again if it cannot be sized.
 */
export async function createSparse(file: string, bytes: number): Promise<void> {
  const fd = await createExclusive(file);
  let open = true;
  try {
    fs.ftruncateSync(fd, bytes);
    open = false; // closed or not, never closed twice: the number may be another file's by then
    fs.closeSync(fd);
  } catch (err) {
    if (open) closeQuietly(fd);
    await unlinkIfPresent(file);
    throw err;
  }
}

/** Writes `data` to a new temporary file in `tmpDir` and makes it durable; returns its path (none is left when it fails). */
export async function writeTempSynced(name: string, data: string, tmpDir: string): Promise<string> {
  const tmp = path.join(tmpDir, `${name}.${randomBytes(6).toString('hex')}`);
  const fd = await createExclusive(tmp);
  let open = true;
  try {
    const buf = Buffer.from(data);
    for (let off = 0; off < buf.length; ) off += fs.writeSync(fd, buf, off, buf.length - off);
    await fsCall<void>((cb) => fs.fsync(fd, (err) => cb(err, undefined)));
    open = false;
    fs.closeSync(fd);
  } catch (err) {
    if (open) closeQuietly(fd);
    await unlinkIfPresent(tmp);
    throw err;
  }
  return tmp;
}

/** Flushes a file's data (after a copy made by another program). */
export async function syncFile(file: string): Promise<void> {
  await withFile(file, 'r+', (fh) => fh.datasync());
}

/**
 * Makes renames and unlinks in a directory durable. Callers at once share the fsyncs (a group
 * commit): each waits for one that began after it asked, so eight creates at once cost two fsyncs
 * of the directory, not eight, and none returns before its own rename is on disk.
 */
export function syncDir(dir: string): Promise<void> {
  let g = groups.get(dir);
  if (!g) {
    g = { running: null, next: null, fh: null, dev: 0, ino: 0 };
    groups.set(dir, g);
  }
  const group = g;
  if (!group.running) {
    group.running = run(dir, group);
    return group.running;
  }
  // One is running, begun before this caller asked: wait for the one after it (shared by all who ask meanwhile).
  group.next ??= group.running.catch(() => undefined).then(() => {
    group.next = null;
    group.running = run(dir, group);
    return group.running;
  });
  return group.next;
}

interface SyncGroup {
  running: Promise<void> | null;
  next: Promise<void> | null;
  /** The directory, held open between syncs: a sync costs one fsync, not an open, an fsync and a close. */
  fh: FileHandle | null;
  /** The directory held (device and inode): one replaced or mounted over at the same path is opened again, never synced through the old one. */
  dev: number;
  ino: number;
}
const groups = new Map<string, SyncGroup>();
/** Directories held open at most (a pool has three or four); past it, each sync opens its own. */
const MAX_HELD = 32;

async function run(dir: string, group: SyncGroup): Promise<void> {
  try {
    const at = group.fh ? fs.statSync(dir) : null;
    if (group.fh && (at!.ino !== group.ino || at!.dev !== group.dev)) {
      const stale = group.fh;
      group.fh = null;
      await stale.close().catch(() => undefined);
    }
    if (!group.fh && [...groups.values()].filter((g) => g.fh).length < MAX_HELD) {
      const fh = await open(dir, 'r');
      const st = await fh.stat();
      group.dev = st.dev;
      group.ino = st.ino;
      group.fh = fh;
    }
    if (group.fh) {
      try {
        await group.fh.sync();
      } catch (err) {
        // A descriptor gone bad (the directory replaced, a filesystem remounted) is not kept: the next sync opens afresh.
        const fh = group.fh;
        group.fh = null;
        await fh.close().catch(() => undefined);
        throw err;
      }
    } else {
      await withFile(dir, 'r', (fh) => fh.sync());
    }
  } finally {
    if (!group.next) group.running = null;
  }
}

/** Writes a file so that readers see the old content or the new one, never a torn mix, even across a crash. */
export async function writeFileAtomic(file: string, data: string, tmpDir: string): Promise<void> {
  const tmp = await writeTempSynced(path.basename(file), data, tmpDir);
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(path.dirname(file));
}

/** Removes a file if it is there: one unlink (rm's force costs an lstat before it). */
export async function unlinkIfPresent(file: string): Promise<void> {
  try {
    await unlink(file);
  } catch (err) {
    if (errno(err) !== 'ENOENT') throw err;
  }
}
