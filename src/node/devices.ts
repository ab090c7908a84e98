import { statSync } from 'node:fs';

/** "major:minor" of a device node, as /proc/self/mountinfo writes it; null when not a block device. */
export async function deviceNumber(devicePath: string): Promise<string | null> {
  // Device nodes live on devtmpfs: a synchronous stat is a memory lookup.
  const st = statSync(devicePath, { throwIfNoEntry: false });
  if (!st || !st.isBlockDevice()) return null;
  const rdev = st.rdev;
  const major = Math.floor(rdev / 256) & 0xfff;
  const minor = (rdev & 0xff) | (Math.floor(rdev / 2 ** 20) & 0xfff00);
  return `${major}:${minor}`;
}
