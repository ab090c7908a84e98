import { readFileSync } from 'node:fs';
import { run } from '../exec.js';
import { syscalls } from './syscalls.js';

/** One line of /proc/self/mountinfo: the kernel's own, always-current record of what is mounted where. */
export interface MountEntry {
  mountPoint: string;
  /** Path inside the mounted filesystem that appears at mountPoint ("/" unless a bind of a subtree or a file). */
  root: string;
  fsType: string;
  source: string;
  majorMinor: string;
  options: string[];
}

const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function parseMountInfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split('\n')) {
    if (!line) continue;
    const f = line.split(' ');
    const dash = f.indexOf('-', 6);
    if (dash < 0 || f.length < dash + 3) continue;
    out.push({
      majorMinor: f[2],
      root: unescape(f[3]),
      mountPoint: unescape(f[4]),
      options: f[5].split(','),
      fsType: f[dash + 1],
      source: unescape(f[dash + 2]),
    });
  }
  return out;
}

/** procfs never blocks; a synchronous read saves a threadpool round trip on every node call. */
export async function readMounts(): Promise<MountEntry[]> {
  return parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'));
}

/** The mount visible at a path: the last one mounted there, as mounts stack. */
export function mountAt(mounts: readonly MountEntry[], mountPoint: string): MountEntry | undefined {
  for (let i = mounts.length - 1; i >= 0; i--) if (mounts[i].mountPoint === mountPoint) return mounts[i];
  return undefined;
}

export function isReadOnly(m: MountEntry): boolean {
  return m.options.includes('ro');
}

export async function mountFilesystem(device: string, target: string, fsType: string, options: string[]): Promise<void> {
  const args = ['-t', fsType];
  if (options.length) args.push('-o', options.join(','));
  await run('mount', [...args, '--', device, target]);
}

/** A bind mount, made read-only by a second remount as util-linux makes it: mount(2) here, or mount(8). */
export async function bindMount(source: string, target: string, readOnly: boolean): Promise<void> {
  if ((await syscalls())?.bindMount(source, target, readOnly)) return;
  await run('mount', ['--bind', ...(readOnly ? ['-o', 'ro'] : []), '--', source, target]);
}

/** umount2(2) here; when the kernel refuses, umount(8), which says why. */
export async function unmount(target: string): Promise<void> {
  if (await (await syscalls())?.unmount(target)) return;
  await run('umount', ['--', target]);
}
