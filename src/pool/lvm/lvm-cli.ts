import { readFileSync } from 'node:fs';
import { PvReadTimeout, readPvMetadataVersion } from './pv-headers.js';
import { run } from '../../exec.js';
import { log } from '../../log.js';
import { DeviceNotAnswering } from '../../errors.js';
import { lvmFailure, scanMayHaveMissed } from './lvm-errors.js';


export interface LvmCliOptions {
  /**
   * False where the kernel has no device-mapper (this project's test machines): metadata commands
   * then run with activation disabled, enough for the controller side; the node side needs it on.
   */
  activation: boolean;
  timeoutMs?: number;
  /**
   * The VG every command of this CLI is about. lvm then scans only that VG's PVs once it has seen
   * them (`--devices`), instead of every block device of the host: on a node with many disks (or a
   * thousand loop devices) the scan is most of what a command costs.
   */
  vg?: string;
  /** How long a read of a PV's metadata headers may take before the PV counts as hung (default: pvReadTimeoutMs()). */
  pvReadTimeoutMs?: number;
}

/**
 * How long a read of a PV's metadata headers may take before the PV counts as hung: 2 s, or
 * $VPOOL_PV_READ_TIMEOUT_MS (100 to 600000) on a machine whose disks are slow to answer when nothing is
 * wrong (an emulated VM, an overloaded node). A value out of range is an error, not a silent default.
 */
export function pvReadTimeoutMs(env: NodeJS.ProcessEnv = process.env): number {
  const text = env.VPOOL_PV_READ_TIMEOUT_MS;
  if (text === undefined || text === '') return 2_000;
  const ms = Number(text);
  if (!Number.isInteger(ms) || ms < 100 || ms > 600_000) throw new Error(`VPOOL_PV_READ_TIMEOUT_MS must be a whole number of milliseconds from 100 to 600000 (got ${JSON.stringify(text)})`);
  return ms;
}

/**
 * Whether this kernel can activate LVs. The kernel's own list of misc devices says; the
 * /dev/mapper/control node alone does not, as lvm creates it even where the driver is absent.
 */
export function deviceMapperAvailable(): boolean {
  try {
    return /\bdevice-mapper\b/.test(readFileSync('/proc/misc', 'utf8'));
  } catch {
    return false;
  }
}

const REPORT_FIELDS = {
  lv: ['lv_name', 'vg_name', 'lv_size', 'lv_tags', 'lv_attr', 'origin', 'pool_lv', 'data_percent', 'metadata_percent', 'lv_path', 'lv_layout'],
  vg: ['vg_name', 'vg_size', 'vg_free', 'vg_extent_size', 'vg_extent_count', 'vg_free_count', 'vg_tags', 'pv_count', 'lv_count', 'vg_seqno'],
  pv: ['pv_name', 'vg_name', 'pv_size', 'pv_free', 'pv_attr', 'pv_tags'],
} as const;

/** Rows of lvm's JSON reports: exactly the fields asked for, each a string as lvm prints it with --units b --nosuffix. */
type ReportRow<K extends keyof typeof REPORT_FIELDS> = Record<(typeof REPORT_FIELDS)[K][number], string>;
/** An LV, with its segment type derived from lv_layout (thin, thin-pool, linear, striped, ...). */
export type LvRow = ReportRow<'lv'> & { segtype: string };
export type VgRow = ReportRow<'vg'>;
export type PvRow = ReportRow<'pv'>;

/** What one read of lvm's metadata says of a VG. */
export interface LvmState {
  vg: VgRow | null;
  /** The VG's PVs, or with allPvs every PV on the host. */
  pvs: PvRow[];
  lvs: LvRow[];
}

/**
 * The lvm2 tools through the one command runner: JSON reports in bytes, a timeout, no fd-leak
 * warnings, and activation disabled when the kernel cannot do it.
 */
export class LvmCli {
  /** The PVs of opts.vg as last seen, which commands scan instead of every device; null: scan all. */
  private scope: string[] | null = null;

  private readonly pvReadTimeoutMs: number;

  constructor(private readonly opts: LvmCliOptions) {
    this.pvReadTimeoutMs = opts.pvReadTimeoutMs ?? pvReadTimeoutMs();
  }

