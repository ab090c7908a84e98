import { log } from '../../log.js';
import { underOperation, progressReporter } from '../../operations.js';
import type { LvmCli } from './lvm-cli.js';

/** One segment of an LV as `lvs -a --segments` reports it: its extents and the PVs they are on. */
interface SegmentRow {
  lv_name: string;
  seg_size_pe: string;
  devices: string;
}

/** What a volume's move moves: the volume's own LV (thick), or its thin pool's data and metadata LVs (thin). */
export interface MoveUnit {
  volumeId: string;
  /** The LVs whose extents move (pvmove -n each). */
  lvs: string[];
  /** The PVs of the tier the extents go to. */
  to: string[];
  tier: string;
}

/** Extents per PV of each LV of the VG (hidden ones too, by their bare names: a thin pool's <pool>_tdata and _tmeta). */
export async function lvPlacement(lvm: LvmCli, vg: string): Promise<Map<string, Map<string, number>>> {
  const out = await lvm.exec('lvs', ['-a', '--segments', '--reportformat', 'json', '-o', 'lv_name,seg_size_pe,devices', vg]);
  // With --segments lvm reports the rows under "seg".
  const rows = (JSON.parse(out) as { report: Array<{ lv?: SegmentRow[]; seg?: SegmentRow[] }> }).report.flatMap((r) => [...(r.lv ?? []), ...(r.seg ?? [])]);
  const by = new Map<string, Map<string, number>>();
  for (const r of rows) {
    const name = r.lv_name.replace(/^\[|\]$/g, '');
    const pvs = r.devices.split(',').map((d) => d.replace(/\(\d+\)$/, '')).filter((d) => d.startsWith('/'));
    if (!pvs.length) continue; // a thin volume's segment is in its pool, not on a PV
    const per = by.get(name) ?? new Map<string, number>();
    for (const pv of pvs) per.set(pv, (per.get(pv) ?? 0) + Number(r.seg_size_pe) / pvs.length);
    by.set(name, per);
  }
  return by;
}

/** The LV lvm makes for a move under way (pvmove0, shown as [pvmove0] among hidden LVs). */
export const PVMOVE_LV = /^\[?pvmove\d+\]?$/;
/** pvmove copies for as long as the data takes: bounded by a day, never by the call that asked. */
const MOVE_TIMEOUT_MS = 24 * 3600_000;

/**
 * Moves LVs' extents between tiers with pvmove, one move at a time per pool, in the background: the
 * ControllerModifyVolume that asked has recorded the tier and returned. LVM itself is the record of a
 * move under way (its pvmoveN LV, whose mirror keeps every write on both copies until the switch),
 * so a move cut short by a crash is resumed by `pvmove` with no arguments, and a volume whose
 * extents are not all on its recorded tier is moved again (resume()).
 */
export class TierMoves {
  private queue: Promise<void> = Promise.resolve();
  private readonly queued = new Set<string>();

  constructor(
    private readonly lvm: LvmCli,
    private readonly vg: string,
    private readonly extentBytes: number,
    /** Told after each move (the pool's held metadata is stale). */
    private readonly moved: () => void,
  ) {}

  /** Extents per PV of each LV of the pool. */
  placement(): Promise<Map<string, Map<string, number>>> {
    return lvPlacement(this.lvm, this.vg);
  }

  /** The extents of these LVs that are not on these PVs, per source PV. */
  async outside(lvs: readonly string[], on: readonly string[]): Promise<Map<string, number>> {
    const placement = await this.placement();
    const out = new Map<string, number>();
    for (const lv of lvs) for (const [pv, n] of placement.get(lv) ?? []) if (!on.includes(pv)) out.set(pv, (out.get(pv) ?? 0) + n);
    return out;
  }

  /** Whether a move of this volume is queued or running in this process. */
  moving(volumeId: string): boolean {
    return this.queued.has(volumeId);
  }

  /** Queues the move; returns at once (the work goes on under its own deadline, not the call's). */
  enqueue(unit: MoveUnit): void {
    if (this.queued.has(unit.volumeId)) return;
    this.queued.add(unit.volumeId);
    this.queue = this.queue
      .then(() => this.run(unit))
      .catch((err: unknown) => log.error('moving a volume to its tier failed; the next start tries again', { volume: unit.volumeId, tier: unit.tier, err: String(err) }))
      .finally(() => this.queued.delete(unit.volumeId));
  }

  /** Waits until every queued move has ended (tests, shutdown). */
  async idle(): Promise<void> {
    for (let q = this.queue; ; q = this.queue) {
      await q;
      if (q === this.queue) return;
    }
  }

  private async run(unit: MoveUnit): Promise<void> {
    const sources = await this.outside(unit.lvs, unit.to);
    const total = [...sources.values()].reduce((a, b) => a + b, 0);
    if (!total) return;
    const started = Date.now();
    log.info('moving a volume to its tier', { volume: unit.volumeId, tier: unit.tier, extents: total, from: [...sources.keys()] });
    const bytes = (extents: number) => Math.round(extents * this.extentBytes);
    await underOperation({ kind: 'move', name: unit.volumeId, volumeId: unit.volumeId, source: `tier ${unit.tier}`, totalBytes: bytes(total) }, async () => {
      const progress = progressReporter();
      let done = 0;
      for (const lv of unit.lvs) {
        for (const [from, n] of await this.outside([lv], unit.to)) {
          const poll = setInterval(() => void this.percent().then((p) => p !== null && progress?.bytes(bytes(done + (n * p) / 100), bytes(total))), 2000);
          try {
            // One source PV per pvmove (its syntax); -n: this LV's extents alone; -i: report every 5 s in the log.
            await this.lvm.exec('pvmove', ['-i', '5', '-n', `${this.vg}/${lv}`, from, ...unit.to], { timeoutMs: MOVE_TIMEOUT_MS, uninterruptible: true });
          } finally {
            clearInterval(poll);
          }
          done += n;
          progress?.bytes(bytes(done), bytes(total));
          this.moved();
        }
      }
    });
    log.info('moved a volume to its tier', { volume: unit.volumeId, tier: unit.tier, ms: Date.now() - started });
  }

  /** How far the running pvmove is (its mirror's copy_percent), or null when none runs. */
  private async percent(): Promise<number | null> {
    const out = await this.lvm.exec('lvs', ['-a', '--reportformat', 'json', '-o', 'lv_name,copy_percent', this.vg]).catch(() => '');
    if (!out) return null;
    const rows = (JSON.parse(out) as { report: Array<{ lv: Array<{ lv_name: string; copy_percent: string }> }> }).report.flatMap((r) => r.lv);
    const row = rows.find((r) => PVMOVE_LV.test(r.lv_name));
    return row && row.copy_percent !== '' ? Number(row.copy_percent) : null;
  }

  /**
   * At start: finishes a pvmove a crash cut short (LVM resumes it from its own record: `pvmove` with
   * no arguments), and waits for it.
   */
  async finishCutShort(): Promise<void> {
    const placement = await this.placement();
    if (![...placement.keys()].some((n) => PVMOVE_LV.test(n))) return;
    log.warn('resuming a move of extents a restart cut short', { vg: this.vg });
    const run = this.queue.then(async () => {
      await this.lvm.exec('pvmove', ['-i', '5'], { timeoutMs: MOVE_TIMEOUT_MS, uninterruptible: true });
      this.moved();
      log.info('finished a move of extents a restart cut short', { vg: this.vg });
    });
    this.queue = run.catch(() => undefined);
    await run;
  }
}
