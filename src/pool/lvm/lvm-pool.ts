import { busy, conflict, exhausted, internal, invalid, notFound, precondition, unavailable } from '../../errors.js';
import { CommandError } from '../../exec.js';
import { log } from '../../log.js';
import { pageAfter, type Page } from '../../paging.js';
import { deviceUsers } from '../../host/in-use.js';
import { formatBytes, formatBytesPair, roundUp } from '../../units.js';
import type { Condition, CreateSnapshotSpec, CreateVolumeSpec, ParameterCheck, PoolBackend, PoolCapacity, PoolDescription, PoolTuning, ReadableData, SnapshotRecord, VolumeRecord, ThinPoolUse, UnfinishedVolume } from '../backend.js';
import { copyBlockDevice } from './copy.js';
import { createFilledLv, openLvData, sweepSendLvs, type LvTransferContext } from './lv-transfer.js';
import { parseLvAttr } from './lv-attr.js';
import { LvHealth } from './lv-health.js';
import { lvmFailure, lvmReason } from './lvm-errors.js';
import { tagsOf, tagValue, type LvmCli, type LvRow, type PvRow } from './lvm-cli.js';
import { dmDeviceOf } from './dm.js';
import { lvHeld, sweepHalfGroups, sweepIncompleteLvs } from './sweep.js';
import { MetadataCache, type VgMetadata } from './metadata-cache.js';
import { groupOfRow, INCOMPLETE_TAG, parameterTagChanges, isIncomplete, isSnapshotRow, isVolumeRow, POOL_TAG, snapshotFromRow, snapshotTags, THIN_POOL_TAG, TIER_TAG, visibleSnapshotRows, volumeFromRow, volumeTags } from './tags.js';
import { IO_LIMIT_PARAMETERS, type MutableCheck } from '../mutable-parameters.js';
import { TierMoves, type MoveUnit } from './tier-moves.js';
import { LvmGroupSnapshots, resumeLeftSuspended } from './group-snapshots.js';
import { LvmSnapshotBlocks } from './snapshot-blocks.js';
import { ThinMetadata } from './thin-metadata.js';
import { statusFromRows } from './pool-admin.js';

export interface LvmPoolOptions {
  vg: string;
  reserveBytes: number;
  /** Thin pools may promise this many times their size to thin volumes. */
  overprovisionRatio: number;
  /** Where marks of devices suspended for a group snapshot are kept (a tmpfs; default /run/vpool-csi). */
  runDir?: string;
}

const RUN_DIR = '/run/vpool-csi';

const LV_NAME = /^[A-Za-z0-9+_.][A-Za-z0-9+_.-]{0,126}$/;
const stripes = (p: Record<string, string>) => (p.stripes ? ['-i', p.stripes] : []);
const TIER_NAME = /^[a-z0-9]([a-z0-9-]{0,30}[a-z0-9])?$/;

/**
 * Volumes as logical volumes of one VG (thick, or thin in a thin pool), snapshots as thin or COW
 * snapshot LVs, all facts in LV tags. The VG must carry the vpool tag: the driver never touches a
 * VG it was not given by `vpool-csi pool init`.
 */
export class LvmPool implements PoolBackend {
  readonly kind = 'lvm';
  readonly volumeParameters: Record<string, ParameterCheck> = {
    type: (v) => (v === 'thin' || v === 'thick' ? null : 'use thin or thick'),
    thinPool: (v) => (LV_NAME.test(v) ? null : 'not an LV name'),
    stripes: (v) => (/^[1-9][0-9]?$/.test(v) ? null : 'a number of stripes from 1 to 99'),
  };
  readonly expansion = 'node' as const;
  /**
   * `tier`: PVs tagged by `vpool-csi pool init|extend --tier`. A thick volume is made and grown on its
   * tier's PVs alone; a class naming another tier moves a live volume's extents there (tier-moves.ts).
   * A StorageClass may name it too (a default of the class, as every mutable key).
   */
  readonly mutableParameters: Readonly<Record<string, MutableCheck>> = {
    ...IO_LIMIT_PARAMETERS,
    tier: (v) => (TIER_NAME.test(v) ? { value: v } : 'a tier name (lower-case letters, digits and -, e.g. fast)'),
  };
  readonly moves: TierMoves;
  readonly snapshotParameters: Record<string, ParameterCheck> = {
    snapshotReserve: (v) => (/^(100|[1-9][0-9]?)%$/.test(v) || v === '0' || v === 'none' ? null : 'a percentage of the source (1% to 100%), or none'),
  };

