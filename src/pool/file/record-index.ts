import { closeSync, fstatSync, openSync, statSync, writeSync, type BigIntStats } from 'node:fs';
import { log } from '../../log.js';
import { readdir, readFile, rename } from 'node:fs/promises';
import { unlinkIfPresent } from './atomic.js';
import path from 'node:path';
import { Mutex } from 'async-mutex';
import { errno } from '../../errors.js';
import { isId, type IdKind } from '../../ids.js';

/** Names are listed after overlapping changes at most this often (verifyNames). */
const VERIFY_EVERY_MS = 1_000;

/** What a metadata file was when it was read: a rename over it, or a rewrite, changes one of these. */
interface Signature {
  ino: bigint;
  mtimeNs: bigint;
  size: bigint;
}

const sameSignature = (a: Signature | undefined, b: BigIntStats) => a !== undefined && a.ino === b.ino && a.mtimeNs === b.mtimeNs && a.size === b.size;

/**
 * The JSON records of one pool directory (`<id>.json`), held in memory so that a lookup or a listing
 * does not read a thousand files. The directory stays the source of truth:
 * - Every change a vpool process commits there (a rename or unlink of a record) is followed by one
 *   byte appended to `<dir>/.changes` (O_APPEND: atomic, no lock between processes), so the file's
 *   size counts the commits of every process on the pool. A size this index did not account for
 *   means another process changed the directory: it is listed and re-read (only the records whose
 *   file changed).
 * - The directory's own mtime catches what bypasses `.changes`: a person's `rm`, or a process that
 *   crashed between its commit and its append. (A change of that kind within the same clock tick as
 *   this process's last commit would go unseen until the next change; the kernel's timestamps are
 *   that coarse.)
 * - The index starts empty and is filled from the directory at first use, so a restart rebuilds it.
 *   `.changes` only grows, one byte a commit; it is never reset, so a count can never come round again.
 * Checking both costs two stat calls, whatever the number of records.
 */
export class RecordIndex<T extends { id: string }> {
  private readonly records = new Map<string, T>();
  private readonly signatures = new Map<string, Signature>();
  private sortedIds: string[] | null = null;
  /** Goes up whenever the records change, so derived figures know when to be computed again. */
  private changes = 0;
  /** The commit count and directory mtime the records are exact for; null: read the directory again. */
  private seen: { commits: number; dirMtimeNs: bigint } | null = null;
  /** This process's commits begun and not yet counted. */
  private inflight = 0;
  /** Whether two of them were under way at once since the last had ended. */
  private overlapped = false;
  private verifyTimer: NodeJS.Timeout | null = null;
  private lastVerify = -Infinity;
  private readonly changesFile: string;
  /** `.changes`, held open for appends (a commit costs one write, not an open, a write and a close). */
  private changesFd: { fd: number; ino: number } | null = null;
  /** One reload at a time. */
  private readonly mutex = new Mutex();

  constructor(
    private readonly dir: string,
    private readonly kind: IdKind,
  ) {
    this.changesFile = path.join(dir, '.changes');
  }

  /** The commits counted in `.changes` (its size). A file replaced under the open one is opened again at the next append. */
  private commits(): number {
    try {
      const st = statSync(this.changesFile);
      if (this.changesFd && this.changesFd.ino !== st.ino) this.closeChanges();
      return st.size;
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
      this.closeChanges();
      return 0;
    }
  }

  /** Counts one commit (O_APPEND: one atomic write, whichever processes append at once). */
  private countCommit(): void {
    if (!this.changesFd) {
      const fd = openSync(this.changesFile, 'a', 0o600);
      this.changesFd = { fd, ino: fstatSync(fd).ino };
    }
    writeSync(this.changesFd.fd, '.');
  }

  private closeChanges(): void {
    if (!this.changesFd) return;
    closeSync(this.changesFd.fd);
    this.changesFd = null;
  }

  private dirMtimeNs(): bigint {
    return statSync(this.dir, { bigint: true }).mtimeNs;
  }

