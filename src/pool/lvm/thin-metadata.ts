import { existsSync } from 'node:fs';
import { CommandError, run } from '../../exec.js';
import { log } from '../../log.js';
import { precondition, unavailable } from '../../errors.js';
import { dmName } from './dm.js';
import type { ByteRange } from '../block-ranges.js';

/** Runs of a thin device's blocks, in bytes: ascending, apart, each one or more of the pool's blocks. */
export interface BlockRuns {
  /** The thin pool's block (chunk) size in bytes. */
  blockBytes: number;
  ranges: ByteRange[];
}

/** How long thin_dump or thin_delta may take: they read only the pool's metadata (a few MiB for TiBs). */
const TOOL_TIMEOUT_MS = 120_000;
const DM_TIMEOUT_MS = 30_000;

/**
 * What a thin pool's own metadata says of its thin devices, read by thin-provisioning-tools while
 * the pool is live: the tools read the metadata device, which the kernel writes meanwhile, so they
 * read a metadata snapshot the kernel keeps still for them (`reserve_metadata_snap`), released
 * after. The kernel allows one such snapshot per pool: reads of one pool take turns here. A
 * snapshot a crashed process left reserved is released on the next read (it only pins metadata
 * blocks); the driver owns the VG, so no other reader can hold it.
 *
 * Cost: metadata reads (the B-trees of the devices asked about), never the data blocks.
 */
export class ThinMetadata {
  private readonly turns = new Map<string, Promise<unknown>>();

  constructor(private readonly vg: string) {}

  /** The blocks `thinId` maps (what reads as other than zeros), clipped to `sizeBytes`. */
  async mapped(pool: string, thinId: number, sizeBytes: number): Promise<BlockRuns> {
    const out = await this.reserved(pool, (meta) => this.tool('thin_dump', ['--metadata-snap', '--dev-id', String(thinId), meta]));
    const blockBytes = dataBlockBytes(out);
    if (!new RegExp(`<device dev_id="${thinId}"`).test(out)) throw unavailable(`thin pool ${this.vg}/${pool} has no thin device ${thinId} in its metadata`);
    const runs: Array<[number, number]> = [];
    for (const m of out.matchAll(/<range_mapping origin_begin="(\d+)" data_begin="\d+" length="(\d+)"|<single_mapping origin_block="(\d+)"/g)) {
      runs.push(m[1] !== undefined ? [Number(m[1]), Number(m[2])] : [Number(m[3]), 1]);
    }
    return { blockBytes, ranges: toRanges(runs, blockBytes, sizeBytes) };
  }

  /**
   * The blocks where `right` may read otherwise than `left`: mapped to other data blocks, mapped in
   * one only (written since, or discarded since: it reads zeros now), clipped to `sizeBytes`.
   * Blocks both share, or neither maps, are left out.
   */
  async changed(pool: string, left: number, right: number, sizeBytes: number): Promise<BlockRuns> {
    const out = await this.reserved(pool, (meta) => this.tool('thin_delta', ['--metadata-snap', '--snap1', String(left), '--snap2', String(right), meta]));
    const blockBytes = dataBlockBytes(out);
    if (!/<diff /.test(out)) throw unavailable(`thin_delta gave no diff for devices ${left} and ${right} of ${this.vg}/${pool}`);
    const runs: Array<[number, number]> = [];
    for (const m of out.matchAll(/<(different|left_only|right_only|same) begin="(\d+)" length="(\d+)"/g)) {
      if (m[1] !== 'same') runs.push([Number(m[2]), Number(m[3])]);
    }
    return { blockBytes, ranges: toRanges(runs, blockBytes, sizeBytes) };
  }