  private constructor(
    private readonly lvm: LvmCli,
    private readonly opts: LvmPoolOptions,
    readonly granularity: number,
    private readonly defaultThinPool: string | undefined,
  ) {
    this.moves = new TierMoves(lvm, opts.vg, granularity, () => this.cache.drop());
    this.cache = new MetadataCache(lvm, opts.vg);
    this.health = new LvHealth(lvm, opts.vg);
    // Both need device-mapper: the thin pool's metadata device, and suspending members.
    if (lvm.activation) {
      this.snapshotBlocks = new LvmSnapshotBlocks(lvm, opts.vg, new ThinMetadata(opts.vg));
      this.groupSnapshots = new LvmGroupSnapshots({ vg: opts.vg, lvm, runDir: opts.runDir ?? RUN_DIR, snapshotLv: (src, id, tags, copyOnWrite) => this.snapshotLv(src, id, tags, undefined, copyOnWrite, true), moving: (id) => this.movingReason(id) });
    }
  }

  readonly snapshotBlocks?: LvmSnapshotBlocks;
  readonly groupSnapshots?: LvmGroupSnapshots;

  private readonly cache: MetadataCache;
  private readonly health: LvHealth;

  /**
   * Opens the pool. `sweep`: this process creates volumes, so what a crash left half-made (copies
   * for sending, unfinished clones and restores) is removed, each only when nothing holds it; a
   * node-only process (or `reconcile`) beside a running driver must not. `sysBlock`: where the
   * kernel's dm table is read (dm.ts), for a test's FAKE of one.
   */
  static async open(lvm: LvmCli, opts: LvmPoolOptions, how: { sweep: boolean; sysBlock?: string } = { sweep: true }): Promise<LvmPool> {
    // One full read at start, which also tells the CLI which devices hold the VG (later commands scan only those).
    const { vg, lvs } = await lvm.state(opts.vg);
    if (!vg) throw new Error(`volume group ${opts.vg} does not exist; create it with \`vpool-csi pool init --vg ${opts.vg} DEVICE...\``);
    const tags = tagsOf(vg.vg_tags);
    if (!tags.includes(POOL_TAG)) throw new Error(`volume group ${opts.vg} is not a vpool pool (no ${POOL_TAG} tag); the driver does not touch it`);
    if (how.sweep) {
      // The process that cuts groups: a device its crashed predecessor left suspended holds its workload's
      // I/O. Never another process (`reconcile` beside a running driver would resume members mid-cut).
      if (lvm.activation) await resumeLeftSuspended(opts.runDir ?? RUN_DIR, opts.vg);
      await sweepSendLvs(lvm, opts.vg, lvs);
      await sweepIncompleteLvs(lvm, opts.vg, lvs, how.sysBlock);
      await sweepHalfGroups(lvm, opts.vg, lvs);
    }
    const pool = new LvmPool(lvm, { ...opts }, Number(vg.vg_extent_size), tagValue(tags, THIN_POOL_TAG));
    // The process that serves the pool finishes the moves a crash cut short, in the background.
    if (how.sweep && lvm.activation) void pool.resumeMoves().catch((err: unknown) => log.error('resuming tier moves failed', { vg: opts.vg, err: String(err) }));
    return pool;
  }

  /**
   * After LVM finishes a cut-short pvmove, every volume whose extents are not all on its recorded
   * tier is moved there. Tried again while it fails: a start beside a busy disk can find a PV slow to
   * answer (the pool's bounded header reads).
   */
  private async resumeMoves(): Promise<void> {
    for (let attempt = 1; ; attempt++) {
      try {
        await this.moves.finishCutShort();
        for (const u of await this.misplaced()) this.moves.enqueue(u);
        return;
      } catch (err) {
        if (attempt >= 30) throw err;
        log.warn('resuming tier moves failed; trying again in 10 s', { vg: this.opts.vg, attempt, err: String(err) });
        await new Promise((r) => setTimeout(r, 10_000).unref());
      }
    }
  }

  /** The volumes whose extents are not all on their recorded tier, as moves. */
  private async misplaced(): Promise<MoveUnit[]> {
    const state = await this.metadata();
    const units: MoveUnit[] = [];
    for (const row of state.lvs.filter(isVolumeRow)) {
      const tier = volumeFromRow(row).parameters.tier;
      if (!tier) continue;
      const unit = this.moveUnit(row, state.pvs, tier);
      // Thin volumes of one pool that record different tiers would move their pool back and forth: left as they are.
      if (this.poolMatesOnOtherTiers(row, state.lvs, tier).length) {
        log.warn('a thin pool\'s volumes record different tiers; not moving it', { volume: row.lv_name, pool: row.pool_lv });
        continue;
      }
      if (unit && (await this.moves.outside(unit.lvs, unit.to)).size) units.push(unit);
    }
    return units;
  }

  /** Why a volume's extents cannot be touched now: a move of it (or of its thin pool) is queued or running. */
  movingReason(id: string): string | null {
    return this.moves.moving(id) ? `volume ${id} is being moved to its tier (pvmove, in the background); retry when the move is done (vpool-csi status shows it)` : null;
  }

