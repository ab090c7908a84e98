import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { syscalls } from '../../host/syscalls.js';
import { ALIGN, AlignedBuffers } from '../../host/aligned.js';

const SECTOR = 512;
const MDA_MAGIC = ' LVM2 x[5A%r0N*>';

/** Where the metadata stands on a PV now: its metadata area headers (hex) and the seqno of its current text. */
export interface PvMetadataVersion {
  headers: string;
  seqno: number | null;
}

export class PvReadTimeout extends Error {
  override name = 'PvReadTimeout';
}

// One read of a PV at a time, shared by every caller that comes while it is out: a PV that does not
// answer (a hung disk: the thread doing the read stays in the kernel until the device answers) holds
// one of libuv's threads, never one per caller. At most MAX_IN_FLIGHT reads run at once (more wait
// their turn within their callers' deadlines), so PVs that hang together (one HBA, one iSCSI target)
// take at most that many of libuv's threads (the entry point raises them from four to 16), never all
// the threads the process has for files, DNS and crypto. A read is stuck once a caller's deadline
// passed with it still out: later callers of that PV fail at once, and while MAX_STUCK reads are
// stuck no new read starts (the next may hang too).
const outstanding = new Map<string, Promise<PvMetadataVersion | null>>();
const stuck = new Set<string>();
const MAX_STUCK = 2;
const MAX_IN_FLIGHT = 4;
let inFlight = 0;
const turns: Array<() => void> = [];

/** The PVs whose reads are stuck now (past a caller's deadline, not come back). */
export function stuckPvReads(): string[] {
  return [...stuck];
}

async function inTurn<T>(work: () => Promise<T>): Promise<T> {
  if (inFlight >= MAX_IN_FLIGHT) await new Promise<void>((resolve) => turns.push(resolve));
  else inFlight++;
  try {
    return await work();
  } finally {
    const next = turns.shift();
    if (next) next();
    else inFlight--;
  }
}

/**
 * A PV's metadata area headers, read asynchronously (never on the event loop) within `deadlineMs`:
 * a PV that does not answer in time is a PvReadTimeout, and the calls, gRPC, health and metrics
 * of the process go on meanwhile. Null when the PV is readable but holds no LVM2 label and
 * metadata area. lvm's own on-disk format (format_text): only what tells that the metadata changed.
 */
export async function readPvMetadataVersion(pv: string, deadlineMs: number): Promise<PvMetadataVersion | null> {
  // Known stuck: no caller waits its deadline again for the same answer.
  if (stuck.has(pv)) throw new PvReadTimeout(`${pv}: its metadata headers were not read: a read of it is still out past its deadline (the device is not answering)`);
  let reading = outstanding.get(pv);
  if (!reading) {
    if (stuck.size >= MAX_STUCK) throw new PvReadTimeout(`${pv}: ${stuck.size} PVs have reads out that have not come back (${[...stuck].join(', ')}); not starting another`);
    const started = inTurn(() => readHeaders(pv)).finally(() => {
      outstanding.delete(pv);
      stuck.delete(pv);
    });
    outstanding.set(pv, started);
    reading = started;
  }
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      if (outstanding.get(pv) === reading) stuck.add(pv);
      reject(new PvReadTimeout(`${pv}: its metadata headers were not read within ${deadlineMs} ms (the device is not answering)`));
    }, deadlineMs);
  });
  try {
    return await Promise.race([reading, late]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reads around the page cache (O_DIRECT, as lvm does): a cached copy would answer for a disk that no
 * longer does, and say a hung PV is fine. Offsets, lengths and memory aligned to 4 KiB; where no
 * aligned memory can be had (koffi not loaded) or the file refuses O_DIRECT, through the cache.
 */
export class PvReader {
  private constructor(
    private readonly fh: FileHandle,
    private readonly buffers: AlignedBuffers | null,
  ) {}

  static async open(pv: string): Promise<PvReader> {
    const address = (await syscalls())?.address ?? null;
    if (address) {
      const fh = await open(pv, constants.O_RDONLY | constants.O_DIRECT).catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'EINVAL') return null;
        throw err;
      });
      if (fh) return new PvReader(fh, new AlignedBuffers(address, 0, 0));
    }
    return new PvReader(await open(pv, 'r'), null);
  }

  /** Whether reads go around the page cache (O_DIRECT with aligned memory). */
  get direct(): boolean {
    return this.buffers !== null;
  }

  /** `length` bytes at `position`, or null when the PV ends before them. */
  async read(position: number, length: number): Promise<Buffer | null> {
    if (!this.buffers) {
      const b = Buffer.alloc(length);
      return (await this.fh.read(b, 0, length, position)).bytesRead === length ? b : null;
    }
    const start = Math.floor(position / ALIGN) * ALIGN;
    const end = Math.ceil((position + length) / ALIGN) * ALIGN;
    const b = this.buffers.get(end - start);
    const { bytesRead } = await this.fh.read(b, 0, b.length, start);
    if (bytesRead < position - start + length) return null;
    return Buffer.from(b.subarray(position - start, position - start + length));
  }

  close(): Promise<void> {
    return this.fh.close();
  }
}

