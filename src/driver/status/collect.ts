import { hasIoLimits, ioLimitsOf } from '../../pool/mutable-parameters.js';
import { realpath } from 'node:fs/promises';
import path from 'node:path';
import { readMounts, type MountEntry } from '../../host/mounts.js';
import { deviceNumber } from '../../host/devices.js';
import { recentProblems } from '../../log.js';
import { formatBytes } from '../../units.js';
import { unavailable } from '../../errors.js';
import { listVolumes, statuses } from '../controller/queries.js';
import { hasBackend, type ControllerContext, type DriverContext, type DriverState } from '../context.js';
import type { VolumeRecord } from '../../records.js';
import type { DriverStatus, PoolStatusReport, VolumeDetail, VolumePage } from './types.js';
import { operationsInProgress } from '../../operations.js';

/** What the status needs beyond the driver's state: how it was started, and the parts that run beside the CSI services. */
export interface StatusSources {
  mode: string;
  startedAt: Date;
  /** Sends to other nodes under way; undefined without a transfer listener. */
  sending?: () => number;
  /** The last orphan check's counts; undefined when orphans are not checked. */
  orphans?: () => Record<string, number> | undefined;
}

/** Each part of the status is given this long: a hung disk or daemon makes that part say so, never the whole call hang. */
export const PART_TIMEOUT_MS = 10_000;
/** A status call reads at most this many volumes for its counts (a larger pool's counts say "at least"). */
const COUNT_LIMIT = 10_000;

/** Thresholds of `attention`: a person should look before the pool fills. */
export const FULL_SHARE = 0.9;
export const THIN_FULL_PERCENT = 90;
const RECENT_MS = 15 * 60_000;

function within<T>(what: string, p: Promise<T>, ms = PART_TIMEOUT_MS): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(unavailable(`${what} did not answer within ${ms / 1000} s (a disk or daemon that does not answer?)`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

/**
 * One read of the pool for the status and the volume tables at a time, per process. A read past its
 * time limit goes on in the background (a hung disk holds it: a stat, an lvm command), and while it
 * does, later calls wait for it up to the limit and are then refused UNAVAILABLE instead of starting
 * more reads that would hang too: `watch vpool-csi status` on a node with a hung disk holds one
 * thread and one command, not one per call.
 */
export type Track = <U>(work: Promise<U>) => Promise<U>;

export class OneRead {
  private running?: Promise<unknown>;

  /** `limitMs`: how long a call waits for an earlier read, and how long its own read may take. */
  constructor(private readonly limitMs = PART_TIMEOUT_MS + 5_000) {}

  /** `read` registers with `track` the parts it gives up on (collectStatus's), so they count as under way until they end. */
  async run<T>(what: string, read: (track: Track) => Promise<T>): Promise<T> {
    const deadline = Date.now() + this.limitMs;
    while (this.running) {
      const left = deadline - Date.now();
      if (left <= 0) throw unavailable(`an earlier read of the pool has not finished after ${this.limitMs / 1000} s (a disk or daemon that does not answer?); try again later`);
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.running.catch(() => undefined), new Promise((r) => (timer = setTimeout(r, left)))]);
      clearTimeout(timer);
    }
    const pending = new Set<Promise<unknown>>();
    const track: Track = (work) => {
      pending.add(work);
      void work.catch(() => undefined).finally(() => pending.delete(work));
      return work;
    };
    const p = track(read(track));
    const running = (async () => {
      while (pending.size) await Promise.allSettled([...pending]);
    })();
    this.running = running;
    void running.finally(() => {
      if (this.running === running) this.running = undefined;
    });
    return within(what, p, this.limitMs);
  }
}

const message = (err: unknown) => (err instanceof Error ? err.message : String(err));