  /** The idempotent path of a modify (nothing new recorded): a volume off its recorded tier is moved again (a move that failed, a retry after a crash). */
  async applyParameters(vol: VolumeRecord): Promise<void> {
    const tier = vol.parameters.tier;
    if (!tier || !this.lvm.activation || this.moves.moving(vol.id)) return;
    const state = await this.metadata();
    const row = state.lvs.find((r) => r.lv_name === vol.id && isVolumeRow(r));
    const unit = row ? this.moveUnit(row, state.pvs, tier) : null;
    if (unit && !this.poolMatesOnOtherTiers(row!, state.lvs, tier).length && (await this.moves.outside(unit.lvs, unit.to)).size) this.moves.enqueue(unit);
  }

  /** The other thin volumes of a thin volume's pool whose recorded tier is not this one (a thin pool moves whole). */
  private poolMatesOnOtherTiers(row: LvRow, lvs: readonly LvRow[], tier: string): string[] {
    if (row.segtype !== 'thin') return [];
    return lvs.filter((r) => isVolumeRow(r) && r.segtype === 'thin' && r.pool_lv === row.pool_lv && r.lv_name !== row.lv_name && (volumeFromRow(r).parameters.tier ?? tier) !== tier).map((r) => r.lv_name);
  }

  /** What moving a volume to a tier moves: its LV, or for a thin volume its thin pool's data and metadata; null when no PV has the tier. */
  private moveUnit(row: LvRow, pvs: readonly PvRow[], tier: string): MoveUnit | null {
    const to = pvs.filter((p) => tagValue(tagsOf(p.pv_tags), TIER_TAG) === tier).map((p) => p.pv_name);
    if (!to.length) return null;
    const lvs = row.segtype === 'thin' ? [`${row.pool_lv}_tdata`, `${row.pool_lv}_tmeta`] : [row.lv_name];
    return { volumeId: row.lv_name, lvs, to, tier };
  }

  get vg(): string {
    return this.opts.vg;
  }

  /** Settings that may change while serving (a VolumePool edited). */
  applySettings(t: PoolTuning): void {
    this.opts.reserveBytes = t.reserveBytes;
    this.opts.overprovisionRatio = t.overprovisionRatio;
  }

  async probe(): Promise<void> {
    // From the metadata as the PVs say it now: a few header reads while nothing changed (no vgs), and a
    // PV that does not answer makes Probe say so at once instead of hanging with lvm on it.
    const { vg } = await this.metadata();
    if (!vg || !tagsOf(vg.vg_tags).includes(POOL_TAG)) throw new Error(`volume group ${this.opts.vg} is gone or no longer tagged ${POOL_TAG}`);
  }

  private typeOf(params: Record<string, string>): { type: 'thin' | 'thick'; thinPool?: string } {
    const type = (params.type as 'thin' | 'thick' | undefined) ?? (this.defaultThinPool ? 'thin' : 'thick');
    if (type === 'thick') return { type };
    const thinPool = params.thinPool ?? this.defaultThinPool;
    if (!thinPool) throw invalid(`type=thin needs a thin pool: this VG has none (pass thinPool, or create one with \`vpool-csi pool init --thin-pool\`)`);
    return { type, thinPool };
  }

  async capacity(parameters: Record<string, string> = {}, known?: VgMetadata): Promise<PoolCapacity> {
    const { type, thinPool } = this.typeOf(parameters);
    const { vg, pvs, lvs: rows } = known ?? (await this.metadata());
    if (!vg) throw unavailable(`volume group ${this.opts.vg} is gone`);
    if (type === 'thick' && parameters.tier) {
      // A tier's room is its PVs' free extents: GetCapacity per StorageClass is capacity per tier.
      const tier = this.tierPvs(pvs, parameters.tier);
      const free = tier.reduce((sum, p) => sum + Number(p.pv_free), 0);
      return { totalBytes: tier.reduce((sum, p) => sum + Number(p.pv_size), 0), availableBytes: Math.max(0, free - this.opts.reserveBytes) };
    }
    if (type === 'thick') {
      const free = Number(vg.vg_free);
      return { totalBytes: Number(vg.vg_size), availableBytes: Math.max(0, free - this.opts.reserveBytes) };
    }
    const pool = rows.find((r) => r.lv_name === thinPool && r.segtype === 'thin-pool');
    if (!pool) throw invalid(`thin pool ${thinPool} does not exist in ${this.opts.vg}`);
    const promised = rows.filter((r) => r.segtype === 'thin' && r.pool_lv === thinPool).reduce((sum, r) => sum + Number(r.lv_size), 0);
    const size = Number(pool.lv_size);
    const free = size * this.opts.overprovisionRatio - promised - this.opts.reserveBytes;
    return { totalBytes: size, availableBytes: Math.max(0, Math.floor(free)) };
  }

