import type { LvmCli, LvmState, LvRow } from './lvm-cli.js';

interface Held {
  /** The metadata area headers read before the report the state came from. */
  fingerprint: string;
  /** The seqno those headers' text carried; the state is that version when it equals the state's own. */
  seqno: number | null;
  state: LvmState;
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

  async read(): Promise<LvmState> {
    const before = this.lvm.metadataVersion();
    if (before !== null && this.held?.fingerprint === before.fingerprint) return this.held.state;
    const state = await this.lvm.state(this.vg);
    // Keyed by the headers read before the report: a commit in between makes the key stale, never the state.
    this.held = before === null ? undefined : { fingerprint: before.fingerprint, seqno: before.seqno, state };
    return state;
  }

  /**
   * After a commit of the driver's own: the held state with `change` applied, if the disks show
   * that commit and nothing else since the held state. Synchronous from the header read to the
   * update, so no other call of this process can interleave.
   */
  fold(change: (state: LvmState) => LvmState | null): boolean {
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
export function withThickLv(state: LvmState, lv: { name: string; bytes: number; tags: string[]; activation: boolean }): LvmState | null {
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
  const pvs = onlyPv(state, -lv.bytes);
  if (!pvs) return null;
  // lvm reports the LVs in name order.
  const lvs = [...state.lvs, row].sort((x, y) => (x.lv_name < y.lv_name ? -1 : x.lv_name > y.lv_name ? 1 : 0));
  return { vg: bump(vg, -lv.bytes, -lv.bytes / extent, 1), pvs, lvs };
}

/**
 * The PV rows with the VG's one PV's free space moved by `bytes`. Which PV of several lvm allocates
 * from is its policy's choice: a VG of more PVs is read afresh instead (null).
 */
function onlyPv(state: LvmState, bytes: number): LvmState['pvs'] | null {
  const vg = state.vg!;
  const mine = state.pvs.filter((p) => p.vg_name === vg.vg_name);
  if (Number(vg.pv_count) !== 1 || mine.length !== 1) return null;
  return state.pvs.map((p) => (p === mine[0] ? { ...p, pv_free: String(Number(p.pv_free) + bytes) } : p));
}

/** The state after a thick LV with nothing depending on it was removed. */
export function withoutThickLv(state: LvmState, name: string): LvmState | null {
  const vg = state.vg;
  const row = state.lvs.find((r) => r.lv_name === name);
  if (!vg || !row || row.segtype !== 'linear' || row.origin || state.lvs.some((r) => r.origin === name || r.pool_lv === name)) return null;
  const extent = Number(vg.vg_extent_size);
  const bytes = Number(row.lv_size);
  const pvs = onlyPv(state, bytes);
  if (!pvs) return null;
  return { vg: bump(vg, bytes, bytes / extent, -1), pvs, lvs: state.lvs.filter((r) => r !== row) };
}

function bump(vg: NonNullable<LvmState['vg']>, freeBytes: number, freeExtents: number, lvs: number): NonNullable<LvmState['vg']> {
  return {
    ...vg,
    vg_free: String(Number(vg.vg_free) + freeBytes),
    vg_free_count: String(Number(vg.vg_free_count) + freeExtents),
    lv_count: String(Number(vg.lv_count) + lvs),
    vg_seqno: String(Number(vg.vg_seqno) + 1),
  };
}
