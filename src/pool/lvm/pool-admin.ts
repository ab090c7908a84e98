import { readFileSync } from 'node:fs';
import { realpath, stat } from 'node:fs/promises';
import { readdirSync } from 'node:fs';
import { run } from '../../exec.js';
import { parseQuantity } from '../../units.js';
import { deviceNumber } from '../../host/devices.js';
import { probeSignature } from '../../host/filesystem.js';
import { readMounts } from '../../host/mounts.js';
import { tagsOf, tagValue, type LvmCli, type LvRow, type PvRow, type VgRow } from './lvm-cli.js';
import { isSnapshotRow, isVolumeRow, POOL_TAG, THIN_POOL_TAG, TIER_TAG } from './tags.js';

/** Building, growing, inspecting and removing the pool itself: devices → PVs → a tagged VG (→ a thin pool). */

const VG_NAME = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$/;

export class PoolAdminError extends Error {
  override name = 'PoolAdminError';
}

export function validateVgName(vg: string): string {
  if (!VG_NAME.test(vg) || vg === '.' || vg === '..' || vg.includes('..')) {
    throw new PoolAdminError(`invalid VG name ${JSON.stringify(vg)}: letters, digits and + _ . - only, no '/' or '..'`);
  }
  return vg;
}

export function validateLvName(lv: string): string {
  if (!VG_NAME.test(lv) || lv.includes('..') || /^(snapshot|pvmove)/.test(lv)) throw new PoolAdminError(`invalid thin pool name ${JSON.stringify(lv)}`);
  return lv;
}

const TIER = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

/** A tier's name: what a StorageClass's `tier` names and a PV carries in its vpool.tier tag. */
export function validateTier(tier: string): string {
  if (!TIER.test(tier)) throw new PoolAdminError(`invalid tier ${JSON.stringify(tier)}: lower-case letters, digits and '-', at most 32, e.g. fast or slow`);
  return tier;
}

/** Gives these PVs of the VG the tier (per PV one pvchange: its old tier tag goes as the new one comes); null takes their tier away; nothing when tier is undefined. */
export async function setTier(lvm: LvmCli, pvs: readonly PvRow[], devices: readonly string[], tier: string | null | undefined): Promise<void> {
  if (tier === undefined) return;
  for (const d of devices) {
    const old = tagsOf(pvs.find((p) => p.pv_name === d)?.pv_tags).filter((t) => t.startsWith(`${TIER_TAG}=`));
    const want = tier === null ? [] : [`${TIER_TAG}=${tier}`];
    if (old.length === want.length && old.every((t, i) => t === want[i])) continue;
    await lvm.exec('pvchange', ['-y', ...old.flatMap((t) => ['--deltag', t]), ...want.flatMap((t) => ['--addtag', t]), d]);
  }
}

export interface DeviceProblem {
  device: string;
  reason: string;
}

export interface DeviceInspection {
  /** Resolved paths that may join the pool (or are already in it, with allowPvOf). */
  usable: Array<{ device: string; path: string }>;
  problems: DeviceProblem[];
}

/**
 * Resolves device paths and sorts out, device by device, anything that could destroy data the
 * operator did not offer. Nothing is changed; the reconciler uses the verdicts one by one, the CLI
 * refuses the whole list (checkDevices).
 */
