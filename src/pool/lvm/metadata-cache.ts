import type { LvmCli, LvmState, LvRow } from './lvm-cli.js';

/**
 * What the pool reads of its VG: the VG row and its LVs. PV rows are left out: which of several PVs
 * lvm allocates from is its policy's choice, so a fold could not say how their free space moved,
 * and the pool needs the VG's totals only.
 */
export type VgMetadata = Omit<LvmState, 'pvs'>;

interface Held {
  /** The metadata area headers read before the report the state came from. */
  fingerprint: string;
  /** The seqno those headers' text carried; the state is that version when it equals the state's own. */
  seqno: number | null;
  state: VgMetadata;
}

/**
 * A VG's metadata held in memory while the metadata on its PVs is unchanged. The disks are the
 * truth: every read compares the metadata area headers (a few preads, no lvm) with those the held
 * state was read under, and any commit by any process changes them, so the next read is a fresh
 * `lvm fullreport`. A commit of the driver's own (an lvcreate or lvremove it ran) is folded into
 * the held state instead, but only when the disks show exactly one commit since that state
 * (seqno + 1): had anything else committed in between, the fold is refused and the next read goes
 * to lvm. Only what the metadata holds is kept (names, sizes, tags, origins); activation, open
 * counts and health come from device-mapper and are read fresh where they matter.
 */
export class MetadataCache {
  private held?: Held;

  constructor(
    private readonly lvm: LvmCli,
    private readonly vg: string,
  ) {}

  async read(): Promise<VgMetadata> {
    const before = this.lvm.metadataVersion();
    if (before !== null && this.held?.fingerprint === before.fingerprint) return this.held.state;
    // Callers that find the same headers share one report (8 creates at once make one fullreport, not 8):
    // with the headers unchanged since that report began, no commit can be missing from it.
    if (before !== null && this.reading?.fingerprint === before.fingerprint) return this.reading.state;
    const state = this.lvm.state(this.vg).then(({ vg, lvs }) => ({ vg, lvs }));
    const reading = before === null ? undefined : { fingerprint: before.fingerprint, state };
    this.reading = reading;
    try {
      const read = await state;
      // Keyed by the headers read before the report: a commit in between makes the key stale, never the state.
      const newer = this.held && this.held.seqno !== null && before?.seqno != null && this.held.seqno > before.seqno;
      if (!newer) this.held = before === null ? undefined : { fingerprint: before.fingerprint, seqno: before.seqno, state: read };
      return read;
    } finally {
      if (this.reading === reading) this.reading = undefined;
    }
  }

  private reading?: { fingerprint: string; state: Promise<VgMetadata> };

  /**
   * After a commit of the driver's own: the held state with `change` applied, if the disks show
   * that commit and nothing else since the held state. Synchronous from the header read to the
   * update, so no other call of this process can interleave.
   */
  fold(change: (state: VgMetadata) => VgMetadata | null): boolean {
    const held = this.held;
    const now = this.lvm.metadataVersion();
    if (!held || !now) return false;
    if (now.fingerprint === held.fingerprint) return true; // already re-read since the commit
    const stateSeqno = held.state.vg ? Number(held.state.vg.vg_seqno) : NaN;
    const exact = held.seqno !== null && held.seqno === stateSeqno && now.seqno === held.seqno + 1;
    const next = exact ? change(held.state) : null;
    this.held = next ? { fingerprint: now.fingerprint, seqno: now.seqno, state: next } : undefined;
    return next !== null;
  }

  /** Forgets the held state (a change the driver cannot describe). */
  drop(): void {
    this.held = undefined;
  }
}

/** The state after a thick linear LV of `bytes` was created (what lvm's report would then say of it). */
export function withThickLv(state: VgMetadata, lv: { name: string; bytes: number; tags: string[]; activation: boolean }): VgMetadata | null {
  const vg = state.vg;
  if (!vg || state.lvs.some((r) => r.lv_name === lv.name)) return null;
  const extent = Number(vg.vg_extent_size);
  if (!(extent > 0) || lv.bytes % extent !== 0) return null;
  const row: LvRow = {
    lv_name: lv.name,
    vg_name: vg.vg_name,
    lv_size: String(lv.bytes),
    lv_tags: [...lv.tags].sort().join(','),
    // lvcreate activates what it creates; where activation is off lvm reports the state as unknown.
    lv_attr: lv.activation ? '-wi-a-----' : '-wi-XX----',
    origin: '',
    pool_lv: '',
    data_percent: '',
    metadata_percent: '',
    lv_path: `/dev/${vg.vg_name}/${lv.name}`,
    lv_layout: 'linear',
    segtype: 'linear',
  };
  // lvm reports the LVs in name order.
  const lvs = [...state.lvs, row].sort((x, y) => (x.lv_name < y.lv_name ? -1 : x.lv_name > y.lv_name ? 1 : 0));
  return { vg: bump(vg, -lv.bytes, -lv.bytes / extent, 1), lvs };
}

/** The state after a thick LV with nothing depending on it was removed. */
export function withoutThickLv(state: VgMetadata, name: string): VgMetadata | null {
  const vg = state.vg;
  const row = state.lvs.find((r) => r.lv_name === name);
  if (!vg || !row || row.segtype !== 'linear' || row.origin || state.lvs.some((r) => r.origin === name || r.pool_lv === name)) return null;
  const extent = Number(vg.vg_extent_size);
  const bytes = Number(row.lv_size);
  return { vg: bump(vg, bytes, bytes / extent, -1), lvs: state.lvs.filter((r) => r !== row) };
}

function bump(vg: NonNullable<VgMetadata['vg']>, freeBytes: number, freeExtents: number, lvs: number): NonNullable<VgMetadata['vg']> {
  return {
    ...vg,
    vg_free: String(Number(vg.vg_free) + freeBytes),
    vg_free_count: String(Number(vg.vg_free_count) + freeExtents),
    lv_count: String(Number(vg.lv_count) + lvs),
    vg_seqno: String(Number(vg.vg_seqno) + 1),
  };
}
