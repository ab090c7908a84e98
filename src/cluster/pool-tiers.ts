import { realpath } from 'node:fs/promises';
import type { LvmCli, LvRow, PvRow } from '../pool/lvm/lvm-cli.js';
import { setTier, tierOf } from '../pool/lvm/pool-admin.js';
import { isVolumeRow, volumeFromRow } from '../pool/lvm/tags.js';
import { lvPlacement, PVMOVE_LV } from '../pool/lvm/tier-moves.js';
import type { PoolSettings } from './volume-pool.js';

type Note = (type: 'Normal' | 'Warning', reason: string, message: string) => void;

/**
 * The VolumePool's device groups as tier tags on the pool's PVs. Only a spec with deviceGroups says
 * what the tiers are (without groups, tags made by `pool init|extend --tier` are left as they are);
 * with groups, a device named in a group carries its tier, and one named only in spec.devices none.
 * What the devices resolve to is compared, not the patterns: a device two patterns of different tiers
 * resolve to (a glob and a by-id link of one disk) keeps the tier it has, said as a Warning. A PV is
 * not re-tagged while volumes that record another tier have extents on it (a thin volume through
 * its pool's data or metadata): those volumes would be misplaced, and the node plugin would move
 * them at its next start, at a time nobody chose; give their claims the new tier's class first. Nor is
 * any PV re-tagged while a move is under way (its pvmove LV exists): the move's destination was chosen
 * by the tags, and it is left to finish on the tiers it began with.
 * Returns whether any PV was tagged.
 */
export async function reconcileTiers(lvm: LvmCli, o: { settings: PoolSettings; vg: string; candidates: ReadonlyArray<{ spec: string; path: string }>; usable: ReadonlyArray<{ path: string }>; pvs: readonly PvRow[]; lvs: readonly LvRow[]; note: Note }): Promise<boolean> {
  const { settings, vg, note } = o;
  if (!settings.tiers.size) return false;
  const wanted = new Map<string, Set<string>>();
  const patterns = new Map<string, string[]>();
  for (const c of o.candidates) {
    const real = await realpath(c.path).catch(() => c.path);
    wanted.set(real, (wanted.get(real) ?? new Set()).add(settings.tiers.get(c.spec) ?? ''));
    patterns.set(real, [...(patterns.get(real) ?? []), c.spec]);
  }
  let placement: Map<string, Map<string, number>> | undefined;
  const changes = new Map<string | null, string[]>();
  for (const { path: dev } of o.usable) {
    const pv = o.pvs.find((p) => p.pv_name === dev && p.vg_name === vg);
    const tiers = [...(wanted.get(dev) ?? [])];
    if (!pv || !tiers.length) continue;
    if (tiers.length > 1) {
      note('Warning', 'DeviceTierConflict', `${dev} is named as ${tiers.map((t) => t || 'no tier').join(' and ')} (${patterns.get(dev)!.join(', ')}): it keeps ${tierOf(pv).tier ?? 'no tier'}; name it in one group`);
      continue;
    }
    const want = tiers[0] || null;
    const have = tierOf(pv).tier ?? null;
    if (want === have) continue;
    placement ??= await lvPlacement(lvm, vg);
    const blockers = holdersOfOtherTiers(o.lvs, placement, dev, want);
    if (blockers.length) {
      note('Warning', 'TierChangeBlocked', `${dev} stays ${have ?? 'without a tier'}, not ${want ?? 'without a tier'}: volumes of another tier have extents on it (${blockers.join(', ')}); give their claims a class of tier ${want ?? 'another tier'} first, or name the device in their tier's group`);
      continue;
    }
    changes.set(want, [...(changes.get(want) ?? []), dev]);
  }
  // The move's LV is hidden (only a listing of every LV shows it, as the placement's does).
  const moving = changes.size ? [...(placement ?? (await lvPlacement(lvm, vg))).keys()].find((n) => PVMOVE_LV.test(n)) : undefined;
  if (moving) {
    note('Warning', 'TierChangeBlocked', `${[...changes.values()].flat().join(', ')}: tiers are not changed while a volume is being moved between tiers (${moving.replace(/[[\]]/g, '')}); they are at the next pass after it`);
    return false;
  }
  for (const [tier, devs] of changes) {
    await setTier(lvm, o.pvs, devs, tier);
    note('Normal', 'DeviceTier', `${devs.join(', ')}: ${tier ? `tier ${tier}` : 'no tier'}`);
  }
  return changes.size > 0;
}

/** The volumes with extents on the PV (a thin one through its pool's _tdata or _tmeta) that record a tier other than `tier`. */
function holdersOfOtherTiers(lvs: readonly LvRow[], placement: ReadonlyMap<string, ReadonlyMap<string, number>>, pv: string, tier: string | null): string[] {
  const on = new Set([...placement].filter(([, per]) => per.has(pv)).map(([lv]) => lv.replace(/_t(data|meta)$/, '')));
  const out: string[] = [];
  for (const row of lvs.filter(isVolumeRow)) {
    const recorded = volumeFromRow(row).parameters.tier;
    if (recorded && recorded !== tier && (on.has(row.lv_name) || (row.pool_lv && on.has(row.pool_lv)))) out.push(`${row.lv_name} of tier ${recorded}`);
  }
  return out;
}