  /** The devices a command may scan, as lvm arguments. */
  private scanArgs(): string[] {
    return this.scope ? ['--devices', this.scope.join(',')] : [];
  }

  /**
   * Learns the VG's PVs from a report of it. A PV lvm could not find, or fewer PVs than the VG has,
   * means the list is stale (a PV added by another process, device names changed at boot): scan all.
   */
  private learnScope(vg: VgRow | null, pvs: readonly PvRow[]): void {
    if (!this.opts.vg || vg?.vg_name !== this.opts.vg) return;
    const mine = pvs.filter((p) => p.vg_name === this.opts.vg);
    const complete = mine.length === Number(vg.pv_count) && mine.every((p) => p.pv_name.startsWith('/dev/') && !(p.pv_attr ?? '').includes('m'));
    this.scope = complete ? mine.map((p) => p.pv_name).sort() : null;
  }

  /**
   * The VG's metadata as it stands on its PVs now, read from the disks without running lvm: each
   * PV's metadata area header, which says where the current metadata text lies, its size and its
   * checksum, and so changes with every commit any process makes; and the text's seqno, which every
   * commit raises by one. Null when it cannot be read (the PVs not known yet, one unreadable or
   * unlabelled): then nothing may be taken from memory. seqno is null where the text could not be read.
   */
  async metadataVersion(): Promise<{ fingerprint: string; seqno: number | null } | null> {
    const scope = this.scope;
    if (!scope) return null;
    let reads: Array<Awaited<ReturnType<typeof readPvMetadataVersion>>>;
    try {
      reads = await Promise.all(scope.map((pv) => readPvMetadataVersion(pv, this.pvReadTimeoutMs)));
    } catch (err) {
      // lvm would scan the same PV and hang with it: the call fails at once instead, and says why.
      if (err instanceof PvReadTimeout) {
        log.warn('a PV of the pool does not answer', { vg: this.opts.vg, err: err.message });
        throw new DeviceNotAnswering(`volume group ${this.opts.vg}: ${err.message}`);
      }
      throw err;
    }
    if (reads.some((r) => r === null)) return null;
    return { fingerprint: reads.map((r, i) => `${scope[i]}:${r!.headers}`).join('|'), seqno: reads[0]!.seqno };
  }

  /** Whether commands scan the VG's PVs only (for tests and diagnostics). */
  get scanned(): readonly string[] | null {
    return this.scope;
  }

  get activation(): boolean {
    return this.opts.activation;
  }

  /** lvm takes one --config: the activation switch and any per-command settings go in together. */
  private config(extra?: string): string[] {
    const parts = [...(this.opts.activation ? [] : ['global{activation=0}']), ...(extra ? [extra] : [])];
    return parts.length ? ['--config', parts.join(' ')] : [];
  }

  /**
   * Runs an lvm tool (`lvcreate`, ..., or `lvm` with its subcommand first). `scanAll` for a command
   * that must see every device (a report of all PVs).
   */
  async exec(command: string, args: readonly string[], opts: { timeoutMs?: number; config?: string; scanAll?: boolean; uninterruptible?: boolean } = {}): Promise<string> {
    // `lvm SUBCOMMAND` takes its options after the subcommand.
    const [head, rest] = command === 'lvm' ? [[args[0]], args.slice(1)] : [[], args];
    const attempt = async (scan: string[]) => (await run(command, [...head, ...this.config(opts.config), ...scan, ...rest], { timeoutMs: opts.timeoutMs ?? this.opts.timeoutMs ?? 120_000, uninterruptible: opts.uninterruptible })).stdout;
    const scan = opts.scanAll ? [] : this.scanArgs();
    if (!scan.length) return attempt([]);
    try {
      return await attempt(scan);
    } catch (err) {
      // Perhaps the VG has a PV this list lacks: lvm then refuses to change it. Once more, scanning every device.
      if (!scanMayHaveMissed(err)) throw err;
      this.scope = null;
      return attempt([]);
    }
  }

  private async report<K extends keyof typeof REPORT_FIELDS>(command: 'lvs' | 'vgs' | 'pvs', kind: K, args: readonly string[]): Promise<ReportRow<K>[]> {
    const out = await this.exec(command, ['--reportformat', 'json', '--units', 'b', '--nosuffix', '-o', REPORT_FIELDS[kind].join(','), ...args]);
    const parsed = JSON.parse(out) as { report: Array<Record<string, ReportRow<K>[]>> };
    return parsed.report.flatMap((r) => r[kind] ?? []);
  }

