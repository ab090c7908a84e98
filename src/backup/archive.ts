import { createHash } from 'node:crypto';
import { open, readdir, rename, rm, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { endFrame, frame, FrameReader, MAX_FRAME } from '../transfer/wire.js';

/**
 * A backup in a directory: one file per snapshot backed up, `<seq>-<snapshot>.vbk`, a full one first
 * (the snapshot's allocated blocks) and then increments (the blocks changed since the one before).
 * Each file: a header line (JSON: what it is of), a line with the header's SHA-256, then the blocks
 * as the transfer's frames ([offset u64][length u32][data], in order), and an end frame with the
 * SHA-256 of the frames. A file is written under a temporary name, synced, and renamed: one that is
 * there is whole.
 */
export interface ArchiveHeader {
  format: 'vpool-backup/1';
  /** The snapshot this file brings a volume to (its ID or, through the Kubernetes API, its handle if known, else its name). */
  snapshot: string;
  /** The snapshot the file applies on top of; null for a full backup. */
  base: string | null;
  /** The volume's size at this snapshot. */
  capacity: number;
  createdAt: string;
}

export interface ArchiveEntry {
  file: string;
  seq: number;
  header: ArchiveHeader;
}

const MAGIC = 'vpool-backup/1';
const NAME = /^(\d{6})-([A-Za-z0-9._-]{1,200})\.vbk$/;

export async function listArchive(dir: string): Promise<ArchiveEntry[]> {
  const names = (await readdir(dir)).filter((n) => NAME.test(n)).sort();
  const out: ArchiveEntry[] = [];
  for (const n of names) {
    const file = path.join(dir, n);
    out.push({ file, seq: Number(NAME.exec(n)![1]), header: await readHeader(file) });
  }
  return out;
}

async function readHeader(file: string): Promise<ArchiveHeader> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(64 * 1024);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const text = head.subarray(0, bytesRead).toString('latin1');
    const first = text.indexOf('\n');
    const second = text.indexOf('\n', first + 1);
    if (first < 0 || second < 0) throw new Error(`${file} has no header`);
    const json = text.slice(0, first);
    if (createHash('sha256').update(json).digest('hex') !== text.slice(first + 1, second)) throw new Error(`${file}: its header does not match its checksum`);
    const h = JSON.parse(json) as ArchiveHeader;
    if (h.format !== MAGIC || !Number.isSafeInteger(h.capacity) || h.capacity <= 0 || typeof h.snapshot !== 'string') throw new Error(`${file} is not a ${MAGIC} file`);
    return h;
  } finally {
    await fh.close();
  }
}

/** Where the frames of a file start. */
async function bodyOffset(file: string): Promise<number> {
  const fh = await open(file, 'r');
  try {
    const head = Buffer.alloc(64 * 1024);
    const { bytesRead } = await fh.read(head, 0, head.length, 0);
    const first = head.subarray(0, bytesRead).indexOf(10);
    const second = head.subarray(0, bytesRead).indexOf(10, first + 1);
    return second + 1;
  } finally {
    await fh.close();
  }
}

/** Writes one file of the archive; `commit` syncs and renames it into place, `abort` removes it. */
export class ArchiveWriter {
  private fh!: FileHandle;
  private readonly hash = createHash('sha256');
  private at = 0;
  private constructor(
    private readonly tmp: string,
    private readonly final: string,
  ) {}

  static async create(dir: string, seq: number, header: ArchiveHeader): Promise<ArchiveWriter> {
    const safe = header.snapshot.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 200);
    const final = path.join(dir, `${String(seq).padStart(6, '0')}-${safe}.vbk`);
    const w = new ArchiveWriter(`${final}.tmp`, final);
    // A run killed before its rename left this: never a file of the backup, and ours to replace.
    await rm(w.tmp, { force: true });
    w.fh = await open(w.tmp, 'wx', 0o600);
    try {
      const json = JSON.stringify(header);
      await w.write(Buffer.from(`${json}\n${createHash('sha256').update(json).digest('hex')}\n`));
    } catch (err) {
      await w.abort();
      throw err;
    }
    return w;
  }

  private async write(b: Buffer): Promise<void> {
    let done = 0;
    while (done < b.length) done += (await this.fh.write(b, done, b.length - done, this.at + done)).bytesWritten;
    this.at += b.length;
  }

  /** The bytes at `offset` of the volume, in order, each call after the one before. */
  async block(offset: number, data: Buffer): Promise<void> {
    for (let i = 0; i < data.length; i += MAX_FRAME) {
      const part = data.subarray(i, Math.min(data.length, i + MAX_FRAME));
      const h = frame({ offset: offset + i, data: part });
      this.hash.update(h);
      this.hash.update(part);
      await this.write(h);
      await this.write(part);
    }
  }

  async commit(): Promise<string> {
    await this.write(endFrame(this.hash.digest()));
    await this.fh.sync();
    await this.fh.close();
    await rename(this.tmp, this.final);
    const dir = await open(path.dirname(this.final), 'r');
    await dir.sync().finally(() => dir.close());
    return this.final;
  }

  async abort(): Promise<void> {
    await this.fh.close().catch(() => undefined);
    await rm(this.tmp, { force: true });
  }
}

/** Reads a file's frames and checks its end digest; `onBlock` sees each block (nothing, to verify only). */
export async function readArchive(entry: ArchiveEntry, onBlock: (offset: number, data: Buffer) => Promise<void>, onBytes?: (n: number) => void): Promise<void> {
  const reader = new FrameReader(entry.header.capacity, onBlock);
  const fh = await open(entry.file, 'r');
  try {
    let at = await bodyOffset(entry.file);
    const buf = Buffer.alloc(4 * 1024 * 1024);
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.length, at);
      if (!bytesRead) break;
      at += bytesRead;
      await reader.push(Buffer.from(buf.subarray(0, bytesRead)));
      onBytes?.(bytesRead);
    }
  } finally {
    await fh.close();
  }
  if (!reader.complete) throw new Error(`${entry.file} ends before its end frame: a file cut short`);
}

/** The chain of files that brings a blank volume to `upto` (default: the last): a full one, then each increment on the one before. */
export function chainTo(entries: readonly ArchiveEntry[], upto?: string): ArchiveEntry[] {
  const end = upto ? entries.findIndex((e) => e.header.snapshot === upto) : entries.length - 1;
  if (end < 0) throw new Error(upto ? `no file of the backup brings the volume to ${upto}` : 'the backup directory holds no file');
  const chain: ArchiveEntry[] = [];
  for (let i = end; ; ) {
    const e = entries[i]!;
    chain.unshift(e);
    if (e.header.base === null) return chain;
    const prev = entries.slice(0, i).reverse().find((x) => x.header.snapshot === e.header.base);
    if (!prev) throw new Error(`${path.basename(e.file)} applies on top of ${e.header.base}, which no earlier file of the backup brings the volume to`);
    if (prev.header.capacity > e.header.capacity) throw new Error(`${path.basename(e.file)} is of a smaller volume than the ${e.header.base} it applies on`);
    i = entries.indexOf(prev);
  }
}

