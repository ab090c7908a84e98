import { closeSync, fstatSync, openSync, statSync, writeSync, type BigIntStats } from 'node:fs';
import { log } from '../../log.js';
import { readdir, readFile, rename } from 'node:fs/promises';
import { unlinkIfPresent } from './atomic.js';
import path from 'node:path';
import { Mutex } from 'async-mutex';
import { errno } from '../../errors.js';
import { isId, type IdKind } from '../../ids.js';

/** After any change of this process, the names are listed at most this often (verifyNames). */
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
  /** This process's changes begun and not yet counted, by record. */
  private readonly inflight = new Map<string, number>();
  /** A change of this process ended since the names were last checked. */
  private verifyPending = false;
  private verifyTimer: NodeJS.Timeout | null = null;
  private lastVerify = -Infinity;
  /** While the names are listed: every record this process changes meanwhile (left out of the comparison). */
  private verifyIgnore: Set<string> | null = null;
  /** Goes up whenever the index is found stale: a reload begun before does not mark it exact. */
  private invalidations = 0;
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
   * only the count is compared, and the mtime is taken again when the last of them lands. What the
   * mtime could not show meanwhile (a change by hand, or a record renamed in by another process
   * killed before it counted it) is caught by a listing of the names after this process's changes,
   * at most once a second (verifyNames): a difference makes the next read list the directory.
   */
  private exact(): boolean {
    return this.seen !== null && this.seen.commits === this.commits() && (this.inflight.size > 0 || this.seen.dirMtimeNs === this.dirMtimeNs());
  }

  /** A change of this process to the record `id` begins. */
  private begin(id: string): void {
    this.inflight.set(id, (this.inflight.get(id) ?? 0) + 1);
    this.verifyIgnore?.add(id);
  }

  /** It ended: the names are checked within a second. */
  private end(id: string): void {
    const n = (this.inflight.get(id) ?? 1) - 1;
    if (n > 0) this.inflight.set(id, n);
    else this.inflight.delete(id);
    this.verifyPending = true;
    this.scheduleVerify();
  }

  private scheduleVerify(): void {
    if (this.verifyTimer || !this.verifyPending) return;
    const wait = Math.max(0, this.lastVerify + VERIFY_EVERY_MS - performance.now());
    this.verifyTimer = setTimeout(() => {
      this.verifyTimer = null;
      this.lastVerify = performance.now();
      void this.verifyNames().finally(() => this.scheduleVerify());
    }, wait);
    this.verifyTimer.unref();
  }

  /**
   * Lists the directory (names only) and compares it with the index, leaving out the records this
   * process was changing at any time during the listing (their renames may land on either side of it).
   */
  private async verifyNames(): Promise<void> {
    this.verifyPending = false;
    if (this.seen === null) return; // the next read lists the directory anyway
    const ignore = new Set(this.inflight.keys());
    this.verifyIgnore = ignore;
    let names: string[];
    try {
      names = await readdir(this.dir);
    } catch {
      this.forget();
      return;
    } finally {
      this.verifyIgnore = null;
    }
    for (const id of this.inflight.keys()) ignore.add(id);
    const listed = new Set(names.filter((f) => f.endsWith('.json') && isId(this.kind, f.slice(0, -5))).map((f) => f.slice(0, -5)));
    for (const id of listed) if (!ignore.has(id) && !this.records.has(id)) return this.forget();
    for (const id of this.records.keys()) if (!ignore.has(id) && !listed.has(id)) return this.forget();
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
  private async commit(id: string, commit: () => Promise<void>, apply: () => void): Promise<void> {
    const wasExact = this.exact();
    this.begin(id);
    try {
      await commit();
    } catch (err) {
      // Half a change may have landed: counted all the same (best effort), so that this process's
      // reads, a reload under way and the other processes all list the directory again.
      this.forget();
      try {
        this.countCommit();
      } catch {
        // the next read lists the directory anyway (seen is null)
      }
      throw err;
    } finally {
      this.end(id);
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
        this.seen = { commits: before + 1, dirMtimeNs: this.inflight.size === 0 ? this.dirMtimeNs() : this.seen.dirMtimeNs };
      } else {
        this.forget();
      }
    } catch (err) {
      this.forget();
      log.warn('counting a commit failed; the pool directory will be listed again', { dir: this.dir, error: String(err) });
    }
  }

  /**
   * Commits a record written to `tmp` by renaming it into place, after `before` (moving in what the
   * record describes), so that this process's own rename does not read as another process's change.
   */
  async put(record: T, tmp: string, before: () => Promise<void> = async () => undefined): Promise<void> {
    const file = path.join(this.dir, `${record.id}.json`);
    await this.commit(
      record.id,
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
      id,
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
    const invalidations = this.invalidations;
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
    // Found stale while listing (forget()): not exact; the next read lists again.
    this.seen = invalidations === this.invalidations ? { commits, dirMtimeNs } : null;
  }

  /** Makes the next read list the directory (a caller found it holds what the index does not). */
  forget(): void {
    this.invalidations++;
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
