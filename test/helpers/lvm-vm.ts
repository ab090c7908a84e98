// Helpers of the VM suites that move lvm volumes between two node plugins (test/vm/transfer-lvm*.vm-test.ts).
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';
import { MiB } from './driver.js';

export const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });

/** As sh, and a failure says the command and its stderr. */
export const shSaying = (cmd: string, args: string[]) => {
  try {
    return sh(cmd, args);
  } catch (err) {
    throw new Error(`${cmd} ${args.join(' ')} failed: ${(err as { stderr?: string }).stderr ?? err}`);
  }
};

/** The SHA-256 of a whole device or file (the first `bytes` of it). */
export async function sumOf(file: string, bytes: number): Promise<string> {
  const fh = await open(file, 'r');
  try {
    const h = createHash('sha256');
    const buf = Buffer.alloc(4 * MiB);
    for (let at = 0; at < bytes; at += buf.length) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, bytes - at), at);
      h.update(buf.subarray(0, bytesRead));
    }
    return h.digest('hex');
  } finally {
    await fh.close();
  }
}

/** Runs fn with the LV active (as the node would have it), and leaves it as it was found. */
export async function withLv<T>(vg: string, lv: string, fn: (dev: string) => Promise<T>): Promise<T> {
  sh('lvchange', ['-y', '-ay', '-K', `${vg}/${lv}`]);
  try {
    return await fn(`/dev/${vg}/${lv}`);
  } finally {
    sh('lvchange', ['-y', '-an', `${vg}/${lv}`]);
  }
}

export const lvsOf = (vg: string) => sh('lvs', ['--noheadings', '-o', 'lv_name,lv_tags', vg]);
export const vgFree = (vg: string) => Number(sh('vgs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'vg_free', vg]).trim());