  async getVolume(id: string): Promise<VolumeRecord | null> {
    const row = (await this.metadata()).lvs.find((r) => r.lv_name === id);
    return row && isVolumeRow(row) && !isIncomplete(row) ? volumeFromRow(row) : null;
  }

  async listVolumes(): Promise<VolumeRecord[]> {
    return this.volumeRows(await this.metadata()).map(volumeFromRow);
  }

  /** Records are made for the page's LVs only, from the held metadata's volume rows in ID order. */
  async listVolumePage(after: string, limit: number): Promise<Page<VolumeRecord>> {
    const page = pageAfter(this.volumeRows(await this.metadata()), (r) => r.lv_name, after, limit);
    return { items: page.items.map(volumeFromRow), more: page.more };
  }

  /** The complete volumes' rows of one read of the metadata, in ID (LV name) order; kept while that read is held. */
  private volumeRows(state: VgMetadata): LvRow[] {
    let rows = this.sortedRows.get(state);
    if (!rows) {
      rows = state.lvs.filter((r) => isVolumeRow(r) && !isIncomplete(r)).sort((a, b) => (a.lv_name < b.lv_name ? -1 : a.lv_name > b.lv_name ? 1 : 0));
      this.sortedRows.set(state, rows);
    }
    return rows;
  }

  private readonly sortedRows = new WeakMap<VgMetadata, LvRow[]>();

  /** The VG's PVs of a tier; INVALID_ARGUMENT when it has none (a class naming a tier this node lacks). */
  private tierPvs(pvs: readonly PvRow[], tier: string): PvRow[] {
    const found = pvs.filter((p) => tagValue(tagsOf(p.pv_tags), TIER_TAG) === tier);
    if (!found.length) {
      const tiers = [...new Set(pvs.map((p) => tagValue(tagsOf(p.pv_tags), TIER_TAG)).filter(Boolean))];
      throw invalid(`volume group ${this.opts.vg} has no PV of tier ${tier} (${tiers.length ? `its tiers: ${tiers.join(', ')}` : 'no PV has a tier'}; give devices one with \`vpool-csi pool extend --tier ${tier}\`)`);
    }
    return found;
  }

  /** Where lvcreate and lvextend may take a thick volume's extents: its tier's PVs, or anywhere. */
  private placement(pvs: readonly PvRow[], parameters: Record<string, string>): string[] {
    return parameters.tier ? this.tierPvs(pvs, parameters.tier).map((p) => p.pv_name) : [];
  }

  /** The VG and its LVs as the metadata on the PVs says now (metadata-cache.ts: from memory while it is unchanged). */
  private metadata(): Promise<VgMetadata> {
    return this.cache.read();
  }

  private lvPath(name: string): string {
    return `${this.opts.vg}/${name}`;
  }

  /** Runs an lvcreate-like command; what lvm's failure means is decided in lvm-errors.ts. */
  private async lvmChange(command: string, args: string[], opts?: { uninterruptible?: boolean; timeoutMs?: number }): Promise<void> {
    try {
      await this.lvm.exec(command, args, opts);
    } catch (err) {
      const failure = lvmFailure(err);
      if (failure === 'no-space') throw exhausted(`${this.opts.vg}: ${lvmReason(err as CommandError)}`);
      if (failure === 'no-device-mapper') throw precondition(`${this.opts.vg}: ${lvmReason(err as CommandError)} (this kernel has no device-mapper)`);
      throw err;
    }
  }

  private activationArgs(thick: boolean): string[] {
    // Without device-mapper nothing can be activated or zeroed: create the metadata only.
    return this.lvm.activation ? [] : ['-an', ...(thick ? ['-Zn'] : [])];
  }

