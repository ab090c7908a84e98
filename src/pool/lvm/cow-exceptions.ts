import { precondition, unavailable } from '../../errors.js';
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
/** An exception table past this many entries is not read: more than a 64 TiB origin's worth of 4 KiB chunks could hold. */
const MAX_EXCEPTIONS = 2 ** 34;

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
export async function cowCopiedChunks(segments: readonly LvSegment[], extentBytes: number, originBytes: number): Promise<ByteRange[]> {
  const readers = new Map<string, PvReader>();
  try {
    const read = async (position: number, length: number): Promise<Buffer> => {
      // The table's offsets are the LV's: each read stays within one extent run (chunks divide extents).
      let pe = Math.floor(position / extentBytes);
      for (const s of segments) {
        if (pe < s.count) {
          let r = readers.get(s.pv);
          if (!r) readers.set(s.pv, (r = await PvReader.open(s.pv)));
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
    const chunks: number[] = [];
    for (let area = 0; chunks.length < MAX_EXCEPTIONS; area++) {
      const table = await read((1 + area * (perArea + 1)) * chunkBytes, chunkBytes);
      let full = true;
      for (let i = 0; i < perArea; i++) {
        const newChunk = table.readBigUInt64LE(i * EXCEPTION_BYTES + 8);
        if (newChunk === 0n) {
          full = false;
          break;
        }
        chunks.push(Number(table.readBigUInt64LE(i * EXCEPTION_BYTES)));
      }
      if (!full) break;
    }
    chunks.sort((a, b) => a - b);
    const out: Array<[number, number]> = [];
    for (const c of chunks) {
      const s = c * chunkBytes;
      if (s >= originBytes) continue;
      const e = Math.min(originBytes, s + chunkBytes);
      const last = out[out.length - 1];
      if (last && last[1] >= s) last[1] = Math.max(last[1], e);
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
