import { open } from 'node:fs/promises';
import { precondition } from '../../errors.js';
import { run } from '../../exec.js';
import { log } from '../../log.js';
import type { CreateVolumeSpec, ReadableData } from '../backend.js';
import { dmDeviceOf } from './dm.js';
import { tagsOf, type LvmCli, type LvRow } from './lvm-cli.js';
import { INCOMPLETE_TAG, snapshotFromRow } from './tags.js';

/** An LV made for a transfer to another node (a volume's point-in-time copy), removed when it is sent. */
const SEND_TAG = 'vpool.kind=send';

/** What the transfer needs of the pool: its CLI, its VG, and the pool's way to run a command that allocates. */
export interface LvTransferContext {
  lvm: LvmCli;
  vg: string;
  /** lvcreate and the like, with lvm's failures turned into the pool's errors (no space, no device-mapper). */
  change(command: string, args: string[]): Promise<void>;
}

const lvPath = (ctx: LvTransferContext, name: string) => `${ctx.vg}/${name}`;

/** Removes the point-in-time copies a crash left while sending (run once when the pool opens). */
export async function sweepSendLvs(ctx: LvTransferContext, lvs: readonly LvRow[]): Promise<void> {
  for (const r of lvs.filter((x) => tagsOf(x.lv_tags).includes(SEND_TAG))) {
    await ctx.lvm.exec('lvremove', ['-y', lvPath(ctx, r.lv_name)]).catch((e) => log.warn('cannot remove a transfer leftover', { lv: r.lv_name, error: String(e) }));
  }
}

/**
 * A volume whose content comes from another node: made marked incomplete (`createArgs` carry the tag;
 * never listed while so), zeroed if thick (its extents hold what they held before; a thin LV reads
 * zeros where unwritten), filled, flushed, deactivated, and only then unmarked. Any failure removes
 * it; so does the retry after a crash (the pool clears an incomplete LV before creating it again).
 */
export async function createFilledLv(ctx: LvTransferContext, spec: CreateVolumeSpec, thin: boolean, createArgs: string[]): Promise<void> {
  if (!ctx.lvm.activation) throw precondition('a volume from another node needs device-mapper (LV activation), which this kernel lacks');
  await ctx.change('lvcreate', createArgs);
  const device = `/dev/${ctx.vg}/${spec.id}`;
  try {
    await ctx.lvm.exec('lvchange', ['-y', '-ay', '-K', lvPath(ctx, spec.id)]);
    if (!thin) await run('blkdiscard', ['-z', device], { timeoutMs: 3_600_000, uninterruptible: true });
    await spec.fill!({ path: device, file: false });
    const fh = await open(device, 'r+');
    await fh.datasync().finally(() => fh.close());
    await ctx.lvm.exec('lvchange', ['-y', '-an', lvPath(ctx, spec.id)]);
    await ctx.lvm.exec('lvchange', ['-y', '--deltag', INCOMPLETE_TAG, lvPath(ctx, spec.id)]);
  } catch (err) {
    log.warn('a volume from another node failed; removing it', { volume: spec.id, error: String(err) });
    await ctx.lvm.exec('lvchange', ['-y', '-an', lvPath(ctx, spec.id)]).catch(() => undefined);
    await ctx.lvm.exec('lvremove', ['-y', lvPath(ctx, spec.id)]).catch(() => undefined);
    throw err;
  }
}

/**
 * A snapshot's LV, or a snapshot made now of a volume (a pod may be writing it; tagged vpool.kind=send
 * and removed at release, or at the next start after a crash), activated read-only for the transfer.
 * `row` is the source's LV, already checked to be a vpool volume or snapshot of that kind; `leftover`:
 * a copy for sending of that volume exists already.
 */
export async function openLvData(ctx: LvTransferContext, kind: 'volume' | 'snapshot', row: LvRow, leftover: boolean): Promise<ReadableData> {
  if (!ctx.lvm.activation) throw precondition('reading a volume for another node needs device-mapper (LV activation), which this kernel lacks');
  const id = row.lv_name;
  const temporary = kind === 'volume';
  const name = temporary ? `${id}.send` : id;
  if (temporary) {
    if (leftover) await ctx.lvm.exec('lvremove', ['-y', lvPath(ctx, name)]); // a crash's leftover (the start-up sweep missed it)
    const thin = row.segtype === 'thin';
    await ctx.change('lvcreate', ['-y', '-s', ...(thin ? [] : ['-L', `${row.lv_size}b`]), '-n', name, '--addtag', SEND_TAG, lvPath(ctx, id)]);
  }
  const wasActive = !temporary && dmDeviceOf(ctx.vg, name) !== null;
  const drop = async () => {
    if (!wasActive) await ctx.lvm.exec('lvchange', ['-y', '-an', lvPath(ctx, name)]).catch((e) => log.warn('cannot deactivate after a transfer', { lv: name, error: String(e) }));
    if (temporary) await ctx.lvm.exec('lvremove', ['-y', lvPath(ctx, name)]);
  };
  try {
    if (!wasActive) await ctx.lvm.exec('lvchange', ['-y', '-ay', '-K', lvPath(ctx, name)]);
  } catch (err) {
    await drop().catch(() => undefined);
    throw err;
  }
  const size = kind === 'volume' ? Number(row.lv_size) : snapshotFromRow(row).sizeBytes;
  return { path: `/dev/${ctx.vg}/${name}`, size, file: false, release: drop };
}