  async createVolume(spec: CreateVolumeSpec): Promise<VolumeRecord> {
    const { type, thinPool } = this.typeOf(spec.parameters);
    // Each lvm report costs a device scan: one fullreport for the LVs and the VG, reused below.
    const state = await this.metadata();
    const { lvs: rows } = state;
    const leftover = rows.find((r) => r.lv_name === spec.id);
    if (leftover && isIncomplete(leftover)) {
      // A clone or restore interrupted by a crash or a timeout: start it over from nothing.
      log.warn('removing an unfinished clone or restore before retrying it', { volume: spec.id });
      await this.lvm.exec('lvremove', ['-y', this.lvPath(spec.id)]);
    } else if (leftover) {
      throw conflict(`LV ${spec.id} exists but is not a vpool volume`);
    }
    // A thin volume's blocks are its thin pool's, wherever the pool's extents are: only a thick volume is placed by tier.
    if (type === 'thin' && spec.parameters.tier) throw invalid(`tier=${spec.parameters.tier} places thick volumes (type: thick): a thin volume's blocks are wherever its thin pool is`);
    const { availableBytes } = await this.capacity(spec.parameters, state);
    const onPvs = type === 'thick' ? this.placement(state.pvs, spec.parameters) : [];
    if (spec.capacityBytes > availableBytes) {
      const [free, asked] = formatBytesPair(availableBytes, spec.capacityBytes);
      const where = spec.parameters.tier && type === 'thick' ? `on its tier ${spec.parameters.tier} PVs` : `for ${type} volumes`;
      throw exhausted(`volume group ${this.opts.vg} has ${free} free ${where} (after the reserve), ${asked} asked for ${spec.name}: delete volumes or snapshots, or add a disk (vpool-csi pool extend${spec.parameters.tier ? ` --tier ${spec.parameters.tier}` : ''})`);
    }
    const createdAt = Date.now();
    const tags = volumeTags({ ...spec, createdAt });
    const tagArgs = tags.flatMap((t) => ['--addtag', t]);
    const size = `${spec.capacityBytes}b`;

    if (spec.fill) {
      const marked = [...tagArgs, '--addtag', INCOMPLETE_TAG];
      const args = type === 'thin' ? ['-y', '-V', size, '--thinpool', this.lvPath(thinPool!), '-n', spec.id, ...marked, this.opts.vg] : ['-y', '-L', size, ...stripes(spec.parameters), '-n', spec.id, ...marked, this.opts.vg, ...onPvs];
      await createFilledLv(this.transferContext, spec, type === 'thin', args);
      const made = await this.getVolume(spec.id);
      if (!made) throw internal(`volume ${spec.id} vanished right after it was filled`);
      return made;
    }
    const src = spec.source ? (spec.source.kind === 'snapshot' ? visibleSnapshotRows(rows) : rows.filter(isVolumeRow)).find((r) => r.lv_name === spec.source!.id) : undefined;
    if (spec.source && !src) throw notFound(`source ${spec.source.kind} ${spec.source.id} does not exist`);

    if (src && type === 'thin' && src.segtype === 'thin' && src.pool_lv === thinPool) {
      // Thin from thin: a writable thin snapshot shares every block with its source.
      await this.lvmChange('lvcreate', ['-y', '-s', '-kn', '-prw', '-n', spec.id, ...tagArgs, '--addtag', INCOMPLETE_TAG, this.lvPath(src.lv_name)]);
      return this.finishCopy((await this.lvm.lv(this.opts.vg, spec.id))!, spec);
    }
    if (type === 'thin') {
      await this.lvmChange('lvcreate', ['-y', '-V', size, '--thinpool', this.lvPath(thinPool!), '-n', spec.id, ...tagArgs, ...(src ? ['--addtag', INCOMPLETE_TAG] : []), ...this.activationArgs(false), this.opts.vg]);
    } else {
      await this.lvmChange('lvcreate', ['-y', '-L', size, ...stripes(spec.parameters), '-n', spec.id, ...tagArgs, ...(src ? ['--addtag', INCOMPLETE_TAG] : []), ...this.activationArgs(true), this.opts.vg, ...onPvs]);
    }
    // The size is already a whole number of extents, so the record is known without asking lvs again.
    if (!src) {
      return { id: spec.id, name: spec.name, capacityBytes: spec.capacityBytes, createdAt, parameters: spec.parameters };
    }
    return this.finishCopy((await this.lvm.lv(this.opts.vg, spec.id))!, spec);
  }

  /** A snapshot's LV, or a volume's: in place when inactive, from a snapshot made now when active (lv-transfer.ts). */
  async openData(kind: 'volume' | 'snapshot', id: string): Promise<ReadableData | null> {
    const { lvs } = await this.metadata();
    const row = lvs.find((r) => r.lv_name === id);
    if (!row || (kind === 'snapshot' ? !visibleSnapshotRows([...lvs]).includes(row) : !isVolumeRow(row) || isIncomplete(row))) return null;
    return openLvData(this.transferContext, kind, row, lvs.some((r) => r.lv_name === `${id}.send`));
  }

  private get transferContext(): LvTransferContext {
    return {
      lvm: this.lvm,
      vg: this.opts.vg,
      change: (c, a) => this.lvmChange(c, a),
      extentBytes: this.granularity,
      thickRoom: async () => (await this.capacity({ type: 'thick' })).availableBytes,
    };
  }

