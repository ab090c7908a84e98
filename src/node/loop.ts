import { readdirSync, readFileSync, statSync } from 'node:fs';
import { errno } from '../errors.js';
import { run } from '../exec.js';

/** Loop devices, read from sysfs in-process: no `losetup -J` subprocess on every lookup. */
export interface LoopDevice {
  device: string;
  backingFile: string;
  /** The backing file was unlinked while attached. */
  deleted: boolean;
  readOnly: boolean;
}

const SYS = '/sys/block';
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

/** Attached loop devices, optionally only those backed by `file`. */
export async function listLoopDevices(file?: string): Promise<LoopDevice[]> {
  const found: LoopDevice[] = [];
  for (const name of readdirSync(SYS)) {
    if (!name.startsWith('loop')) continue;
    const raw = readSys(`${SYS}/${name}/loop/backing_file`);
    if (raw === null) continue; // not attached
    const backing = raw.replace(/\n$/, '');
    const deleted = backing.endsWith(DELETED);
    const backingFile = deleted ? backing.slice(0, -DELETED.length) : backing;
    if (file !== undefined && backingFile !== file) continue;
    const readOnly = readSys(`${SYS}/${name}/ro`)?.trim() === '1';
    found.push({ device: `/dev/${name}`, backingFile, deleted, readOnly });
  }
  return found.sort((a, b) => Number(a.readOnly) - Number(b.readOnly) || a.device.localeCompare(b.device, 'en', { numeric: true }));
}

export async function findLoopDevices(file: string): Promise<LoopDevice[]> {
  return listLoopDevices(file);
}

/** Attaches with direct I/O (no double caching of volume data in the host page cache). */
export async function attachLoop(file: string, readOnly = false): Promise<string> {
  const { stdout } = await run('losetup', ['--direct-io=on', ...(readOnly ? ['--read-only'] : []), '--find', '--show', '--', file]);
  const device = stdout.trim();
  if (!/^\/dev\/loop[0-9]+$/.test(device)) throw new Error(`losetup printed an unexpected device name: ${JSON.stringify(device)}`);
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
  if (!st?.isBlockDevice()) throw new Error(`not a block device: ${device}`);
  const major = Math.floor(st.rdev / 256) & 0xfff;
  const minor = (st.rdev & 0xff) | (Math.floor(st.rdev / 2 ** 20) & 0xfff00);
  const sectors = readSys(`/sys/dev/block/${major}:${minor}/size`);
  if (sectors === null) throw new Error(`no sysfs entry for ${device} (${major}:${minor})`);
  return Number(sectors.trim()) * 512;
}
