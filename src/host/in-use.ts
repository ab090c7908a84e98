import { constants, openSync, closeSync, readdirSync, statSync } from 'node:fs';
import { errno } from '../errors.js';
import { deviceNumber, majorMinor } from './devices.js';
import { loopsBackedBy } from './loop.js';
import { mountNamespaces } from './mount-namespaces.js';

/**
 * The one answer to "does anything on this node use these block devices", from the kernel, by
 * device number (so /dev/vg/lv, /dev/dm-N and /dev/mapper/... are one device) and in every mount
 * namespace in sight: filesystems mounted from them, device nodes bound somewhere (raw block
 * staging and publishing), device-mapper or md holders, loop devices reading them, and at last an
 * exclusive open, which the kernel refuses while any namespace has a filesystem of it mounted.
 * `except` lists mount points in this process's namespace to leave out (the caller's own).
 */
export async function deviceUsers(devices: readonly string[], except: readonly string[] = []): Promise<string[]> {
  const byNumber = new Map<string, string>();
  for (const d of devices) {
    const n = await deviceNumber(d);
    if (n) byNumber.set(n, d);
  }
  if (byNumber.size === 0) return [];
  const users: string[] = [];
  for (const ns of mountNamespaces()) {
    const where = ns.self ? '' : ` (mount namespace of pid ${ns.pid})`;
    for (const m of ns.mounts) {
      if (ns.self && except.includes(m.mountPoint)) continue;
      if (byNumber.has(m.majorMinor)) users.push(`${byNumber.get(m.majorMinor)} mounted at ${m.mountPoint}${where}`);
      else if (m.root !== '/' && (m.fsType === 'devtmpfs' || m.fsType === 'tmpfs')) {
        // A bound device node: what is at the mount point is the device. Another namespace's path resolves through its /proc/<pid>/root.
        const st = statSync(ns.self ? m.mountPoint : `/proc/${ns.pid}/root${m.mountPoint}`, { throwIfNoEntry: false });
        const n = st?.isBlockDevice() ? majorMinor(st.rdev) : null;
        if (n && byNumber.has(n)) users.push(`${byNumber.get(n)} bound at ${m.mountPoint}${where}`);
      }
    }
  }
  for (const [n, d] of byNumber) {
    let holders: string[] = [];
    try {
      holders = readdirSync(`/sys/dev/block/${n}/holders`);
    } catch (err) {
      if (errno(err) !== 'ENOENT') throw err;
    }
    if (holders.length) users.push(`${d} held by ${holders.join(', ')}`);
    for (const l of await loopsBackedBy(d)) users.push(`${d} read by ${l.device}`);
  }
  if (users.length === 0) {
    for (const d of byNumber.values()) if (heldExclusively(d)) users.push(`${d} is open exclusively (a filesystem mounted in a namespace out of sight, or a claim)`);
  }
  return users;
}

/** True when the kernel refuses an exclusive open: a mounted filesystem or another claim holds the device. */
function heldExclusively(device: string): boolean {
  try {
    closeSync(openSync(device, constants.O_RDONLY | constants.O_EXCL | constants.O_NONBLOCK));
    return false;
  } catch (err) {
    if (errno(err) === 'EBUSY') return true;
    throw err;
  }
}