  /** Completes a clone or restore: grow a thin snapshot to size, or copy the source block by block; idempotent. */
  private async finishCopy(row: LvRow, spec: CreateVolumeSpec): Promise<VolumeRecord> {
    const source = spec.source;
    if (!source) throw internal(`LV ${row.lv_name} is marked incomplete but has no source`);
    try {
      if (row.origin && row.origin === source.id) {
        if (Number(row.lv_size) < spec.capacityBytes) await this.lvmChange('lvextend', ['-y', '-L', `${spec.capacityBytes}b`, this.lvPath(row.lv_name)]);
      } else {
        if (!this.lvm.activation) throw precondition('copying a volume needs device-mapper (LV activation), which this kernel lacks');
        // The source as of now: an active volume (a pod may be writing it) through a snapshot, as for sending.
        const { lvs } = await this.metadata();
        const srcRow = lvs.find((r) => r.lv_name === source.id);
        if (!srcRow) throw notFound(`source ${source.kind} ${source.id} does not exist`);
        const from = await openLvData(this.transferContext, source.kind, srcRow, lvs.some((r) => r.lv_name === `${source.id}.send`));
        try {
          await this.lvm.exec('lvchange', ['-y', '-ay', this.lvPath(row.lv_name)]);
          await copyBlockDevice(from.path, `/dev/${this.opts.vg}/${row.lv_name}`);
          await this.lvm.exec('lvchange', ['-y', '-an', this.lvPath(row.lv_name)]);
        } finally {
          await from.release();
        }
      }
      await this.lvm.exec('lvchange', ['-y', '--deltag', INCOMPLETE_TAG, this.lvPath(row.lv_name)]);
    } catch (err) {
      // Leave nothing half-made behind: the CO retries and starts over.
      log.warn('clone or restore failed; removing the partial volume', { volume: row.lv_name, error: String(err) });
      await this.lvm.exec('lvremove', ['-y', this.lvPath(row.lv_name)]).catch(() => undefined);
      throw err;
    }
    return (await this.getVolume(row.lv_name))!;
  }

  /** Called after volumeBusy, which has checked that the LV is a free vpool volume. */
  async deleteVolume(id: string): Promise<void> {
    try {
      // Thick extents are reused by later volumes: discard them on removal where the devices support it.
      await this.lvm.exec('lvremove', ['-y', this.lvPath(id)], { config: 'devices{issue_discards=1}' });
    } catch (err) {
      if (lvmFailure(err) === 'not-found') return;
      throw err;
    }
  }

  async expandVolume(id: string, capacityBytes: number): Promise<VolumeRecord> {
    const row = await this.lvm.lv(this.opts.vg, id);
    if (!row || !isVolumeRow(row)) throw notFound(`volume ${id} does not exist`);
    const target = roundUp(capacityBytes, this.granularity);
    if (target > Number(row.lv_size)) {
      const moving = this.movingReason(id);
      if (moving) throw precondition(moving);
      const cow = (await this.lvm.lvs(this.opts.vg)).filter((r) => r.origin === id && r.segtype !== 'thin' && isSnapshotRow(r)).map((r) => r.lv_name);
      if (cow.length) throw precondition(`volume ${id} has copy-on-write snapshots (${cow.join(', ')}: its own, or members of group snapshots cut while it was attached); LVM cannot grow the origin of one while it is active: delete them first`);
      const params = volumeFromRow(row).parameters;
      const state = await this.metadata();
      const { availableBytes } = await this.capacity(params, state);
      const onPvs = row.segtype === 'thin' ? [] : this.placement(state.pvs, params);
      if (target - Number(row.lv_size) > availableBytes) {
        const [free, asked] = formatBytesPair(availableBytes, target - Number(row.lv_size));
        const where = onPvs.length ? ` on its tier ${params.tier} PVs` : '';
        throw exhausted(`volume group ${this.opts.vg} has ${free} free${where} (after the reserve), growing ${id} to ${formatBytes(target)} needs ${asked} more: delete volumes or snapshots, or add a disk (vpool-csi pool extend${onPvs.length ? ` --tier ${params.tier}` : ''})`);
      }
      await this.lvmChange('lvextend', ['-y', '-L', `${target}b`, this.lvPath(id), ...onPvs]);
    }
    return (await this.getVolume(id))!;
  }