/**
 * The label (one of the first four sectors, "LABELONE", type "LVM2 001") points at the PV header,
 * whose second list of disk areas is the metadata areas; each starts with a 512-byte header (magic,
 * then the raw locations of the current metadata, with its checksum). With them, the seqno near
 * the start of the first area's current metadata text.
 */
async function readHeaders(pv: string): Promise<PvMetadataVersion | null> {
  let r: PvReader;
  try {
    r = await PvReader.open(pv);
  } catch {
    return null;
  }
  try {
    const head = await r.read(0, 4 * SECTOR);
    if (!head) return null;
    let label = -1;
    for (let s = 0; s < 4; s++) if (head.toString('latin1', s * SECTOR, s * SECTOR + 8) === 'LABELONE' && head.toString('latin1', s * SECTOR + 24, s * SECTOR + 32) === 'LVM2 001') label = s * SECTOR;
    if (label < 0) return null;
    // label_header: id[8], sector u64, crc u32, offset u32 (of the pv_header), type[8]; pv_header: uuid[32], device size u64, then the lists.
    let p = label + head.readUInt32LE(label + 20) + 32 + 8;
    const next = () => {
      if (p + 16 > head.length) return null;
      const area = { offset: head.readBigUInt64LE(p), size: head.readBigUInt64LE(p + 8) };
      p += 16;
      return area;
    };
    for (let a = next(); a && (a.offset || a.size); a = next());
    const headers: string[] = [];
    let seqno: number | null | undefined;
    for (let a = next(); a && (a.offset || a.size); a = next()) {
      const mda = await r.read(Number(a.offset), SECTOR);
      if (!mda || mda.toString('latin1', 4, 20) !== MDA_MAGIC) return null;
      headers.push(mda.toString('hex'));
      seqno ??= await readSeqno(r, mda, a);
    }
    return headers.length ? { headers: headers.join(','), seqno: seqno ?? null } : null;
  } catch {
    return null;
  } finally {
    await r.close();
  }
}

/**
 * mda_header: checksum u32, magic[16], version u32, start u64, size u64, then raw_locn { offset
 * u64 (from the area's start), size u64, checksum u32, flags u32 }: the current metadata text,
 * which opens with `<vg name> {`, its id, then `seqno = N`. Null if the text is not there whole.
 */
async function readSeqno(r: PvReader, mda: Buffer, area: { offset: bigint; size: bigint }): Promise<number | null> {
  const offset = mda.readBigUInt64LE(40);
  const size = mda.readBigUInt64LE(48);
  if (!size || offset + 256n > area.size) return null;
  const text = await r.read(Number(area.offset + offset), 256);
  if (!text) return null;
  const m = /^[^\n{]+\{\nid = "[^"]*"\nseqno = (\d+)\n/.exec(text.toString('latin1'));
  return m ? Number(m[1]) : null;
}
