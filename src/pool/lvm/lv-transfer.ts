import { open } from 'node:fs/promises';
import { exhausted, precondition } from '../../errors.js';
import { run } from '../../exec.js';
import { log } from '../../log.js';
import type { CreateVolumeSpec, ReadableData } from '../backend.js';
import { dmDeviceOf } from './dm.js';
import { parseLvAttr } from './lv-attr.js';
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
  extentBytes: number;
  /** What the pool would give a new thick volume now (GetCapacity's figure): a COW snapshot for sending takes from the same free extents. */
  thickRoom(): Promise<number>;
}

const lvPath = (ctx: LvTransferContext, name: string) => `${ctx.vg}/${name}`;

/** Removes the point-in-time copies a crash left while sending (run once when the pool opens). */
export async function sweepSendLvs(lvm: LvmCli, vg: string, lvs: readonly LvRow[]): Promise<void> {
  for (const r of lvs.filter((x) => tagsOf(x.lv_tags).includes(SEND_TAG))) {
    await lvm.exec('lvremove', ['-y', `${vg}/${r.lv_name}`]).catch((e) => log.warn('cannot remove a transfer leftover', { lv: r.lv_name, error: String(e) }));
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

/** The chunk size of a copy-on-write snapshot made for sending (lvcreate --chunksize), which its size is computed for. */
const COW_CHUNK = 4096;

/**
 * The bytes a COW snapshot needs so that it can never overflow, whatever is written to its origin:
 * every origin chunk, the exception store's header and metadata chunks, and the allowance lvm adds
 * for kernels that may leak chunks on a crash (lvm2's _cow_max_size, snapshot_manip.c), in whole
 * extents. lvm takes a larger -L down to this; never a smaller one up.
 */
export function cowBytesCovering(originBytes: number, extentBytes: number): number {
  const originChunks = Math.ceil(originBytes / COW_CHUNK);
  const perMetadataChunk = COW_CHUNK / 16;
  const metadataChunks = Math.floor((originChunks + perMetadataChunk) / perMetadataChunk);
  const chunks = 1 + originChunks + metadataChunks;
  const bytes = (chunks + Math.ceil(chunks / 64)) * COW_CHUNK;
  return Math.ceil(bytes / extentBytes) * extentBytes;
}

/** Whether an LV is active now: device-mapper's table, or lvm's word where that cannot be read. */
async function isActive(ctx: LvTransferContext, row: LvRow): Promise<boolean> {
  const dm = dmDeviceOf(ctx.vg, row.lv_name);
  if (dm !== undefined) return dm !== null;
  return parseLvAttr((await ctx.lvm.lv(ctx.vg, row.lv_name))?.lv_attr).state !== 'inactive';
}

/**
 * A volume's or snapshot's bytes for reading (by another node, or by a local copy), as of now, held
 * by the caller's lock of it. A snapshot's LV is read as it is (nothing writes it). A volume that is
 * active may be written meanwhile (staged, a pod on it): it is read from a snapshot made now (thin:
 * a thin snapshot; thick: a COW snapshot sized by cowBytesCovering, so it cannot overflow while it
 * is read, and refused at once with RESOURCE_EXHAUSTED when the VG has not that much room), tagged
 * vpool.kind=send, removed at release or at the next start after a crash. A volume that is inactive
 * cannot be written while the lock is held (staging takes it): it is read in place, no copy.
 * Whatever is activated here is deactivated at release. `leftover`: a copy for sending of that
 * volume exists already.
 */
export async function openLvData(ctx: LvTransferContext, kind: 'volume' | 'snapshot', row: LvRow, leftover: boolean): Promise<ReadableData> {
  if (!ctx.lvm.activation) throw precondition('reading a volume for another node needs device-mapper (LV activation), which this kernel lacks');
  const id = row.lv_name;
  const temporary = kind === 'volume' && (await isActive(ctx, row));
  const name = temporary ? `${id}.send` : id;
  if (temporary) {
    // A crash's leftover (the start-up sweep missed it) goes first: its space is the new one's.
    if (leftover) await ctx.lvm.exec('lvremove', ['-y', lvPath(ctx, name)]);
    const thin = row.segtype === 'thin';
    const cow = thin ? 0 : cowBytesCovering(Number(row.lv_size), ctx.extentBytes);
    if (!thin) {
      const room = await ctx.thickRoom();
      if (cow > room) throw exhausted(`volume ${id} is active (it may be written while it is read), so it is read from a copy-on-write snapshot of ${cow} bytes; ${ctx.vg} has ${room} bytes available`);
    }
    await ctx.change('lvcreate', ['-y', '-s', ...(thin ? [] : ['-L', `${cow}b`, '--chunksize', `${COW_CHUNK / 1024}k`]), '-n', name, '--addtag', SEND_TAG, lvPath(ctx, id)]);
  }
  const wasActive = !temporary && dmDeviceOf(ctx.vg, name) !== null;
  const drop = async () => {
    // A COW snapshot is never deactivated on its own: lvm deactivates its origin with it, and the
    // origin is a staged volume. lvremove takes an active snapshot away and leaves the origin be.
    if (temporary) await ctx.lvm.exec('lvremove', ['-y', lvPath(ctx, name)]);
    else if (!wasActive) await ctx.lvm.exec('lvchange', ['-y', '-an', lvPath(ctx, name)]).catch((e) => log.warn('cannot deactivate after reading', { lv: name, error: String(e) }));
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