  async setParameters(id: string, parameters: Record<string, string>): Promise<VolumeRecord> {
    const row = await this.lvm.lv(this.opts.vg, id);
    if (!row || !isVolumeRow(row)) throw notFound(`volume ${id} does not exist`);
    const was = volumeFromRow(row).parameters;
    let move: MoveUnit | null = null;
    const movingNow = this.movingReason(id);
    if (movingNow && parameters.tier !== was.tier) throw busy(movingNow);
    if (parameters.tier && parameters.tier !== was.tier) {
      // Checked before anything is recorded: the tier exists here and has room for what must move.
      const state = await this.metadata();
      this.tierPvs(state.pvs, parameters.tier);
      move = this.moveUnit(row, state.pvs, parameters.tier)!;
      const others = this.poolMatesOnOtherTiers(row, state.lvs, parameters.tier);
      if (others.length) throw precondition(`volume ${id} is thin: its blocks move with its whole thin pool ${row.pool_lv}, whose volumes ${others.join(', ')} are of another tier; give them the same class first, or use thick volumes for tiers`);
      if (!this.lvm.activation) throw precondition(`moving volume ${id} to tier ${parameters.tier} needs device-mapper (pvmove), which this host lacks`);
      const outside = [...(await this.moves.outside(move.lvs, move.to)).values()].reduce((a, b) => a + b, 0);
      const stripeCount = Number(was.stripes ?? 1);
      if (move.to.length < stripeCount) throw exhausted(`volume ${id} is striped over ${stripeCount} PVs, and tier ${parameters.tier} has ${move.to.length}: pvmove keeps stripes on separate PVs`);
      const room = Math.floor(Math.max(0, move.to.reduce((sum, pv) => sum + Number(state.pvs.find((p) => p.pv_name === pv)!.pv_free), 0) - this.opts.reserveBytes) / this.granularity);
      if (outside > room) {
        const [free, asked] = formatBytesPair(room * this.granularity, outside * this.granularity);
        throw exhausted(`tier ${parameters.tier} of volume group ${this.opts.vg} has ${free} free, volume ${id} needs ${asked} moved there${row.segtype === 'thin' ? ` (its thin pool ${row.pool_lv})` : ''}: add a disk (vpool-csi pool extend --tier ${parameters.tier})`);
      }
    }
    const args = parameterTagChanges(was, parameters);
    if (args.length) await this.lvmChange('lvchange', ['-y', ...args, this.lvPath(id)]);
    // Recorded first: a crash from here on leaves a volume off its tier, which the next start moves.
    if (move) this.moves.enqueue(move);
    return (await this.getVolume(id))!;
  }

  async describe(): Promise<PoolDescription> {
    // The PV headers first (metadata(): fails at once on a PV that does not answer), so a status never
    // starts lvm commands that would hang on such a disk and hold the VG's lock against real calls.
    await this.metadata();
    const { vg, pvs, lvs } = await this.lvm.state(this.opts.vg);
    if (!vg) throw notFound(`volume group ${this.opts.vg} does not exist`);
    const status = statusFromRows(vg, pvs, lvs);
    return { location: `volume group ${this.opts.vg}`, devices: status.devices, reserveBytes: this.opts.reserveBytes };
  }

  /** A thick LV holds its whole size; a thin one what its data_percent says it has mapped. */
  async allocation(volumes: readonly VolumeRecord[]): Promise<Map<string, number>> {
    const known = (await this.metadata()).lvs;
    const wanted = new Set(volumes.map((v) => v.id));
    // Only thin LVs need lvs (their data_percent is device-mapper's); thick ones are their size, from the metadata already read.
    const thin = known.some((r) => wanted.has(r.lv_name) && r.segtype === 'thin');
    const rows = new Map((thin ? await this.lvm.lvs(this.opts.vg) : known).map((r) => [r.lv_name, r]));
    const out = new Map<string, number>();
    for (const v of volumes) {
      const r = rows.get(v.id);
      if (r) out.set(v.id, r.segtype === 'thin' ? Math.round((Number(r.lv_size) * Number(r.data_percent || 0)) / 100) : Number(r.lv_size));
    }
    return out;
  }

  async thinPools(): Promise<ThinPoolUse[]> {
    return (await this.lvm.lvs(this.opts.vg))
      .filter((r) => r.segtype === 'thin-pool')
      .map((r) => ({ name: r.lv_name, dataPercent: Number(r.data_percent || 0), metadataPercent: Number(r.metadata_percent || 0) }));
  }

  /** Health and thin pool fullness: lv-health.ts. */
  async volumeConditions(volumes: readonly VolumeRecord[]): Promise<Condition[]> {
    return this.health.conditions(volumes, volumes.length ? (await this.metadata()).lvs : []);
  }

  /**
   * Why the volume must not go now. What is in the metadata (ours? snapshots of it?) comes from the
   * held metadata; whether it is in use comes from device-mapper: an LV with no dm device is not
   * active, so nothing can have it open, and no lvm command is needed to say so. An active one is
   * asked of lvm (its open count) and of the host (who holds it).
   */
  async volumeBusy(id: string): Promise<string | null> {
    const rows = (await this.metadata()).lvs;
    const row = rows.find((r) => r.lv_name === id);
    if (!row) return null;
    if (!isVolumeRow(row)) return `LV ${this.lvPath(id)} is not a vpool volume; the driver does not touch it`;
    const moving = this.movingReason(id);
    if (moving) return moving;
    // The held row's lv_attr is as old as the last metadata read: activation and open counts are not
    // metadata, so they are never taken from it. No dm device: inactive, nothing can hold it.
    const dm = this.lvm.activation ? dmDeviceOf(this.opts.vg, id) : null;
    if (dm !== null) {
      const attr = parseLvAttr((await this.lvm.lv(this.opts.vg, id))?.lv_attr);
      if (attr.open) return `volume ${id} is open (staged or in use); unstage it first`;
      // Active but not open: a raw block staging binds the device node without opening it.
      if (attr.state !== 'inactive') {
        const users = await deviceUsers([`/dev/${this.opts.vg}/${id}`, ...(dm ? [`/dev/${dm}`] : [])]);
        if (users.length) return `volume ${id} is in use: ${users.join('; ')}; unstage it first`;
      }
    }
    const cow = rows.filter((r) => r.origin === id && r.segtype !== 'thin' && isSnapshotRow(r)).map((r) => r.lv_name);
    if (cow.length) return `volume ${id} has copy-on-write snapshots (${cow.join(', ')}) that would be lost; delete them first`;
    return null;
  }

