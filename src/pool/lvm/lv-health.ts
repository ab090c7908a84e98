import type { Condition, VolumeRecord } from '../backend.js';
import { HEALTH, parseLvAttr } from './lv-attr.js';
import { dmName, dmNames } from './dm.js';
import type { LvmCli, LvRow } from './lvm-cli.js';

const FULL_PERCENT = 95;

/**
 * Volume conditions for ListVolumes and NodeGetVolumeStats. Health and thin pool fullness are
 * device-mapper's to tell (lvs asks it). Where none of the page's LVs nor their thin pools has a dm
 * device (inactive, or no device-mapper at all), dm has nothing to say: the held metadata answers
 * without an lvm command.
 */
export class LvHealth {
  /** The last report read for health (dm state), which the next pages of a listing reuse for a moment. */
  private last?: { at: number; rows: ReadonlyMap<string, LvRow> };

  constructor(
    private readonly lvm: LvmCli,
    private readonly vg: string,
  ) {}

  async conditions(volumes: readonly VolumeRecord[], held: readonly LvRow[]): Promise<Condition[]> {
    if (!volumes.length) return [];
    const byName = new Map(held.map((r) => [r.lv_name, r]));
    const live = this.lvm.activation ? dmNames() : new Set<string>();
    const active = (lv: string | undefined) => !!lv && (live === undefined || live.has(dmName(this.vg, lv)));
    if (!volumes.some((v) => active(v.id) || active(byName.get(v.id)?.pool_lv))) return volumes.map((v) => this.conditionOf(v, byName));
    // Health read under two seconds ago (for the previous page of the same listing) is as good as a new report.
    const recent = this.last && performance.now() - this.last.at < 2000 && volumes.every((v) => this.last!.rows.has(v.id)) ? this.last.rows : undefined;
    let rows = recent;
    if (!rows) {
      rows = new Map((await this.lvm.lvs(this.vg)).map((r) => [r.lv_name, r]));
      this.last = { at: performance.now(), rows };
    }
    return volumes.map((v) => this.conditionOf(v, rows));
  }

  private conditionOf(v: VolumeRecord, rows: ReadonlyMap<string, LvRow>): Condition {
    const row = rows.get(v.id);
    if (!row) return { abnormal: true, message: `LV ${this.vg}/${v.id} is missing` };
    const { health } = parseLvAttr(row.lv_attr);
    if (health) return { abnormal: true, message: `LV ${this.vg}/${v.id}: ${HEALTH[health] ?? `health flag ${health}`}` };
    if (row.pool_lv) {
      const pool = rows.get(row.pool_lv);
      const data = Number(pool?.data_percent || 0);
      const meta = Number(pool?.metadata_percent || 0);
      if (data > FULL_PERCENT || meta > FULL_PERCENT) return { abnormal: true, message: `thin pool ${row.pool_lv} is ${data}% data and ${meta}% metadata full` };
    }
    return { abnormal: false, message: 'volume is healthy' };
  }
}
