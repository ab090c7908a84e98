import { open } from 'node:fs/promises';
import { precondition } from '../errors.js';
import { CommandError, run } from '../exec.js';
import type { FsType } from '../filesystems.js';

export interface Signature {
  /** Filesystem type (ext4, xfs, LVM2_member, ...), or undefined. */
  type?: string;
  /** Partition table type, or undefined. */
  ptType?: string;
}

/** What blkid's low-level probe finds on a device; null when it carries no signature at all. */
export async function probeSignature(device: string): Promise<Signature | null> {
  const { stdout, exitCode } = await run('blkid', ['-p', '-o', 'export', '--', device], { okExitCodes: [2] });
  if (exitCode === 2) return null;
  const kv = Object.fromEntries(stdout.split('\n').filter((l) => l.includes('=')).map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  return { type: kv.TYPE, ptType: kv.PTTYPE };
}

export async function makeFilesystem(device: string, fsType: FsType): Promise<void> {
  // No discard at mkfs: the backing store is fresh (sparse, or a fresh LV) and discarding it only costs time.
  if (fsType === 'ext4') await run('mkfs.ext4', ['-q', '-F', '-m', '0', '-E', 'nodiscard', '--', device], { uninterruptible: true });
  else await run('mkfs.xfs', ['-q', '-f', '-K', '--', device], { uninterruptible: true });
}

/** Grows a mounted filesystem to its device. ext4 online growth needs CAP_SYS_RESOURCE. */
export async function growFilesystem(fsType: FsType, device: string, mountPoint: string): Promise<void> {
  try {
    if (fsType === 'xfs') await run('xfs_growfs', ['-d', '--', mountPoint], { uninterruptible: true });
    else await run('resize2fs', ['--', device], { uninterruptible: true });
  } catch (err) {
    if (err instanceof CommandError && /Permission denied|Operation not permitted/.test(err.stderr)) {
      throw precondition(
        `online ${fsType} resize of ${device} was refused by the kernel (the driver lacks CAP_SYS_RESOURCE); ` +
          'the device has grown and the filesystem will be grown offline at the next NodeStageVolume',
      );
    }
    throw err;
  }
}

/** ext2/3/4 size from the superblock, read in-process; null when the device holds no ext filesystem. */
export async function extFilesystemBytes(device: string): Promise<number | null> {
  const fh = await open(device, 'r');
  try {
    const sb = Buffer.alloc(1024);
    await fh.read(sb, 0, 1024, 1024);
    if (sb.readUInt16LE(0x38) !== 0xef53) return null;
    const blockSize = 1024 << sb.readUInt32LE(0x18);
    const is64 = (sb.readUInt32LE(0x60) & 0x80) !== 0;
    const blocks = sb.readUInt32LE(0x04) + (is64 ? sb.readUInt32LE(0x150) * 2 ** 32 : 0);
    return blocks * blockSize;
  } finally {
    await fh.close();
  }
}

/** Offline growth of an unmounted ext4, for hosts where online growth is not permitted. */
export async function growExtOffline(device: string): Promise<void> {
  await run('e2fsck', ['-f', '-p', '--', device], { okExitCodes: [1], timeoutMs: 30 * 60_000, uninterruptible: true });
  await run('resize2fs', ['--', device], { timeoutMs: 30 * 60_000, uninterruptible: true });
}