export async function inspectDevices(lvm: LvmCli, devices: readonly string[], opts: { wipe: boolean; allowPvOf?: string; pvs?: PvRow[] }): Promise<DeviceInspection> {
  const usable: DeviceInspection['usable'] = [];
  const problems: DeviceProblem[] = [];
  const mounts = await readMounts();
  const swaps = readFileSync('/proc/swaps', 'utf8').split('\n').slice(1).map((l) => l.split(/\s+/)[0]).filter(Boolean);
  const pvs = opts.pvs ?? (await lvm.pvs());
  const problem = (device: string, reason: string) => problems.push({ device, reason });
  for (const dev of devices) {
    if (!dev.startsWith('/') || dev.includes('..') || dev.includes('\0')) {
      problem(dev, 'give an absolute device path without \'..\'');
      continue;
    }
    let real: string;
    try {
      real = await realpath(dev);
    } catch {
      problem(dev, 'no such device');
      continue;
    }
    const st = await stat(real);
    if (!st.isBlockDevice()) {
      problem(dev, 'not a block device');
      continue;
    }
    if (usable.some((u) => u.path === real)) {
      problem(dev, `listed twice (${real})`);
      continue;
    }
    const num = await deviceNumber(real);
    const name = real.replace('/dev/', '');
    const parts = partitionsOf(name);
    const partNums = await Promise.all(parts.map((p) => deviceNumber(`/dev/${p}`)));
    const mounted = mounts.filter((m) => m.majorMinor === num || partNums.includes(m.majorMinor)).map((m) => m.mountPoint);
    if (mounted.length) {
      problem(dev, `mounted at ${mounted.join(', ')}`);
      continue;
    }
    if (swaps.some((s) => s === real || parts.some((p) => s === `/dev/${p}`))) {
      problem(dev, 'in use as swap');
      continue;
    }
    const pv = pvs.find((p) => p.pv_name === real || p.pv_name === dev);
    if (pv && opts.allowPvOf !== undefined && pv.vg_name === opts.allowPvOf) {
      usable.push({ device: dev, path: real });
      continue;
    }
    const holders = holdersOf(name);
    if (holders.length) {
      problem(dev, `in use by ${holders.join(', ')}`);
      continue;
    }
    if (pv) {
      problem(dev, `already an LVM physical volume${pv.vg_name ? ` of VG ${pv.vg_name}` : ''}`);
      continue;
    }
    const sig = await probeSignature(real);
    if ((sig || parts.length) && !opts.wipe) {
      problem(dev, `carries ${sig?.type ?? (sig?.ptType ? `a ${sig.ptType} partition table` : 'partitions')}; wiping it needs explicit consent (--wipe, or spec.wipe: true)`);
      continue;
    }
    usable.push({ device: dev, path: real });
  }
  return { usable, problems };
}

/** inspectDevices for commands that take all the devices or none. */
export async function checkDevices(lvm: LvmCli, devices: readonly string[], opts: { wipe: boolean; allowPvOf?: string; pvs?: PvRow[] }): Promise<string[]> {
  if (devices.length === 0) throw new PoolAdminError('name at least one device');
  const { usable, problems } = await inspectDevices(lvm, devices, opts);
  if (problems.length) throw new PoolAdminError(`refusing to touch these devices:\n  ${problems.map((p) => `${p.device}: ${p.reason}`).join('\n  ')}`);
  return usable.map((u) => u.path);
}

function partitionsOf(name: string): string[] {
  try {
    return readdirSync(`/sys/class/block/${name}`).filter((e) => e.startsWith(name));
  } catch {
    return [];
  }
}

function holdersOf(name: string): string[] {
  try {
    return readdirSync(`/sys/class/block/${name}/holders`);
  } catch {
    return [];
  }
}

export interface InitOptions {
  vg: string;
  devices: string[];
  thinPool?: string;
  /** Share of the VG for the thin pool, e.g. "90%". */
  thinSize: string;
  wipe: boolean;
  /** The devices' tier (a PV tag): where a StorageClass's `tier` places its volumes. */
  tier?: string;
}