  /**
   * One row per LV. Only LV-level fields are asked for: a segment field (segtype, stripes) would
   * make lvs print a row per segment. `segtype` is derived from lv_layout for the callers.
   */
  async lvs(vg: string): Promise<LvRow[]> {
    const rows = await this.report('lvs', 'lv', ['-a', vg]);
    const seen = new Set<string>();
    return rows.filter((r) => !seen.has(r.lv_name) && seen.add(r.lv_name)).map((r) => ({ ...r, segtype: segtypeOf(r.lv_layout ?? '') }));
  }

  /**
   * The VG, its PVs and all its LVs from one `lvm fullreport`: one process and one consistent read
   * of the metadata where vgs, pvs and lvs took three. With `allPvs`, every PV on the host comes
   * too (those of other VGs and orphans: what a device check must see), still from the one call.
   * A VG that does not exist reads as { vg: null }.
   */
  async state(vg: string, opts: { allPvs?: boolean } = {}): Promise<LvmState> {
    let out: string;
    try {
      const columns = (['vg', 'pv', 'lv'] as const).flatMap((k) => ['--configreport', k, '-o', REPORT_FIELDS[k].join(',')]);
      // The segment reports cannot be left out; one cheap column each.
      const segments = ['--configreport', 'pvseg', '-o', 'pvseg_start', '--configreport', 'seg', '-o', 'seg_start'];
      const scope = opts.allPvs ? [] : [vg];
      out = await this.exec('lvm', ['fullreport', '--reportformat', 'json', '--units', 'b', '--nosuffix', ...columns, ...segments, ...scope], { scanAll: opts.allPvs });
    } catch (err) {
      if (lvmFailure(err) === 'not-found') return { vg: null, pvs: [], lvs: [] };
      throw err;
    }
    // One block per VG (its row, PVs and LVs); orphan PVs come in a block without a VG.
    const blocks = (JSON.parse(out) as { report: Array<{ vg?: VgRow[]; pv?: PvRow[]; lv?: ReportRow<'lv'>[] }> }).report;
    const ours = blocks.filter((b) => b.vg?.[0]?.vg_name === vg);
    const seen = new Set<string>();
    const lvs = ours.flatMap((b) => b.lv ?? []).filter((r) => !seen.has(r.lv_name) && seen.add(r.lv_name)).map((r) => ({ ...r, segtype: segtypeOf(r.lv_layout ?? '') }));
    const state = { vg: ours[0]?.vg?.[0] ?? null, pvs: blocks.flatMap((b) => b.pv ?? []), lvs };
    this.learnScope(state.vg, state.pvs);
    return state;
  }

  /**
   * One LV, or null when it does not exist: lvm selects it (no row for the others to print and
   * parse), and an absent LV is an empty report rather than a failed command.
   */
  async lv(vg: string, name: string): Promise<LvRow | null> {
    const rows = await this.report('lvs', 'lv', ['-a', '--select', `lv_name=${name}`, vg]);
    const row = rows.find((r) => r.lv_name === name);
    return row ? { ...row, segtype: segtypeOf(row.lv_layout ?? '') } : null;
  }

  async vg(vg: string): Promise<VgRow | null> {
    const rows = await this.report('vgs', 'vg', []);
    return rows.find((r) => r.vg_name === vg) ?? null;
  }

  vgsAll(): Promise<VgRow[]> {
    return this.report('vgs', 'vg', []);
  }

  pvs(): Promise<PvRow[]> {
    return this.report('pvs', 'pv', []);
  }
}

/** The tags of an lv_tags, vg_tags or pv_tags field. */
export function tagsOf(field: string | undefined): string[] {
  return field ? field.split(',') : [];
}

/** Value of a `key=value` tag, or undefined. */
export function tagValue(tags: readonly string[], key: string): string | undefined {
  const t = tags.find((x) => x.startsWith(`${key}=`));
  return t === undefined ? undefined : t.slice(key.length + 1);
}

function segtypeOf(layout: string): string {
  const parts = layout.split(',');
  if (parts.includes('thin')) return parts.includes('pool') ? 'thin-pool' : 'thin';
  return parts[0] ?? '';
}
