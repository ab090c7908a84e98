import { CommandError } from '../../exec.js';

/**
 * Why an lvm command failed, decided in one place. lvm exits 5 (ECMD_FAILED) for nearly every
 * failure, so after the exit code only its message tells a missing LV from a full VG.
 */
export type LvmFailure = 'no-space' | 'not-found' | 'no-device-mapper' | 'other';

const NO_SPACE = /insufficient free|not enough free|Insufficient suitable|exceeds the size of thin pool|would exceed/i;
const NO_DEVICE_MAPPER = /without using device-mapper kernel driver/i;
const NOT_FOUND = /Failed to find logical volume|Volume group "[^"]*" not found|not found in volume group/i;

export function lvmFailure(err: unknown): LvmFailure {
  if (!(err instanceof CommandError) || err.cancelled || err.timedOut) return 'other';
  if (NO_SPACE.test(err.stderr)) return 'no-space';
  if (NOT_FOUND.test(err.stderr)) return 'not-found';
  if (NO_DEVICE_MAPPER.test(err.stderr)) return 'no-device-mapper';
  return 'other';
}

/** The last line lvm printed, which names the cause. */
export function lvmReason(err: CommandError): string {
  return err.stderr.trim().split('\n').pop() ?? err.message;
}

// What lvm says when a device it needs was not scanned: a missing PV, or no VG at all.
const SCAN_MISSED = /missing|Couldn't find device|not found|Cannot process volume group|No device found/i;

/** Whether a command that scanned only some devices may have failed for that reason (and should scan all). */
export function scanMayHaveMissed(err: unknown): boolean {
  return err instanceof CommandError && !err.cancelled && !err.timedOut && SCAN_MISSED.test(err.stderr);
}