export async function initPool(lvm: LvmCli, o: InitOptions): Promise<string> {
  validateVgName(o.vg);
  if (o.thinPool) validateLvName(o.thinPool);
  if (o.tier !== undefined) validateTier(o.tier);
  thinSizeArgs(o.thinSize);
  const { vg: existing, pvs } = await lvm.state(o.vg, { allPvs: true });
  if (existing) {
    if (!tagsOf(existing.vg_tags).includes(POOL_TAG)) throw new PoolAdminError(`VG ${o.vg} exists and is not a vpool pool; refusing to adopt it`);
    const have = pvs.filter((p) => p.vg_name === o.vg).map((p) => p.pv_name).sort();
    const want = (await Promise.all(o.devices.map((d) => realpath(d).catch(() => d)))).sort();
    if (have.join() !== want.join()) {
      const missing = want.filter((d) => !have.includes(d));
      const extra = have.filter((d) => !want.includes(d));
      throw new PoolAdminError(`VG ${o.vg} already exists with other devices${missing.length ? `; not in it: ${missing.join(', ')} (use pool extend)` : ''}${extra.length ? `; in it but not named: ${extra.join(', ')}` : ''}`);
    }
    await ensureThinPool(lvm, o);
    await setTier(lvm, pvs, have, o.tier);
    return `VG ${o.vg} already holds ${have.join(', ')}${o.tier ? ` (tier ${o.tier})` : ''}: nothing to do`;
  }
  const devices = await checkDevices(lvm, o.devices, { wipe: o.wipe, pvs });
  if (o.wipe) for (const d of devices) await run('wipefs', ['--all', '--', d]);
  await lvm.exec('pvcreate', ['-y', ...devices]);
  await lvm.exec('vgcreate', ['-y', '--addtag', POOL_TAG, ...(o.thinPool ? ['--addtag', `${THIN_POOL_TAG}=${o.thinPool}`] : []), o.vg, ...devices]);
  // Before the thin pool: its extents then go where a tier says, if the operator asks lvcreate for it.
  await setTier(lvm, [], devices, o.tier);
  await ensureThinPool(lvm, o);
  return `VG ${o.vg} created on ${devices.join(', ')}${o.tier ? ` (tier ${o.tier})` : ''}${o.thinPool ? ` with thin pool ${o.thinPool} (${o.thinSize} of it)` : ''}`;
}

/** lvcreate/lvextend size arguments for a thin pool: a share of the VG ("90%") or a size ("100Gi"). */
export function thinSizeArgs(size: string): string[] {
  if (/^(100|[1-9][0-9]?)%$/.test(size)) return ['-l', `${size}VG`];
  try {
    return ['-L', `${parseQuantity(size)}b`];
  } catch {
    throw new PoolAdminError(`thin pool size must be a share of the VG (e.g. 90%) or a size (e.g. 100Gi), got ${size}`);
  }
}

export async function ensureThinPool(lvm: LvmCli, o: { vg: string; thinPool?: string; thinSize: string }): Promise<void> {
  if (!o.thinPool) return;
  if (await lvm.lv(o.vg, o.thinPool)) return;
  await lvm.exec('lvcreate', ['-y', '--type', 'thin-pool', ...thinSizeArgs(o.thinSize), '-n', o.thinPool, o.vg]);
  const vg = await lvm.vg(o.vg);
  if (vg && tagValue(tagsOf(vg.vg_tags), THIN_POOL_TAG) !== o.thinPool) await lvm.exec('vgchange', ['--addtag', `${THIN_POOL_TAG}=${o.thinPool}`, o.vg]);
}

function checkPoolRow(vg: string, row: VgRow | null): VgRow {
  if (!row) throw new PoolAdminError(`VG ${vg} does not exist`);
  if (!tagsOf(row.vg_tags).includes(POOL_TAG)) throw new PoolAdminError(`VG ${vg} is not a vpool pool (no ${POOL_TAG} tag); refusing to touch it`);
  return row;
}

export async function extendPool(lvm: LvmCli, o: { vg: string; devices: string[]; wipe: boolean; growThinPool: boolean; tier?: string }): Promise<string> {
  validateVgName(o.vg);
  if (o.tier !== undefined) validateTier(o.tier);
  const { vg: found, pvs } = await lvm.state(o.vg, { allPvs: true });
  const row = checkPoolRow(o.vg, found);
  const resolved = await checkDevices(lvm, o.devices, { wipe: o.wipe, allowPvOf: o.vg, pvs });
  const inVg = pvs.filter((p) => p.vg_name === o.vg).map((p) => p.pv_name);
  const fresh = resolved.filter((d) => !inVg.includes(d));
  if (fresh.length) {
    if (o.wipe) for (const d of fresh) await run('wipefs', ['--all', '--', d]);
    await lvm.exec('pvcreate', ['-y', ...fresh]);
    await lvm.exec('vgextend', ['-y', o.vg, ...fresh]);
  }
  // Devices already in the pool may be named again to change their tier (their extents stay where they are).
  await setTier(lvm, pvs, resolved, o.tier);
  const thin = tagValue(tagsOf(row.vg_tags), THIN_POOL_TAG);
  if (o.growThinPool) {
    if (!thin) throw new PoolAdminError(`VG ${o.vg} has no thin pool to grow`);
    const free = Number((await lvm.vg(o.vg))?.vg_free_count ?? 0);
    // +100%FREE lets LVM keep what the pool's metadata (and its spare) must grow by.
    if (free > 0) await lvm.exec('lvextend', ['-y', '-l', '+100%FREE', `${o.vg}/${thin}`]);
  }
  const tiered = o.tier ? ` (tier ${o.tier})` : '';
  return fresh.length ? `VG ${o.vg} extended with ${fresh.join(', ')}${tiered}` : `VG ${o.vg} already holds ${resolved.join(', ')}${tiered}`;
}

