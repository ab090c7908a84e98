import { statSync } from 'node:fs';

/** "major:minor" of a Linux dev_t (glibc's encoding: 12 bits of major, 20 of minor, split). */
export function majorMinor(dev: number | bigint): string {
  const d = BigInt(dev);
  const major = ((d >> 8n) & 0xfffn) | ((d >> 32n) & ~0xfffn);
  const minor = (d & 0xffn) | ((d >> 12n) & ~0xffn);
  return `${major}:${minor}`;
}

/** "major:minor" of a device node, as /proc/self/mountinfo writes it; null when not a block device. */
export async function deviceNumber(devicePath: string): Promise<string | null> {
  // Device nodes live on devtmpfs: a synchronous stat is a memory lookup.
  const st = statSync(devicePath, { throwIfNoEntry: false });
  if (!st || !st.isBlockDevice()) return null;
  return majorMinor(st.rdev);
}
