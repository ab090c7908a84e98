import { cancelled, precondition, unavailable } from '../../errors.js';
import type { ByteRange } from '../block-ranges.js';
import { PvReader } from './pv-headers.js';

/** Where a run of an LV's extents lies: `count` extents from extent `firstPe` of `pv`, whose extents start `peStart` bytes in. */
export interface LvSegment {
  pv: string;
  peStart: number;
  firstPe: number;
  count: number;
}

const SNAPSHOT_MAGIC = 0x70416e53; // 'SnAp'
const EXCEPTION_BYTES = 16;
/** The largest map of copied chunks held: 512 MiB of origin chunks (4 TiB at 4 KiB chunks) in 128 MiB. */
const MAX_BITMAP_BYTES = 128 * 1024 * 1024;

/**
 * The origin chunks a thick (copy-on-write) snapshot has copied aside: every chunk of the origin
 * written since the snapshot was taken, as the kernel's persistent exception store keeps them on
 * the snapshot's LV (drivers/md/dm-snap-persistent.c: chunk 0 a header {magic, valid, version,
 * chunk size in sectors}, then areas of one chunk of {old_chunk, new_chunk} little-endian u64
 * pairs, each followed by the data chunks it maps; a new_chunk of 0 ends the table).
 *
 * Read from the PVs under the LV (O_DIRECT, as the kernel writes the table), so the snapshot need
 * not be active: an inactive one was last written when its origin was active. A chunk the kernel
 * is copying while this reads is found or not, but every write that completed before the read
 * began has its exception committed first, so none is missed.
 */
export async function cowCopiedChunks(segments: readonly LvSegment[], extentBytes: number, originBytes: number, signal?: AbortSignal): Promise<ByteRange[]> {
  const readers = new Map<string, PvReader>();
  try {
    const read = async (position: number, length: number): Promise<Buffer> => {
      // The table's offsets are the LV's: each read stays within one extent run (chunks divide extents).
      let pe = Math.floor(position / extentBytes);
      for (const s of segments) {
        if (pe < s.count) {
          let r = readers.get(s.pv);
          if (!r) {
            readers.set(s.pv, (r = await PvReader.open(s.pv)));
            // The kernel writes the table through device-mapper, which never refreshes the PV's page
            // cache: read through it, a table could be an older, shorter one and miss changed chunks.
            if (!r.direct) throw unavailable(`${s.pv} cannot be read around the page cache (O_DIRECT), so its copy-on-write table cannot be trusted; take a full backup`);
          }
          const at = s.peStart + (s.firstPe + pe) * extentBytes + (position % extentBytes);
          const b = await r.read(at, length);
          if (!b) throw unavailable(`${s.pv} ends before the copy-on-write table of the snapshot`);
          return b;
        }
        pe -= s.count;
      }
      throw unavailable('the copy-on-write table runs past the end of its snapshot');
    };
    const header = await read(0, 512);
    if (header.readUInt32LE(0) !== SNAPSHOT_MAGIC) throw unavailable('the snapshot has no copy-on-write header');
    if (header.readUInt32LE(4) !== 1) throw precondition('the snapshot is invalid (its copy-on-write reserve overflowed): what changed since it cannot be told; take a full backup');
    const chunkBytes = header.readUInt32LE(12) * 512;
    if (!chunkBytes || chunkBytes % 512) throw unavailable('the snapshot header gives no chunk size');
    const perArea = chunkBytes / EXCEPTION_BYTES;
    // One bit per origin chunk, not a number per exception: a large reserve holds tens of millions of them.
    const originChunks = Math.ceil(originBytes / chunkBytes);
    if (originChunks > MAX_BITMAP_BYTES * 8) throw precondition(`the origin has ${originChunks} chunks of ${chunkBytes} bytes: too many to map here; take a full backup`);
    const copied = new Uint8Array(Math.ceil(originChunks / 8));
    for (let area = 0; ; area++) {
      if (signal?.aborted) throw cancelled('the call was cancelled');
      const table = await read((1 + area * (perArea + 1)) * chunkBytes, chunkBytes);
      let full = true;
      for (let i = 0; i < perArea; i++) {
        const newChunk = table.readBigUInt64LE(i * EXCEPTION_BYTES + 8);
        if (newChunk === 0n) {
          full = false;
          break;
        }
        const old = table.readBigUInt64LE(i * EXCEPTION_BYTES);
        if (old < BigInt(originChunks)) copied[Number(old) >> 3]! |= 1 << (Number(old) & 7);
      }
      if (!full) break;
    }
    const out: Array<[number, number]> = [];
    for (let c = 0; c < originChunks; c++) {
      if (!copied[c >> 3]) {
        c |= 7; // a byte with no bit set: eight chunks at once
        continue;
      }
      if (!(copied[c >> 3]! & (1 << (c & 7)))) continue;
      const s = c * chunkBytes;
      const e = Math.min(originBytes, s + chunkBytes);
      const last = out[out.length - 1];
      if (last && last[1] >= s) last[1] = e;
      else out.push([s, e]);
    }
    return out;
  } finally {
    for (const r of readers.values()) await r.close().catch(() => undefined);
  }
}

/** lvm's seg_pe_ranges ("/dev/vda:64-79 /dev/vdb:0-9") with each PV's pe_start, as segments. */
export function segmentsOf(peRanges: string, peStart: (pv: string) => number | undefined): LvSegment[] {
  return peRanges
    .split(/\s+/)
    .filter(Boolean)
    .map((r) => {
      const m = /^(.+):(\d+)-(\d+)$/.exec(r);
      if (!m) throw unavailable(`cannot read the extent range ${JSON.stringify(r)}`);
      const start = peStart(m[1]!);
      if (start === undefined) throw unavailable(`no PV ${m[1]} in the volume group`);
      return { pv: m[1]!, peStart: start, firstPe: Number(m[2]), count: Number(m[3]) - Number(m[2]) + 1 };
    });
}