/** Where this node has each volume mounted: a filesystem of its device, or a bind of the device node itself (raw block). */
async function mountsOf(ctx: DriverContext, ids: readonly string[], table: readonly MountEntry[]): Promise<Map<string, VolumeDetail['mounts']>> {
  const out = new Map<string, VolumeDetail['mounts']>();
  const many = ctx.blockDevices.devicesOfMany ? await ctx.blockDevices.devicesOfMany(ids).catch(() => null) : null;
  for (const id of ids) {
    const devices = many?.get(id) ?? (await ctx.blockDevices.devices(id).catch(() => []));
    const found: NonNullable<VolumeDetail['mounts']> = [];
    for (const d of devices) {
      const number = await deviceNumber(d.device);
      // /dev/vg/lv and /dev/disk/by-id/... are links: a bind of the device node shows devtmpfs's own name (dm-3, vdb).
      const name = path.basename(await realpath(d.device).catch(() => d.device));
      for (const m of table) {
        if (number && m.majorMinor === number) found.push({ path: m.mountPoint, as: m.fsType, readOnly: m.options.includes('ro') });
        else if (m.fsType === 'devtmpfs' && m.root === `/${name}`) found.push({ path: m.mountPoint, as: 'block', readOnly: m.options.includes('ro') });
      }
    }
    out.set(id, found);
  }
  return out;
}

const rfc3339 = (ms: number) => new Date(ms).toISOString();

/** One page of volumes with what a person asks of them; `node`: this process serves the node side and can say where each is mounted. */
export async function volumeDetails(ctx: ControllerContext, after: string, limit: number, node: boolean, withAllocation = true): Promise<VolumePage> {
  const page = await listVolumes(ctx, after, limit);
  const vols = page.items;
  return { volumes: await detailsOf(ctx, vols, node, withAllocation), next: page.more && vols.length ? vols[vols.length - 1]!.id : '' };
}

/** One volume with what a person asks of it, or null when there is no such volume. */
export async function volumeDetail(ctx: ControllerContext, id: string, node: boolean): Promise<VolumeDetail | null> {
  const v = await ctx.backend.getVolume(id);
  return v ? (await detailsOf(ctx, [v], node))[0]! : null;
}

async function detailsOf(ctx: ControllerContext, vols: VolumeRecord[], node: boolean, withAllocation = true): Promise<VolumeDetail[]> {
  const [st, allocation, table] = await Promise.all([
    statuses(ctx, vols),
    withAllocation && ctx.backend.allocation ? ctx.backend.allocation(vols).catch(() => new Map<string, number>()) : Promise.resolve(new Map<string, number>()),
    node ? readMounts() : Promise.resolve([]),
  ]);
  const mounts = node ? await mountsOf(ctx, vols.map((v) => v.id), table) : undefined;
  return vols.map((v: VolumeRecord, i): VolumeDetail => ({
    id: v.id,
    name: v.name,
    capacityBytes: v.capacityBytes,
    ...(allocation.has(v.id) ? { allocatedBytes: allocation.get(v.id) } : {}),
    createdAt: rfc3339(v.createdAt),
    ...(v.source ? { source: `${v.source.kind}/${v.source.id}` } : {}),
    ...(v.parameters.fsType ? { fsType: v.parameters.fsType } : {}),
    ...(v.parameters.pvcName ? { claim: `${v.parameters.pvcNamespace ?? ''}/${v.parameters.pvcName}` } : {}),
    attachedTo: st[i]!.publishedNodes,
    ...(mounts ? { mounts: mounts.get(v.id) ?? [] } : {}),
    health: { abnormal: st[i]!.condition.abnormal, message: st[i]!.condition.message },
    ...(hasIoLimits(ioLimitsOf(v.parameters)) ? { ioLimits: ioLimitsOf(v.parameters) as Record<string, number> } : {}),
    ...(v.parameters.tier ? { tier: v.parameters.tier } : {}),
  }));
}

async function poolReport(ctx: ControllerContext): Promise<PoolStatusReport> {
  const b = ctx.backend;
  const [cap, described, thin] = await Promise.all([b.capacity(), b.describe(), b.thinPools?.() ?? Promise.resolve([])]);
  return { backend: b.kind, location: described.location, totalBytes: cap.totalBytes, availableBytes: cap.availableBytes, reserveBytes: described.reserveBytes, devices: described.devices, thinPools: thin };
}