  private async tool(command: string, args: string[]): Promise<string> {
    try {
      return (await run(command, args, { timeoutMs: TOOL_TIMEOUT_MS })).stdout;
    } catch (err) {
      if (err instanceof CommandError && /No such file|not found|ENOENT/.test(err.stderr) && !existsSync(`/usr/sbin/${command}`)) {
        throw precondition(`${command} is not installed: install thin-provisioning-tools on the node`);
      }
      throw err;
    }
  }

  /** Runs `read` with the pool's metadata snapshot reserved, one reader per pool at a time. */
  private reserved<T>(pool: string, read: (metadataDevice: string) => Promise<T>): Promise<T> {
    const before = this.turns.get(pool) ?? Promise.resolve();
    const mine = before.catch(() => undefined).then(async () => {
      const target = await this.poolTarget(pool);
      await this.message(target, 'reserve_metadata_snap').catch(async (err: unknown) => {
        // EBUSY: one is reserved already (a crash left it): released, then ours.
        if (!(err instanceof CommandError) || !/busy/i.test(err.stderr)) throw err;
        log.warn('a thin pool metadata snapshot was left reserved (a crashed read?); releasing it', { vg: this.vg, pool });
        await this.message(target, 'release_metadata_snap');
        await this.message(target, 'reserve_metadata_snap');
      });
      try {
        return await read(`/dev/mapper/${dmName(this.vg, `${pool}_tmeta`)}`);
      } finally {
        await this.message(target, 'release_metadata_snap').catch((err: unknown) => log.error('a thin pool metadata snapshot could not be released (the next read releases it)', { vg: this.vg, pool, err: String(err) }));
      }
    });
    this.turns.set(pool, mine);
    void mine.finally(() => {
      if (this.turns.get(pool) === mine) this.turns.delete(pool);
    }).catch(() => undefined);
    return mine;
  }

  private async message(target: string, what: string): Promise<void> {
    await run('dmsetup', ['message', target, '0', what], { timeoutMs: DM_TIMEOUT_MS, uninterruptible: true });
  }

  /**
   * The dm device with the thin-pool target: `<vg>-<pool>-tpool` once lvm layered the pool (it has
   * thin volumes), else `<vg>-<pool>`. An inactive pool (no thin volume active on this node) is
   * activated: its metadata device exists only then.
   */
  private async poolTarget(pool: string): Promise<string> {
    const find = async (): Promise<string | null> => {
      for (const name of [`${dmName(this.vg, pool)}-tpool`, dmName(this.vg, pool)]) {
        const status = await run('dmsetup', ['status', name], { timeoutMs: DM_TIMEOUT_MS }).catch(() => null);
        if (status && / thin-pool /.test(` ${status.stdout}`)) return name;
      }
      return null;
    };
    const found = await find();
    if (found) return found;
    // Activation may run thin_check on the pool's metadata: minutes on a large pool, never cut short.
    await run('lvchange', ['-ay', `${this.vg}/${pool}`], { timeoutMs: 600_000, uninterruptible: true });
    const now = await find();
    if (!now) throw unavailable(`thin pool ${this.vg}/${pool} has no active thin-pool device on this node`);
    return now;
  }
}

function dataBlockBytes(xml: string): number {
  const m = /data_block_size="(\d+)"/.exec(xml);
  if (!m) throw unavailable('thin-provisioning-tools gave no data_block_size');
  return Number(m[1]) * 512;
}

/** Block runs (start, length) to byte ranges, sorted, adjacent ones merged, clipped to the device's size. */
export function toRanges(runs: Array<[number, number]>, blockBytes: number, sizeBytes: number): ByteRange[] {
  runs.sort((a, b) => a[0] - b[0]);
  const out: Array<[number, number]> = [];
  for (const [start, length] of runs) {
    const s = start * blockBytes;
    if (s >= sizeBytes) break;
    const e = Math.min(sizeBytes, (start + length) * blockBytes);
    const last = out[out.length - 1];
    if (last && last[1] >= s) last[1] = Math.max(last[1], e);
    else out.push([s, e]);
  }
  return out;
}
