/**
 * Byte ranges of a volume or snapshot, as the CSI SnapshotMetadata service reports them: `[start, end)`
 * pairs, ascending, never overlapping. Pure functions; the pools say where the ranges come from.
 */
import type { MappedExtent } from '../host/syscalls.js';

export type { MappedExtent };
export type ByteRange = readonly [start: number, end: number];

// FIEMAP_EXTENT_UNKNOWN | DELALLOC | ENCODED | DATA_ENCRYPTED | NOT_ALIGNED | DATA_INLINE | DATA_TAIL:
// where the data lies is not (or not only) the physical address, so two such extents are never taken as
// the same data, whatever address they give.
const ADDRESS_UNTRUSTED = 0x2 | 0x4 | 0x8 | 0x80 | 0x100 | 0x200 | 0x400;
/** FIEMAP_EXTENT_UNWRITTEN: allocated but reads as zeros, like a hole. */
export const EXTENT_UNWRITTEN = 0x800;

/** Adjacent and overlapping ranges made one; the input ascending by start. */
export function* merged(ranges: Iterable<ByteRange>): Generator<ByteRange> {
  let cur: [number, number] | undefined;
  for (const [s, e] of ranges) {
    if (e <= s) continue;
    if (cur && s <= cur[1]) cur[1] = Math.max(cur[1], e);
    else {
      if (cur) yield [cur[0], cur[1]];
      cur = [s, e];
    }
  }
  if (cur) yield [cur[0], cur[1]];
}

/** The ranges from `from` on (a range across `from` starts there), below `end`. */
export function* clipped(ranges: Iterable<ByteRange>, from: number, end: number): Generator<ByteRange> {
  for (const [s, e] of ranges) {
    const a = Math.max(s, from);
    const b = Math.min(e, end);
    if (a < b) yield [a, b];
  }
}

/** Ranges widened to whole `block`s (the granularity a reader restores by), merged, below `end`. */
export function* toBlocks(ranges: Iterable<ByteRange>, block: number, end: number): Generator<ByteRange> {
  yield* merged(
    (function* () {
      for (const [s, e] of ranges) yield [Math.floor(s / block) * block, Math.min(end, Math.ceil(e / block) * block)] as const;
    })(),
  );
}

/** The union of two ascending range lists. */
export function union(a: readonly ByteRange[], b: readonly ByteRange[]): ByteRange[] {
  return [...merged([...a, ...b].sort((x, y) => x[0] - y[0]))];
}

type Piece = { kind: 'zero' } | { kind: 'data'; physical: number; trusted: boolean };

/** What each byte range of [start, end) holds by a file's extents: zeros (a hole, an unwritten extent) or data at a physical address. */
function pieces(extents: readonly MappedExtent[], start: number, end: number): Array<{ start: number; end: number; piece: Piece }> {
  const out: Array<{ start: number; end: number; piece: Piece }> = [];
  let at = start;
  for (const x of [...extents].sort((p, q) => p.logical - q.logical)) {
    const s = Math.max(x.logical, at);
    const e = Math.min(x.logical + x.length, end);
    if (s >= end) break;
    if (s > at) out.push({ start: at, end: s, piece: { kind: 'zero' } });
    if (e > s) {
      const piece: Piece = x.flags & EXTENT_UNWRITTEN ? { kind: 'zero' } : { kind: 'data', physical: x.physical + (s - x.logical), trusted: (x.flags & ADDRESS_UNTRUSTED) === 0 };
      out.push({ start: s, end: e, piece });
      at = e;
    }
  }
  if (at < end) out.push({ start: at, end, piece: { kind: 'zero' } });
  return out;
}

/**
 * Where two files of one volume's history may differ, from their extent maps alone: a byte range is
 * unchanged when both read zeros there, or both map it to the same physical bytes (a reflink copy
 * shares the blocks no write has touched since); anything else, data moved, written or discarded, or
 * an address FIEMAP does not vouch for, is reported changed. So nothing that changed is missed;
 * what is reported and did not change is data rewritten with the same bytes. Over [start, end) of
 * the newer file (a grown volume: the base reads zeros past its own size); the extents may reach
 * outside it (a window of the files' maps).
 */
export function physicalDelta(base: readonly MappedExtent[], target: readonly MappedExtent[], baseSize: number, start: number, end: number): ByteRange[] {
  if (start >= end) return [];
  const a = start < baseSize ? pieces(base, start, Math.min(baseSize, end)) : [];
  if (baseSize < end) a.push({ start: Math.max(start, baseSize), end, piece: { kind: 'zero' } });
  const b = pieces(target, start, end);
  const changed: ByteRange[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const pa = a[i]!;
    const pb = b[j]!;
    const s = Math.max(pa.start, pb.start);
    const e = Math.min(pa.end, pb.end);
    if (s < e && !same(pa.piece, pa.start, pb.piece, pb.start, s)) changed.push([s, e]);
    if (pa.end <= pb.end) i++;
    else j++;
  }
  return [...merged(changed)];
}

function same(p: Piece, pStart: number, q: Piece, qStart: number, at: number): boolean {
  if (p.kind === 'zero' || q.kind === 'zero') return p.kind === q.kind;
  return p.trusted && q.trusted && p.physical + (at - pStart) === q.physical + (at - qStart);
}
