import { readFileSync, statSync } from 'node:fs';
import { errno, internal } from '../errors.js';
import { run } from '../exec.js';
import { majorMinor } from './devices.js';

/**
 * A file's identity in every mount namespace: the device it lives on and its inode. A path is not
 * one: the kernel prints a loop device's backing file as the attaching process saw it, so after a
 * node-plugin restart (a new container, the pool at another path) the same file reads differently.
 */
export interface FileId {
  /** "major:minor" of the filesystem holding the file. */
  dev: string;
  ino: string;
}

/** An attached loop device. */
export interface LoopDevice {
  device: string;
  /** The identity of the backing file (LOOP_GET_STATUS64's lo_device and lo_inode). */
  backing: FileId;
  /** The backing path as printed for the process that attached it; for people, never for matching. */
  backingFile: string;
  /** The backing file was unlinked while attached. */
  deleted: boolean;
  readOnly: boolean;
}

const DELETED = ' (deleted)';

// sysfs is memory-backed and never blocks: read it synchronously rather than paying a threadpool hop per file.
function readSys(file: string): string | null {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    if (errno(err) === 'ENOENT' || errno(err) === 'ENXIO') return null;
    throw err;
  }
}

/** The identity of a file or device node as this process sees it, or null when there is none at that path. */
export function fileId(p: string): FileId | null {
  const st = statSync(p, { bigint: true, throwIfNoEntry: false });
  return st ? { dev: majorMinor(st.dev), ino: String(st.ino) } : null;
}

const sameFile = (a: FileId, b: FileId) => a.dev === b.dev && a.ino === b.ino;
const unescapeRaw = (s: string) => s.replace(/\\x([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));

/**
 * Whether any loop device is bound to a file, from /proc/partitions, which lists exactly the block
 * devices with a size: one read whatever the number of loop device nodes (a node may have a thousand
 * unbound ones, and a sysfs lookup each costs milliseconds in all). A loop bound to an empty file is
 * not listed; it holds no data to protect.
 */
function anyLoopBound(): boolean {
  return /\sloop\d+\n/.test(readFileSync('/proc/partitions', 'utf8'));
}

/**
 * Attached loop devices. Their backing identity comes from the LOOP_GET_STATUS64 ioctl, which
 * Node cannot make: losetup makes it (one call lists every device). sysfs alone says which
 * devices are attached, so a node with none pays no subprocess.
 */
export async function listLoopDevices(): Promise<LoopDevice[]> {
  if (!anyLoopBound()) return [];
  // BACK-FILE last: it is the one column that may hold spaces (escaped as \x20 by --raw).
  const { stdout } = await run('losetup', ['--list', '--raw', '--noheadings', '--output', 'NAME,BACK-MAJ:MIN,BACK-INO,RO,BACK-FILE']);
  const found: LoopDevice[] = [];
  for (const line of stdout.split('\n')) {
    // --raw separates columns by one space and escapes spaces inside a value (even BACK-MAJ:MIN's padding).
    const [name, majMin, ino, ro, file] = line.split(' ').map((f) => unescapeRaw(f).trim());
    if (!/^\/dev\/loop\d+$/.test(name ?? '') || !/^\d+:\d+$/.test(majMin ?? '') || !/^\d+$/.test(ino ?? '') || file === undefined) continue;
    const deleted = file.endsWith(DELETED);
    found.push({ device: name, backing: { dev: majMin, ino }, backingFile: deleted ? file.slice(0, -DELETED.length) : file, deleted, readOnly: ro === '1' });
  }
  return found.sort((a, b) => Number(a.readOnly) - Number(b.readOnly) || a.device.localeCompare(b.device, 'en', { numeric: true }));
}

/** The loop devices reading this file or device node (the writable ones first), matched by identity. */
export async function loopsBackedBy(p: string): Promise<LoopDevice[]> {
  const id = fileId(p);
  if (!id) return [];
  return (await listLoopDevices()).filter((l) => sameFile(l.backing, id));
}

/** Attaches with direct I/O (no double caching of volume data in the host page cache). */
export async function attachLoop(file: string, readOnly = false): Promise<string> {
  const { stdout } = await run('losetup', ['--direct-io=on', ...(readOnly ? ['--read-only'] : []), '--find', '--show', '--', file]);
  const device = stdout.trim();
  if (!/^\/dev\/loop[0-9]+$/.test(device)) throw internal(`losetup printed an unexpected device name: ${JSON.stringify(device)}`);
  return device;
}

export async function detachLoop(device: string): Promise<void> {
  await run('losetup', ['--detach', device]);
}

export async function refreshLoopSize(device: string): Promise<void> {
  await run('losetup', ['--set-capacity', device]);
}

/** Size in bytes of any block device (a loop device, /dev/<vg>/<lv>, /dev/mapper/...), from sysfs by device number. */
export async function blockDeviceSize(device: string): Promise<number> {
  const st = statSync(device, { throwIfNoEntry: false });
  if (!st?.isBlockDevice()) throw internal(`not a block device: ${device}`);
  const sectors = readSys(`/sys/dev/block/${majorMinor(st.rdev)}/size`);
  if (sectors === null) throw internal(`no sysfs entry for ${device} (${majorMinor(st.rdev)})`);
  return Number(sectors.trim()) * 512;
}