/** The whole node at a glance (`vpool-csi status`); each part bounded by PART_TIMEOUT_MS. */
export async function collectStatus(state: DriverState, src: StatusSources, track: Track = (w) => w): Promise<DriverStatus> {
  const ctx = state.ctx;
  const status: DriverStatus = {
    driver: {
      name: ctx.driverName,
      version: ctx.version,
      mode: src.mode,
      nodeId: ctx.nodeId,
      backend: ctx.backendKind,
      startedAt: src.startedAt.toISOString(),
      ready: state.notServing === undefined,
      ...(state.notServing !== undefined ? { notReadyBecause: state.notServing } : {}),
    },
    recentProblems: recentProblems().map((p) => ({
      at: p.at.toISOString(),
      message: p.meta?.error ? `${p.message}: ${String(p.meta.error).split('\n')[0]}` : p.message,
      ...(p.meta?.method ? { where: `${String(p.meta.method)}${p.meta.volume ? ` ${String(p.meta.volume)}` : ''}` } : {}),
      ...(p.meta?.code ? { code: String(p.meta.code) } : {}),
    })),
    attention: [],
  };
  const attention = status.attention;
  if (state.notServing !== undefined) attention.push(`the driver is not ready: ${state.notServing}`);
  const full = state.notServing === undefined && 'backend' in ctx && ctx.backend ? (ctx as DriverContext) : undefined;
  if (full && hasBackend(full)) {
    const serveNode = src.mode === 'all' || src.mode === 'node';
    const [pool, vols, snaps] = await Promise.allSettled([
      within('the pool', track(poolReport(full))),
      within('the volume listing', track(volumeDetails(full, '', COUNT_LIMIT, serveNode, false))),
      within('the snapshot listing', track(full.backend.listSnapshots())),
    ]);
    if (pool.status === 'fulfilled') {
      const p = pool.value;
      status.pool = p;
      if (p.totalBytes > 0 && p.availableBytes < p.totalBytes * (1 - FULL_SHARE))
        attention.push(`the pool has ${formatBytes(p.availableBytes)} of ${formatBytes(p.totalBytes)} free for new volumes (after a reserve of ${formatBytes(p.reserveBytes)}): delete volumes or snapshots, or add room`);
      for (const t of p.thinPools) {
        if (t.dataPercent >= THIN_FULL_PERCENT) attention.push(`thin pool ${t.name} data is ${t.dataPercent}% full`);
        if (t.metadataPercent >= THIN_FULL_PERCENT) attention.push(`thin pool ${t.name} metadata is ${t.metadataPercent}% full`);
      }
      for (const d of p.devices) if (d.missing) attention.push(`device ${d.name} of the pool is missing`);
    } else {
      status.pool = { error: message(pool.reason) };
      attention.push(`the pool did not answer: ${message(pool.reason)}`);
    }
    if (vols.status === 'fulfilled') {
      const v = vols.value.volumes;
      const abnormal = v.filter((x) => x.health.abnormal);
      status.volumes = { count: v.length, ...(vols.value.next ? { atLeast: true } : {}), attached: v.filter((x) => x.attachedTo.length).length, staged: v.filter((x) => x.mounts?.length).length, abnormal: abnormal.length };
      const limited = v.filter((x) => x.ioLimits).length;
      if (limited) status.volumes.limited = limited;
      for (const a of abnormal.slice(0, 5)) attention.push(`volume ${a.id} is abnormal: ${a.health.message}`);
      if (abnormal.length > 5) attention.push(`and ${abnormal.length - 5} more abnormal volumes`);
    } else {
      status.volumes = { error: message(vols.reason) };
      attention.push(`the volumes could not be listed: ${message(vols.reason)}`);
    }
    if (snaps.status === 'fulfilled') status.snapshots = { count: snaps.value.length, groups: new Set(snaps.value.filter((s) => s.groupId).map((s) => s.groupId)).size };
    else status.snapshots = { error: message(snaps.reason) };
  }
  if (src.sending) status.transfers = { sending: src.sending() };
  status.copies = operationsInProgress();
  if (src.orphans) {
    const counts = src.orphans();
    status.orphans = counts ? { counts } : { pending: true };
    const found = Object.entries(counts ?? {}).filter(([, n]) => n > 0);
    if (found.length) attention.push(`orphans found: ${found.map(([k, n]) => `${n} ${k.replace(/_/g, ' ')}`).join(', ')} (kubectl get events --field-selector reason=OrphanVolume)`);
  }
  const recent = status.recentProblems.filter((p) => Date.now() - Date.parse(p.at) < RECENT_MS);
  if (recent.length) attention.push(`${recent.length} problem${recent.length === 1 ? '' : 's'} logged in the last 15 minutes (below)`);
  return status;
}