  /**
   * While this process has commits in flight, the directory's mtime moves under it and says nothing:
   * only the count is compared, and the mtime is taken again when the last of them lands. A change
   * by hand, or by a process killed between its rename and its count, in a window where several of
   * this process's changes overlapped is caught by a listing of the names made when the window
   * closes (verifyNames), which makes the next read list the directory if they differ.
   */
  private exact(): boolean {
    return this.seen !== null && this.seen.commits === this.commits() && (this.inflight > 0 || this.seen.dirMtimeNs === this.dirMtimeNs());
  }

  /** Counts a change of this process beginning; true when another was already under way. */
  private begin(): void {
    if (++this.inflight > 1) this.overlapped = true;
  }

  /**
   * Counts it ended; when the last of overlapping changes ends, the names are checked, at most once
   * a second (a listing of a thousand names costs the event loop more than a create): a change by
   * hand in a busy second is seen within the next.
   */
  private end(): void {
    if (--this.inflight > 0 || !this.overlapped) return;
    this.overlapped = false;
    if (this.verifyTimer) return;
    const wait = Math.max(0, this.lastVerify + VERIFY_EVERY_MS - performance.now());
    this.verifyTimer = setTimeout(() => {
      this.verifyTimer = null;
      this.lastVerify = performance.now();
      void this.verifyNames();
    }, wait);
    this.verifyTimer.unref();
  }