export interface PoolStatus {
  vg: string;
  sizeBytes: number;
  freeBytes: number;
  extentBytes: number;
  devices: Array<{ name: string; sizeBytes: number; freeBytes: number; missing: boolean; tier?: string }>;
  thinPools: Array<{ name: string; sizeBytes: number; dataPercent: number; metadataPercent: number }>;
  volumes: Array<{ id: string; name: string; sizeBytes: number; type: string }>;
  snapshots: number;
}

export async function poolStatus(lvm: LvmCli, vg: string): Promise<PoolStatus> {
  validateVgName(vg);
  const { vg: row, pvs, lvs } = await lvm.state(vg);
  return statusFromRows(checkPoolRow(vg, row), pvs, lvs);
}

/** The status of a pool from its vgs row and the pvs and lvs rows (read once by the caller). */
export function statusFromRows(row: VgRow, pvs: PvRow[], lvs: LvRow[]): PoolStatus {
  const vg = row.vg_name;
  return {
    vg,
    sizeBytes: Number(row.vg_size),
    freeBytes: Number(row.vg_free),
    extentBytes: Number(row.vg_extent_size),
    devices: pvs.filter((p) => p.vg_name === vg).map((p) => ({ name: p.pv_name, sizeBytes: Number(p.pv_size), freeBytes: Number(p.pv_free), missing: p.pv_attr?.[2] === 'm', ...tierOf(p) })),
    thinPools: lvs.filter((l) => l.segtype === 'thin-pool').map((l) => ({ name: l.lv_name, sizeBytes: Number(l.lv_size), dataPercent: Number(l.data_percent || 0), metadataPercent: Number(l.metadata_percent || 0) })),
    volumes: lvs.filter(isVolumeRow).map((l) => ({ id: l.lv_name, name: tagValue(tagsOf(l.lv_tags), 'vpool.name') ?? l.lv_name, sizeBytes: Number(l.lv_size), type: l.segtype === 'thin' ? 'thin' : 'thick' })),
    snapshots: lvs.filter(isSnapshotRow).length,
  };
}

/** A PV's tier, from its tag. */
export function tierOf(pv: PvRow): { tier?: string } {
  const tier = tagValue(tagsOf(pv.pv_tags), TIER_TAG);
  return tier ? { tier } : {};
}

/** All vpool pools on this host (VGs with the pool tag). */
export async function listPools(lvm: LvmCli): Promise<string[]> {
  return (await lvm.vgsAll()).filter((v) => tagsOf(v.vg_tags).includes(POOL_TAG)).map((v) => v.vg_name);
}

export async function destroyPool(lvm: LvmCli, o: { vg: string; force: boolean }): Promise<string> {
  validateVgName(o.vg);
  const { vg: row, pvs, lvs } = await lvm.state(o.vg);
  const status = statusFromRows(checkPoolRow(o.vg, row), pvs, lvs);
  if ((status.volumes.length || status.snapshots) && !o.force) {
    throw new PoolAdminError(`VG ${o.vg} still holds ${status.volumes.length} volume(s) and ${status.snapshots} snapshot(s); pass --force to destroy them`);
  }
  if (lvs.length) await lvm.exec('lvremove', ['-y', o.vg]);
  await lvm.exec('vgremove', ['-y', o.vg]);
  const devices = status.devices.map((d) => d.name);
  if (devices.length) await lvm.exec('pvremove', ['-y', ...devices]);
  return `VG ${o.vg} destroyed; ${devices.join(', ')} released`;
}
