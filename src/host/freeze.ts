import { run, CommandError } from '../exec.js';
import { stat } from 'node:fs/promises';
import { deviceNumber, majorMinor } from './devices.js';
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
  for (const m of (await readMounts()).filter((e) => e.majorMinor === number)) {
    // What is at the path now must be that filesystem: a mount over it would have the wrong one frozen.
    const st = await stat(m.mountPoint).catch(() => null);
    if (st && majorMinor(st.dev) === number) return m.mountPoint;
  }
  return null;
}

/**
 * Freezes a filesystem (FIFREEZE through fsfreeze(8), the one runner): its dirty data is written,
 * and every new write waits until it is thawed. Bounded: a disk that does not take the sync fails
 * the freeze after `timeoutMs` (the kernel finishes or drops the freeze on its own).
 */
export async function freezeFilesystem(mountPoint: string, timeoutMs = 60_000): Promise<void> {
  // Not stopped by the call's end: a freeze killed half-way may still take hold, and its caller must know it failed to thaw it.
  await run('fsfreeze', ['--freeze', mountPoint], { timeoutMs, uninterruptible: true });
}

/**
 * Thaws a frozen filesystem: true when it was frozen and is thawed, false when it was not frozen
 * (the kernel's EINVAL, which fsfreeze reports as "Invalid argument"). Anything else (the path gone,
 * a timeout) throws: nobody may take it for thawed. Runs to the end whatever becomes of the call.
 */
export async function thawFilesystem(mountPoint: string): Promise<boolean> {
  try {
    await run('fsfreeze', ['--unfreeze', mountPoint], { timeoutMs: 30_000, uninterruptible: true });
    return true;
  } catch (err) {
    if (err instanceof CommandError && !err.timedOut && /Invalid argument/.test(err.stderr)) return false;
    throw err;
  }
}