  /** Lists the directory (names only) and compares it with the index: a difference makes the next read reload. */
  private async verifyNames(): Promise<void> {
    if (this.seen === null) return;
    const seen = this.seen;
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      this.seen = null;
      return;
    }
    // Only when nothing of this process changed the directory meanwhile (else the next window checks).
    if (this.seen !== seen && this.inflight > 0) return;
    const ids = names.filter((f) => f.endsWith('.json') && isId(this.kind, f.slice(0, -5)));
    if (ids.length !== this.records.size || ids.some((f) => !this.records.has(f.slice(0, -5)))) this.seen = null;
  }

  /** The records as the directory holds them now. */
  async all(): Promise<ReadonlyMap<string, T>> {
    if (!this.exact()) await this.mutex.runExclusive(() => (this.exact() ? undefined : this.reload()));
    return this.records;
  }

  async get(id: string): Promise<T | null> {
    return (await this.all()).get(id) ?? null;
  }

  /** The records ordered by ID. */
  async sorted(): Promise<T[]> {
    const all = await this.all();
    this.sortedIds ??= [...all.keys()].sort();
    return this.sortedIds.map((id) => all.get(id)!);
  }

  /**
   * Runs `commit` (the rename or unlink that makes the change), counts it in `.changes`, and folds
   * it into the index without reading the directory, when the index was exact before and no other
   * process committed meanwhile; otherwise the next read lists the directory again.
   * Commits of this process run at once (eight creates share their renames' waits): what follows the
   * rename is synchronous, so no other call of this process runs between the count read and the
   * append, and a commit of this process still in flight is counted when it lands. A reload that
   * overlaps a commit leaves `seen` at its own figures, which the count has passed: the next read
   * lists the directory again.
   */
  private async commit(commit: () => Promise<void>, apply: () => void): Promise<void> {
    const wasExact = this.exact();
    this.begin();
    try {
      await commit();
    } catch (err) {
      // Half a change may have landed: counted all the same (best effort), so that this process's
      // reads, a reload under way and the other processes all list the directory again.
      this.seen = null;
      try {
        this.countCommit();
      } catch {
        // the next read lists the directory anyway (seen is null)
      }
      throw err;
    } finally {
      this.end();
    }
    // The change is made: what follows is bookkeeping, which may fail (the count's file) without
    // undoing it; then the next read lists the directory.
    try {
      const before = this.commits();
      this.countCommit();
      if (wasExact && this.seen !== null && this.seen.commits === before && this.commits() === before + 1) {
        apply();
        this.changes++;
        this.sortedIds = null;
        this.seen = { commits: before + 1, dirMtimeNs: this.inflight === 0 ? this.dirMtimeNs() : this.seen.dirMtimeNs };
      } else {
        this.seen = null;
      }
    } catch (err) {
      this.seen = null;
      log.warn('counting a commit failed; the pool directory will be listed again', { dir: this.dir, error: String(err) });
    }
  }

  /**
   * Runs `change`, which adds or removes a file beside the records (a new volume's image, before its
   * record is committed), so that the directory's mtime moving under it does not read as another
   * process's change, and the index stays exact.
   */
  async alongside<T>(change: () => Promise<T>): Promise<T> {
    const wasExact = this.exact();
    this.begin();
    try {
      return await change();
    } finally {
      if (!wasExact || this.seen === null || this.seen.commits !== this.commits()) this.seen = null;
      else if (this.inflight === 1) this.seen = { ...this.seen, dirMtimeNs: this.dirMtimeNs() };
      this.end();
    }
  }

  /**
   * Commits a record written to `tmp` by renaming it into place, after `before` (moving in what the
   * record describes), so that this process's own rename does not read as another process's change.
   */
  async put(record: T, tmp: string, before: () => Promise<void> = async () => undefined): Promise<void> {
    const file = path.join(this.dir, `${record.id}.json`);
    await this.commit(
      async () => {
        await before();
        await rename(tmp, file);
      },
      () => {
        this.records.set(record.id, record);
        const st = statSync(file, { bigint: true });
        this.signatures.set(record.id, { ino: st.ino, mtimeNs: st.mtimeNs, size: st.size });
      },
    );
  }

  /**
   * Commits the removal of a record, then runs `afterwards` (removing what the record described)
   * before the directory's mtime is taken, so that this process's own cleanup does not read as
   * another process's change.
   */
  async remove(id: string, afterwards: () => Promise<void> = async () => undefined): Promise<void> {
    await this.commit(
      async () => {
        await unlinkIfPresent(path.join(this.dir, `${id}.json`));
        await afterwards();
      },
      () => {
        this.records.delete(id);
        this.signatures.delete(id);
      },
    );
  }

  private async reload(): Promise<void> {
    // Read the markers before listing: a change made while listing shows up as a mismatch next time.
    const commits = this.commits();
    const dirMtimeNs = this.dirMtimeNs();
    const ids = (await readdir(this.dir)).filter((f) => f.endsWith('.json') && isId(this.kind, f.slice(0, -5))).map((f) => f.slice(0, -5));
    const present = new Set(ids);
    for (const id of [...this.records.keys()]) {
      if (!present.has(id)) {
        this.records.delete(id);
        this.signatures.delete(id);
      }
    }
    const stale: string[] = [];
    for (const id of ids) {
      let st: BigIntStats;
      try {
        st = statSync(path.join(this.dir, `${id}.json`), { bigint: true });
      } catch (err) {
        if (errno(err) !== 'ENOENT') throw err;
        this.records.delete(id);
        continue;
      }
      if (!this.records.has(id) || !sameSignature(this.signatures.get(id), st)) {
        this.signatures.set(id, { ino: st.ino, mtimeNs: st.mtimeNs, size: st.size });
        stale.push(id);
      }
    }
    const read = await Promise.all(stale.map((id) => readJson<T>(path.join(this.dir, `${id}.json`))));
    stale.forEach((id, i) => {
      const rec = read[i];
      if (rec) this.records.set(id, rec);
      else {
        this.records.delete(id);
        this.signatures.delete(id);
      }
    });
    this.sortedIds = null;
    this.changes++;
    this.seen = { commits, dirMtimeNs };
  }

  /** Makes the next read list the directory (a caller found it holds what the index does not). */
  forget(): void {
    this.seen = null;
  }

  /** A number that changes whenever the records do (read after all()). */
  get version(): number {
    return this.changes;
  }

  /** Whether the next read lists the directory again (for tests and diagnostics). */
  get needsReload(): boolean {
    return !this.exact();
  }
}

export async function readJson<T>(file: string): Promise<T | null> {
  try {
    return JSON.parse(await readFile(file, 'utf8')) as T;
  } catch (err) {
    if (errno(err) === 'ENOENT') return null;
    throw err;
  }
}
