import { notFound, precondition, unavailable } from '../../errors.js';
import type { SnapshotBlocks, SnapshotRecord } from '../backend.js';
import { clipped, type ByteRange } from '../block-ranges.js';
import { cowCopiedChunks, segmentsOf } from './cow-exceptions.js';
import { parseLvAttr } from './lv-attr.js';
import type { LvmCli } from './lvm-cli.js';
import type { ThinMetadata } from './thin-metadata.js';

interface SnapshotLv {
  name: string;
  uuid: string;
  thin: boolean;
  thinId: number;
  pool: string;
  sizeBytes: number;
}

/**
 * The lvm pool's snapshot metadata, from what LVM and the kernel keep anyway:
 * - thin snapshots: the thin pool's mappings (thin_dump for allocated, thin_delta between two
 *   snapshots), read from a metadata snapshot: the cost is reading the pool's metadata B-trees,
 *   not a byte of data. Exact to the pool's block (chunk, 64 KiB by default).
 * - thick (copy-on-write) snapshots: a thick LV keeps no map of what was ever written, so every
 *   byte counts as allocated; the delta from an older snapshot is the chunks its copy-on-write
 *   table copied aside (every chunk of the origin written since it was taken), a superset of what
 *   changed before the newer one, exact to the snapshot's chunk (4 KiB by default). Costs reading
 *   that table (16 bytes per changed chunk).
 */
export class LvmSnapshotBlocks implements SnapshotBlocks {
  constructor(
    private readonly lvm: LvmCli,
    private readonly vg: string,
    private readonly thin: ThinMetadata,
  ) {}

  async *allocated(snap: SnapshotRecord, from: number, _signal: AbortSignal): AsyncIterable<ByteRange> {
    const lvs = await this.lvsOf([snap.id]);
    const lv = lvs[0]!;
    if (!lv.thin) {
      if (from < lv.sizeBytes) yield [from, lv.sizeBytes];
      return;
    }
    const runs = await this.thin.mapped(lv.pool, lv.thinId, lv.sizeBytes);
    await this.unchanged(lvs);
    yield* clipped(runs.ranges, from, lv.sizeBytes);
  }

  async *delta(base: SnapshotRecord, target: SnapshotRecord, from: number, signal: AbortSignal): AsyncIterable<ByteRange> {
    const lvs = await this.lvsOf([base.id, target.id]);
    const [b, t] = [lvs[0]!, lvs[1]!];
    if (b.thin !== t.thin) throw precondition(`snapshots ${base.id} and ${target.id} are not both thin or both thick (a group cut an active thin volume copy-on-write): no map of their changes; take a full backup`);
    let ranges: ByteRange[];
    if (t.thin) {
      if (b.pool !== t.pool) throw precondition(`snapshots ${base.id} and ${target.id} are in different thin pools (${b.pool}, ${t.pool}): no map of their changes; take a full backup`);
      ranges = (await this.thin.changed(t.pool, b.thinId, t.thinId, t.sizeBytes)).ranges;
    } else ranges = await this.cowChanges(base.id, t.sizeBytes, signal);
    await this.unchanged(lvs);
    yield* clipped(ranges, from, t.sizeBytes);
  }

  /**
   * The LVs read are the ones looked up: a snapshot deleted meanwhile frees its thin device ID and its
   * extents for the next LV, whose mappings or table would have been read in its stead.
   */
  private async unchanged(before: SnapshotLv[]): Promise<void> {
    const now = await this.lvsOf(before.map((l) => l.name)).catch(() => null);
    if (!now || now.some((l, i) => l.uuid !== before[i]!.uuid || l.thinId !== before[i]!.thinId)) throw unavailable(`snapshot ${before.map((l) => l.name).join(' or ')} was deleted or replaced while its metadata was read; ask again`);
  }

  private async lvsOf(names: string[]): Promise<SnapshotLv[]> {
    const out = await this.lvm.exec('lvs', ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'lv_name,lv_uuid,lv_attr,lv_layout,thin_id,pool_lv,lv_size', ...names.map((n) => `${this.vg}/${n}`)]);
    const rows = (JSON.parse(out) as { report: Array<{ lv?: Array<Record<string, string>> }> }).report.flatMap((r) => r.lv ?? []);
    return names.map((n) => {
      const r = rows.find((x) => x.lv_name === n);
      if (!r) throw notFound(`snapshot ${n} has no LV`);
      const thin = (r.lv_layout ?? '').split(',').includes('thin');
      if (thin && !/^\d+$/.test(r.thin_id ?? '')) throw precondition(`snapshot ${n} has no thin device id`);
      if (!thin && parseLvAttr(r.lv_attr ?? '').volumeType !== 's') throw precondition(`LV ${n} is not a snapshot`);
      return { name: n, uuid: r.lv_uuid ?? '', thin, thinId: Number(r.thin_id), pool: r.pool_lv ?? '', sizeBytes: Number(r.lv_size) };
    });
  }

  /** The origin chunks the snapshot's copy-on-write table holds, read from the PVs under it. */
  private async cowChanges(snapshot: string, originBytes: number, signal: AbortSignal): Promise<ByteRange[]> {
    const segs = await this.lvm.exec('lvs', ['--reportformat', 'json', '--segments', '-o', 'lv_name,seg_start_pe,seg_pe_ranges', `${this.vg}/${snapshot}`]);
    const rows = (JSON.parse(segs) as { report: Array<{ seg?: Array<Record<string, string>> }> }).report.flatMap((r) => r.seg ?? []);
    rows.sort((a, b) => Number(a.seg_start_pe) - Number(b.seg_start_pe));
    const pvs = await this.lvm.exec('pvs', ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', 'pv_name,pe_start,vg_extent_size', '--select', `vg_name=${this.vg}`]);
    const pvRows = (JSON.parse(pvs) as { report: Array<{ pv?: Array<Record<string, string>> }> }).report.flatMap((r) => r.pv ?? []);
    const extentBytes = Number(pvRows[0]?.vg_extent_size);
    const starts = new Map(pvRows.map((p) => [p.pv_name!, Number(p.pe_start)]));
    const segments = rows.flatMap((r) => segmentsOf(r.seg_pe_ranges ?? '', (pv) => starts.get(pv)));
    return cowCopiedChunks(segments, extentBytes, originBytes, signal);
  }
}
