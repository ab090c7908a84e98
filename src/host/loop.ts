import { constants, readFileSync, statSync } from 'node:fs';
import { open, stat as statAsync } from 'node:fs/promises';
import { errno, internal } from '../errors.js';
import { run } from '../exec.js';
import { majorMinor } from './devices.js';
import { syscalls, VOLUME_SECTOR, type Syscalls } from './syscalls.js';

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

/** fileId off the event loop: a stat of a pool whose disk hangs holds a libuv thread, not the whole driver. */
export async function fileIdOf(p: string): Promise<FileId | null> {
  const st = await statAsync(p, { bigint: true }).catch(() => null);
  return st ? { dev: majorMinor(st.dev), ino: String(st.ino) } : null;
}

export const sameFile = (a: FileId, b: FileId) => a.dev === b.dev && a.ino === b.ino;
const unescapeRaw = (s: string) => s.replace(/\\x([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(parseInt(h, 16)));

/**
 * The loop devices bound to a file, from /proc/partitions, which lists exactly the block devices
 * with a size: one read whatever the number of loop device nodes (a node may have a thousand unbound
 * ones). A loop bound to an empty file is not listed; it holds no data to protect.
 */
function boundLoopNames(): string[] {
  return [...readFileSync('/proc/partitions', 'utf8').matchAll(/\s(loop\d+)\n/g)].map((m) => m[1]);
}

/**
 * Attached loop devices, with the identity of their backing files from LOOP_GET_STATUS64 (made in
 * this process, or by one `losetup --list` where koffi is not available). A node with none pays nothing.
 */
export async function listLoopDevices(): Promise<LoopDevice[]> {
  const names = boundLoopNames();
  if (!names.length) return [];
  const sys = await syscalls();
  const found = sys ? fromStatus(sys, names) : await fromLosetup();
  return found.sort((a, b) => Number(a.readOnly) - Number(b.readOnly) || a.device.localeCompare(b.device, 'en', { numeric: true }));
}

function fromStatus(sys: Syscalls, names: string[]): LoopDevice[] {
  const found: LoopDevice[] = [];
  for (const name of names) {
    const status = sys.loopStatus(`/dev/${name}`);
    // The kernel prints the backing path as the attaching process saw it, " (deleted)" once unlinked.
    const file = readSys(`/sys/block/${name}/loop/backing_file`)?.replace(/\n$/, '');
    if (!status || file === undefined) continue;
    const deleted = file.endsWith(DELETED);
    found.push({ device: `/dev/${name}`, backing: { dev: majorMinor(status.dev), ino: String(status.ino) }, backingFile: deleted ? file.slice(0, -DELETED.length) : file, deleted, readOnly: status.readOnly });
  }
  return found;
}

async function fromLosetup(): Promise<LoopDevice[]> {
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
  return found;
}

/** The loop devices reading this file or device node (the writable ones first), matched by identity. */
export async function loopsBackedBy(p: string): Promise<LoopDevice[]> {
  const id = fileId(p);
  if (!id) return [];
  return (await listLoopDevices()).filter((l) => sameFile(l.backing, id));
}

/**
 * Attaches with direct I/O (no double caching of volume data in the host page cache): LOOP_CONFIGURE
 * in this process, or losetup, which also says why when the kernel refuses.
 */
export async function attachLoop(file: string, readOnly = false): Promise<string> {
  const sys = await syscalls();
  if (sys) {
    const n = await withBacking(file, readOnly, (fd) => sys.configureLoop(fd, readOnly, true));
    if (n !== null) return `/dev/loop${n}`;
  }
  const { stdout } = await run('losetup', ['--direct-io=on', '--sector-size', String(VOLUME_SECTOR), ...(readOnly ? ['--read-only'] : []), '--find', '--show', '--', file]);
  const device = stdout.trim();
  if (!/^\/dev\/loop[0-9]+$/.test(device)) throw internal(`losetup printed an unexpected device name: ${JSON.stringify(device)}`);
  return device;
}

/** Opens the backing file as losetup --direct-io does (O_DIRECT where the filesystem takes it); null when it cannot be opened. */
async function withBacking<T>(file: string, readOnly: boolean, fn: (fd: number) => Promise<T | null>): Promise<T | null> {
  const mode = readOnly ? constants.O_RDONLY : constants.O_RDWR;
  const fh = await open(file, mode | constants.O_DIRECT).catch(() => open(file, mode)).catch(() => null);
  if (!fh) return null;
  try {
    return await fn(fh.fd);
  } finally {
    await fh.close();
  }
}

export async function detachLoop(device: string): Promise<void> {
  if (await (await syscalls())?.clearLoop(device)) return;
  await run('losetup', ['--detach', device]);
}

export async function refreshLoopSize(device: string): Promise<void> {
  if (await (await syscalls())?.refreshLoop(device)) return;
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
