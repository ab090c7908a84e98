import { mkdir, statfs } from 'node:fs/promises';
import { errorMessage } from '../errors.js';
import { FilePool } from '../pool/file/file-pool.js';
import type { LvmCli, LvRow, VgRow } from '../pool/lvm/lvm-cli.js';
import { ensureThinPool, extendPool, initPool, inspectDevices, statusFromRows, thinSizeArgs } from '../pool/lvm/pool-admin.js';
import { reconcileTiers } from './pool-tiers.js';
import { expandDeviceGlob, hasWildcard } from './device-glob.js';
import type { DeviceStatus, NodePoolStatus, PoolSettings, ThinSize } from './volume-pool.js';

/**
 * One pass of "make this node's pool what the VolumePool says": build it, add devices, create or
 * grow the thin pool, then read back what is there. Only ever adds: a device gone from the spec
 * stays in the pool (Retained), a device that is not safe to take is left alone (Invalid), and
 * nothing is wiped unless the spec says wipe. The caller (the node agent) writes the result into
 * the VolumePool's status and turns the notes into Events.
 */
export interface PoolEvent {
  type: 'Normal' | 'Warning';
  reason: string;
  message: string;
}

export type ObservedPool = Omit<NodePoolStatus, 'node' | 'observedGeneration' | 'conditions' | 'lastUpdateTime'>;

export interface ReconcileResult {
  observed: ObservedPool;
  events: PoolEvent[];
}

const thinSizeText = (s: ThinSize) => ('percent' in s ? `${s.percent}%` : `${s.bytes}b`);

export async function reconcileLvmPool(lvm: LvmCli, settings: PoolSettings): Promise<ReconcileResult> {
  const events: PoolEvent[] = [];
  const note = (type: PoolEvent['type'], reason: string, message: string) => events.push({ type, reason, message });
  const vg = settings.volumeGroup;
  const thinName = settings.thinPool?.name;
  const devices: DeviceStatus[] = [];
  // One read of what is there (one lvm fullreport, every PV included for the device checks); read again only if this pass changed something.
  const read = async () => {
    const st = await lvm.state(vg, { allPvs: true });
    return [st.vg, st.pvs, st.lvs] as const;
  };
  let [vgRow, pvs, lvs] = await read();

  // Globs are expanded first; each match is judged on its own.
  const candidates: Array<{ spec: string; path: string }> = [];
  for (const spec of settings.devices) {
    const matches = await expandDeviceGlob(spec);
    if (hasWildcard(spec) && matches.length === 0) devices.push({ path: spec, health: 'Unmatched', message: 'no device matches this pattern (yet)' });
    for (const m of matches) candidates.push({ spec, path: m });
  }
  const inspection = await inspectDevices(lvm, candidates.map((c) => c.path), { wipe: settings.wipe, allowPvOf: vg, pvs });
  for (const p of inspection.problems) {
    // A device listed twice is reported under the pattern that named it again, not the first.
    const spec = (p.reason.startsWith('listed twice') ? [...candidates].reverse().find((c) => c.path === p.device) : candidates.find((c) => c.path === p.device))?.spec ?? p.device;
    devices.push({ path: spec, device: spec === p.device ? undefined : p.device, health: 'Invalid', message: p.reason });
    note('Warning', 'DeviceInvalid', `${p.device}: ${p.reason}; left untouched`);
  }

  let lastError: string | undefined;
  let changed = false;
  const usable = inspection.usable.map((u) => u.path);
  try {
    if (!vgRow) {
      if (usable.length === 0) throw new Error(`no usable device for VG ${vg}${settings.devices.length ? '' : ': spec.devices is empty'}`);
      const said = await initPool(lvm, { vg, devices: usable, thinPool: thinName, thinSize: settings.thinPool ? thinSizeText(settings.thinPool.size) : '90%', wipe: settings.wipe });
      note('Normal', 'PoolCreated', said);
      changed = true;
    } else {
      const inVg = pvs.filter((p) => p.vg_name === vg).map((p) => p.pv_name);
      const fresh = usable.filter((d) => !inVg.includes(d));
      if (fresh.length) {
        note('Normal', 'PoolExtended', await extendPool(lvm, { vg, devices: fresh, wipe: settings.wipe, growThinPool: false }));
        changed = true;
      }
      if (settings.thinPool && !lvs.some((l) => l.lv_name === thinName)) {
        await ensureThinPool(lvm, { vg, thinPool: thinName, thinSize: thinSizeText(settings.thinPool.size) });
        note('Normal', 'ThinPoolCreated', `thin pool ${vg}/${thinName} created (${thinSizeText(settings.thinPool.size)})`);
        changed = true;
      }
    }
    if (changed) [vgRow, pvs, lvs] = await read();
    // A tier that cannot be set (a PV that refuses its tag) is said, and the rest of the pass goes on (the thin pool's growth).
    const tagged = await reconcileTiers(lvm, { settings, vg, candidates, usable: inspection.usable, pvs, lvs, note }).catch((e: unknown) => {
      note('Warning', 'DeviceTierFailed', errorMessage(e));
      return true; // some tags may have been set before the failure: read again
    });
    if (tagged) [vgRow, pvs, lvs] = await read();
    if (settings.thinPool && vgRow) {
      const thin = lvs.find((l) => l.lv_name === thinName);
      const grown = thin ? await growThinPool(lvm, vgRow, thin, settings.thinPool.size).catch((e: unknown) => void note('Warning', 'ThinPoolGrowFailed', errorMessage(e))) : undefined;
      if (grown) {
        note('Normal', 'ThinPoolExtended', grown);
        [vgRow, pvs, lvs] = await read();
      }
    }
  } catch (e) {
    lastError = errorMessage(e);
    note('Warning', 'ReconcileFailed', lastError);
    [vgRow, pvs, lvs] = await read();
  }

  // What the spec named (a path, a glob) for each resolved device.
  const specOf = new Map(inspection.usable.map((u) => [u.path, candidates.find((c) => c.path === u.device)?.spec ?? u.device]));
  if (!vgRow) {
    for (const [dev, spec] of specOf) devices.push({ path: spec, device: dev, health: 'Invalid', message: lastError ?? 'not in the pool' });
    return { observed: { phase: 'Failed', devices, sizeBytes: 0, freeBytes: 0, volumes: 0, snapshots: 0, lastError }, events };
  }
  const st = statusFromRows(vgRow, pvs, lvs);
  for (const pv of st.devices) {
    const spec = specOf.get(pv.name);
    const health = pv.missing ? 'Missing' : spec ? 'Healthy' : 'Retained';
    const message = pv.missing ? 'the device is gone from this node; the pool is degraded' : spec ? undefined : 'in the pool but no longer in spec.devices; pools are never shrunk (pvmove + vgreduce by hand)';
    devices.push({ path: spec ?? pv.name, device: pv.name, sizeBytes: pv.sizeBytes, ...(pv.tier ? { tier: pv.tier } : {}), health, ...(message ? { message } : {}) });
    if (pv.missing) note('Warning', 'DeviceMissing', `${pv.name}: ${message}`);
  }
  const thin = thinName ? st.thinPools.find((t) => t.name === thinName) : undefined;
  const degraded = lastError !== undefined || devices.some((d) => d.health !== 'Healthy');
  return {
    observed: {
      phase: degraded ? 'Degraded' : 'Ready',
      devices,
      sizeBytes: st.sizeBytes,
      freeBytes: thin ? Math.round(thin.sizeBytes * (1 - thin.dataPercent / 100)) : st.freeBytes,
      ...(thin ? { thinPool: thin } : {}),
      volumes: st.volumes.length,
      snapshots: st.snapshots,
      ...(lastError ? { lastError } : {}),
    },
    events,
  };
}

