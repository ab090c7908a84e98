import { deviceUsers } from '../../host/in-use.js';
import { log } from '../../log.js';
import { parseLvAttr } from './lv-attr.js';
import { dmDeviceOf } from './dm.js';
import type { LvmCli, LvRow } from './lvm-cli.js';
import { groupOfRow, isIncomplete, isSnapshotRow, isVolumeRow, snapshotFromRow, visibleSnapshotRows } from './tags.js';

const HALF_GROUP_AGE_MS = 10 * 60_000;

/**
 * Why an LV must be left alone now (something holds it), or null. Only device-mapper can hold an
 * LV: with no dm device it is inactive and nothing can have it open, and no lvm command is needed to
 * say so. An active one is asked of lvm (its open count) and of the host (who binds or mounts it).
 * `sysBlock` is where the kernel's dm table is read (dm.ts).
 */
export async function lvHeld(lvm: LvmCli, vg: string, lv: string, sysBlock?: string): Promise<string | null> {
  const dm = dmDeviceOf(vg, lv, sysBlock);
  if (dm === null) return null;
  const attr = parseLvAttr((await lvm.lv(vg, lv))?.lv_attr);
  if (attr.open) return `LV ${vg}/${lv} is open`;
  if (dm === undefined && attr.state === 'inactive') return null;
  const users = await deviceUsers([`/dev/${vg}/${lv}`, ...(dm ? [`/dev/${dm}`] : [])]);
  return users.length ? `LV ${vg}/${lv} is in use: ${users.join('; ')}` : null;
}

/**
 * Removes the volumes a crashed clone or restore left marked incomplete: a retry of the same name
 * would remove one, but a claim deleted instead never retries, and the LV (full size for a thick
 * one) is listed nowhere. Run once when the pool opens, by the process that creates volumes (so no
 * fill of its own is under way); one that is held (a fill in a process this one does not know of)
 * is left, and lvremove itself refuses an LV that is open. An active one that nothing holds is what
 * a killed filler leaves (its dm device outlives it): lvremove deactivates it.
 */
export async function sweepIncompleteLvs(lvm: LvmCli, vg: string, lvs: readonly LvRow[], sysBlock?: string): Promise<string[]> {
  const removed: string[] = [];
  for (const r of lvs.filter((x) => isVolumeRow(x) && isIncomplete(x))) {
    const held = await lvHeld(lvm, vg, r.lv_name, sysBlock);
    if (held) {
      log.warn('leaving an unfinished clone or restore that is in use', { lv: r.lv_name, reason: held });
      continue;
    }
    try {
      await lvm.exec('lvremove', ['-y', `${vg}/${r.lv_name}`]);
      log.warn('removed an unfinished clone or restore a crash left', { lv: r.lv_name, bytes: Number(r.lv_size) });
      removed.push(r.lv_name);
    } catch (e) {
      log.warn('cannot remove an unfinished clone or restore', { lv: r.lv_name, error: String(e) });
    }
  }
  return removed;
}

/**
 * Removes the members of group snapshots a crash left short of their last member: never listed, never
 * restored from (a restore from one would have taken a listed snapshot), and a claim deleted meanwhile
 * never retries the group. Run once when the pool opens, by the process that cuts groups.
 */
export async function sweepHalfGroups(lvm: LvmCli, vg: string, lvs: readonly LvRow[]): Promise<string[]> {
  const visible = new Set(visibleSnapshotRows(lvs).map((r) => r.lv_name));
  const removed: string[] = [];
  for (const r of lvs.filter((x) => isSnapshotRow(x) && groupOfRow(x) && !visible.has(x.lv_name))) {
    // Recent: perhaps a cut another process is still making (a rolling update's two plugins); its retry or a later start removes it.
    if (Date.now() - snapshotFromRow(r).createdAt < HALF_GROUP_AGE_MS) {
      log.warn('leaving a member of a half-made group snapshot cut in the last 10 minutes', { lv: r.lv_name, group: groupOfRow(r)!.id });
      continue;
    }
    try {
      await lvm.exec('lvremove', ['-y', `${vg}/${r.lv_name}`]);
      log.warn('removed a member of a group snapshot a crash left half-made', { lv: r.lv_name, group: groupOfRow(r)!.id });
      removed.push(r.lv_name);
    } catch (e) {
      log.warn('cannot remove a member of a half-made group snapshot', { lv: r.lv_name, error: String(e) });
    }
  }
  return removed;
}
