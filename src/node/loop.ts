import { readdir, readFile } from 'node:fs/promises';
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

export async function listLoopDevices(): Promise<LoopDevice[]> {
  const names = (await readdir(SYS)).filter((n) => /^loop[0-9]+$/.test(n));
  const found: LoopDevice[] = [];
  await Promise.all(
    names.map(async (name) => {
      let backing: string;
      try {
        backing = (await readFile(`${SYS}/${name}/loop/backing_file`, 'utf8')).replace(/\n$/, '');
      } catch (err) {
        if (errno(err) === 'ENOENT') return; // not attached
        throw err;
      }
      const deleted = backing.endsWith(DELETED);
      const readOnly = (await readFile(`${SYS}/${name}/ro`, 'utf8').catch(() => '0')).trim() === '1';
      found.push({ device: `/dev/${name}`, backingFile: deleted ? backing.slice(0, -DELETED.length) : backing, deleted, readOnly });
    }),
  );
  return found.sort((a, b) => a.device.localeCompare(b.device, 'en', { numeric: true }));
}

export async function findLoopDevices(file: string): Promise<LoopDevice[]> {
  return (await listLoopDevices()).filter((l) => l.backingFile === file);
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

/** Size in bytes of any block device, from sysfs. */
export async function blockDeviceSize(device: string): Promise<number> {
  const name = device.replace(/^\/dev\//, '');
  if (!/^[a-z0-9]+$/.test(name)) throw new Error(`not a whole block device: ${device}`);
  const sectors = await readFile(`${SYS}/${name}/size`, 'utf8');
  return Number(sectors.trim()) * 512;
}