/** Grows the thin pool to what the spec asks of the (possibly larger) VG; never shrinks it. */
async function growThinPool(lvm: LvmCli, vgRow: VgRow, lv: LvRow, size: ThinSize): Promise<string | null> {
  const extent = Number(vgRow.vg_extent_size);
  const want = 'percent' in size ? Math.floor((Number(vgRow.vg_extent_count) * size.percent) / 100) * extent : size.bytes;
  const have = Number(lv.lv_size);
  if (want - have < extent || Number(vgRow.vg_free_count) === 0) return null;
  await lvm.exec('lvextend', ['-y', ...thinSizeArgs(thinSizeText(size)), `${vgRow.vg_name}/${lv.lv_name}`]);
  return `thin pool ${vgRow.vg_name}/${lv.lv_name} grown to ${thinSizeText(size)} of the volume group`;
}

export async function reconcileFilePool(settings: PoolSettings): Promise<ReconcileResult> {
  const events: PoolEvent[] = [];
  try {
    await mkdir(settings.directory, { recursive: true, mode: 0o700 });
    const fs = await statfs(settings.directory);
    const pool = await FilePool.open(settings.directory, settings.reserveBytes, { sweep: false });
    const [volumes, snapshots] = await Promise.all([pool.listVolumes(), pool.listSnapshots()]);
    return {
      observed: { phase: 'Ready', devices: [], sizeBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize, volumes: volumes.length, snapshots: snapshots.length },
      events,
    };
  } catch (e) {
    const lastError = errorMessage(e);
    events.push({ type: 'Warning', reason: 'ReconcileFailed', message: lastError });
    return { observed: { phase: 'Failed', devices: [], sizeBytes: 0, freeBytes: 0, volumes: 0, snapshots: 0, lastError }, events };
  }
}
