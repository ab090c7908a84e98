import { run, CommandError } from '../exec.js';
import { deviceNumber } from './devices.js';
import { readMounts } from './mounts.js';

/**
 * What writes to a block device go through, as this process's mount namespace sees it: one mount
 * point per filesystem mounted from it (a filesystem's bind mounts share its superblock, and a
 * freeze holds the superblock), or none when nothing is mounted from it here (used raw, or mounted
 * only in another namespace).
 */
export async function filesystemOn(device: string): Promise<string | null> {
  const number = await deviceNumber(device);
  if (!number) return null;
  const m = (await readMounts()).find((e) => e.majorMinor === number);
  return m ? m.mountPoint : null;
}

/**
 * Freezes a filesystem (FIFREEZE through fsfreeze(8), the one runner): its dirty data is written,
 * and every new write waits until it is thawed. Bounded: a disk that does not take the sync fails
 * the freeze after `timeoutMs` (the kernel finishes or drops the freeze on its own).
 */
export async function freezeFilesystem(mountPoint: string, timeoutMs = 60_000): Promise<void> {
  await run('fsfreeze', ['--freeze', mountPoint], { timeoutMs });
}

/** Thaws a frozen filesystem; false when it was not frozen (fsfreeze says EINVAL) or is gone. */
export async function thawFilesystem(mountPoint: string): Promise<boolean> {
  try {
    await run('fsfreeze', ['--unfreeze', mountPoint], { timeoutMs: 30_000 });
    return true;
  } catch (err) {
    if (err instanceof CommandError && !err.timedOut) return false;
    throw err;
  }
}
