import path from 'node:path';
import { deviceNumber } from './devices.js';
import { isReadOnly, mountAt, type MountEntry } from './mounts.js';

/**
 * What the kernel says is at a staging or publish path, relative to one volume's devices. This is
 * the node's whole state: nothing is remembered between calls, so a restarted driver sees exactly
 * what a running one would.
 */
export type PathState =
  | { kind: 'empty' }
  | { kind: 'filesystem'; device: string; fsType: string; readOnly: boolean; mount: MountEntry }
  | { kind: 'block'; device: string; readOnly: boolean; mount: MountEntry }
  | { kind: 'foreign'; mount: MountEntry };

/** A raw block volume is staged by bind-mounting its device onto this file in the staging directory. */
export const BLOCK_MARKER = 'vpool-block-device';

export function blockMarker(stagingPath: string): string {
  return path.join(stagingPath, BLOCK_MARKER);
}

async function devicesByNumber(devices: readonly string[]): Promise<Map<string, string>> {
  const map = new Map<string, string>();
  for (const d of devices) {
    const n = await deviceNumber(d);
    if (n) map.set(n, d);
  }
  return map;
}

/** Classifies the mount at `p`: a filesystem of one of `devices`, a bind of one of them, another mount, or nothing. */
export async function stateAt(mounts: readonly MountEntry[], p: string, devices: readonly string[]): Promise<PathState> {
  const m = mountAt(mounts, p);
  if (!m) return { kind: 'empty' };
  const byNumber = await devicesByNumber(devices);
  const fsDevice = byNumber.get(m.majorMinor);
  if (fsDevice) return { kind: 'filesystem', device: fsDevice, fsType: m.fsType, readOnly: isReadOnly(m), mount: m };
  // A bind of a device node: the mount belongs to /dev's filesystem, and the node at p is the device.
  const atPath = await deviceNumber(p);
  const blockDevice = atPath ? byNumber.get(atPath) : undefined;
  if (blockDevice) return { kind: 'block', device: blockDevice, readOnly: isReadOnly(m), mount: m };
  return { kind: 'foreign', mount: m };
}