  async listUnfinished(): Promise<UnfinishedVolume[]> {
    return (await this.metadata()).lvs
      .filter((r) => isVolumeRow(r) && isIncomplete(r))
      .map((r) => volumeFromRow(r))
      .map((v) => ({ id: v.id, name: v.name, sizeBytes: v.capacityBytes, createdAt: v.createdAt }));
  }

  async removeUnfinished(id: string): Promise<string | null> {
    const row = await this.lvm.lv(this.opts.vg, id);
    if (!row || !isVolumeRow(row) || !isIncomplete(row)) return null;
    const held = await lvHeld(this.lvm, this.opts.vg, id);
    if (held) return held;
    await this.lvm.exec('lvremove', ['-y', this.lvPath(id)]);
    return null;
  }

  async getSnapshot(id: string): Promise<SnapshotRecord | null> {
    const row = visibleSnapshotRows((await this.metadata()).lvs).find((r) => r.lv_name === id);
    return row ? snapshotFromRow(row) : null;
  }

  async listSnapshots(): Promise<SnapshotRecord[]> {
    return visibleSnapshotRows((await this.metadata()).lvs).map(snapshotFromRow).sort((a, b) => a.id.localeCompare(b.id));
  }

  async createSnapshot(spec: CreateSnapshotSpec): Promise<SnapshotRecord> {
    const src = await this.lvm.lv(this.opts.vg, spec.sourceVolumeId);
    if (!src || !isVolumeRow(src)) throw notFound(`source volume ${spec.sourceVolumeId} does not exist`);
    const moving = this.movingReason(spec.sourceVolumeId);
    if (moving) throw precondition(moving);
    const tags = snapshotTags({ name: spec.name, createdAt: Date.now(), sourceVolumeId: src.lv_name, sizeBytes: Number(src.lv_size) });
    await this.snapshotLv(src, spec.id, tags, spec.parameters.snapshotReserve);
    return (await this.getSnapshot(spec.id))!;
  }

  /** One snapshot LV of a volume: thin from thin (skipped at activation, read-only: a point in time, not a volume), else copy-on-write. */
  private async snapshotLv(src: LvRow, id: string, tags: string[], snapshotReserve = '20%', copyOnWrite = false, inCut = false): Promise<void> {
    const tagArgs = tags.flatMap((t) => ['--addtag', t]);
    // Within a group's cut, lvcreate is never killed for the call's sake: killed between loading the
    // origin's new table and resuming it, it would leave the origin suspended with a table half made.
    const how = inCut ? { uninterruptible: true, timeoutMs: 300_000 } : undefined;
    if (src.segtype === 'thin' && !copyOnWrite) {
      await this.lvmChange('lvcreate', ['-y', '-s', '-ky', '-pr', '-n', id, ...tagArgs, this.lvPath(src.lv_name)], how);
      return;
    }
    if (snapshotReserve === '0' || snapshotReserve === 'none') throw invalid(`volume ${src.lv_name} is ${src.segtype === 'thin' ? 'cut copy-on-write' : 'thick'}: its snapshots need a copy-on-write reserve (snapshotReserve), which this class disables`);
    const cow = roundUp(Math.ceil((Number(src.lv_size) * Number(snapshotReserve.replace('%', ''))) / 100), this.granularity);
    await this.lvmChange('lvcreate', ['-y', '-s', '-pr', '-L', `${cow}b`, '-n', id, ...tagArgs, this.lvPath(src.lv_name)], how);
  }

  async deleteSnapshot(id: string): Promise<void> {
    const row = await this.lvm.lv(this.opts.vg, id);
    if (!row) return;
    if (!isSnapshotRow(row)) throw internal(`LV ${id} is not a vpool snapshot`);
    const group = groupOfRow(row);
    if (group && visibleSnapshotRows(await this.lvm.lvs(this.opts.vg)).some((r) => r.lv_name === id)) {
      throw invalid(`snapshot ${id} is a member of group snapshot ${group.id} and cannot be deleted alone: delete the group (DeleteVolumeGroupSnapshot)`);
    }
    await this.lvm.exec('lvremove', ['-y', this.lvPath(id)]);
  }
}
