import { constants } from 'node:os';
import { promisify } from 'node:util';
import { log } from '../log.js';

/**
 * The few system calls the block data path needs (loop ioctls, mount(2), umount2(2), lseek(2) for a
 * file's data ranges, a buffer's address for O_DIRECT), made in this
 * process through koffi (an FFI from the npm registry, prebuilt for linux) instead of a losetup,
 * mount or umount process each: a subprocess costs more than the call it wraps. Loaded on first
 * use, so a process that never attaches a device never loads it. Where it cannot load, the callers
 * run the commands as before (`syscalls()` is null).
 *
 * Calls that may wait in the kernel (configuring or clearing a loop device, an unmount that waits
 * for RCU) run on koffi's worker threads, off the event loop. Those cannot read errno, so a failure
 * there is reported without a reason; on any refusal the caller runs the command, which says why in
 * its stderr (and so reaches the client as a failed command, never an unmapped error).
 */
export interface Syscalls {
  /** Binds a free loop device to the open file `fd`; the device's number, or null when the kernel refused. */
  configureLoop(fd: number, readOnly: boolean, directIo: boolean): Promise<number | null>;
  /** Detaches a loop device; false when the kernel refused. */
  clearLoop(device: string): Promise<boolean>;
  /** Makes a loop device take its backing file's new size; false when the kernel refused. */
  refreshLoop(device: string): Promise<boolean>;
  /** The backing file's device and inode and the read-only flag of a bound loop device; null when it is not bound. */
  loopStatus(device: string): { dev: bigint; ino: bigint; readOnly: boolean } | null;
  /** mount(2) of a bind, made read-only with the remount util-linux also makes; false (and nothing left mounted) when the kernel refused. */
  bindMount(source: string, target: string, readOnly: boolean): boolean;
  /** umount2(2) without flags; false when the kernel refused (busy, not mounted). */
  unmount(target: string): Promise<boolean>;
  /**
   * lseek(2) with SEEK_DATA or SEEK_HOLE: the offset found, or the errno's name (ENXIO: no data
   * after `offset`; anything else, such as EINVAL or EOPNOTSUPP: the filesystem cannot tell).
   */
  seek: SeekFn;
  /** Where a buffer's bytes are in memory (O_DIRECT wants them on a block boundary). */
  address(buf: Buffer): bigint;
  /**
   * The extents of an open file that overlap [start, start + length) (FS_IOC_FIEMAP with FIEMAP_FLAG_SYNC, so delayed
   * writes have their place), at most `max` of them; `more` when there may be more in the range (`max`
   * came back, none the file's last): the caller asks again from the end of the last. `failed` when
   * the filesystem does not map its files (EOPNOTSUPP on tmpfs, for one). Run on a worker thread: a
   * filesystem that reads its map from a disk that hangs holds that thread, not the event loop (and
   * a worker cannot read errno, so the reason is not known).
   */
  fiemap(fd: number, start: number, length: number, max: number): Promise<{ extents: MappedExtent[]; more: boolean } | { failed: true }>;
}

/** One run of a file as FIEMAP maps it: `length` bytes at `logical` in the file lie at `physical` on the disk. */
export interface MappedExtent {
  logical: number;
  physical: number;
  length: number;
  /** FIEMAP_EXTENT_* flags. */
  flags: number;
}

/** An lseek(2) for data ranges; a parameter of the range walk so a test can make it fail as a filesystem would. */
export type SeekFn = (fd: number, offset: number, whence: 'data' | 'hole') => { offset: number } | { errno: string };

/**
 * The logical sector size of every loop device, whatever its backing file. Left to the kernel, a
 * direct-I/O loop device takes the file's direct-I/O alignment, which XFS raises to its block size
 * (4 KiB) for a file with shared extents: a volume once snapshotted or cloned by reflink would come
 * back with 4 KiB sectors, and its 1 KiB-block ext4 would not mount, nor its partition table be found
 * where 512-byte sectors put it. A volume's sectors never change; the kernel then does the I/O of
 * such a file through the page cache.
 */
export const VOLUME_SECTOR = 512;
const LOOP_CTL_GET_FREE = 0x4c82;
const LOOP_CONFIGURE = 0x4c0a;
const LOOP_CLR_FD = 0x4c01;
const LOOP_SET_CAPACITY = 0x4c07;
const LOOP_GET_STATUS64 = 0x4c05;
const LO_FLAGS_READ_ONLY = 1;
const LO_FLAGS_DIRECT_IO = 16;
const MS_RDONLY = 1;
const MS_REMOUNT = 32;
const MS_BIND = 4096;
// _IOWR('f', 11, struct fiemap): struct fiemap is 32 bytes, then fiemap_extent[] of 56 bytes each.
const FS_IOC_FIEMAP = 0xc020660b;
const FIEMAP_HEADER = 32;
const FIEMAP_EXTENT = 56;
const FIEMAP_FLAG_SYNC = 1;
const FIEMAP_EXTENT_LAST = 1;
const SEEK_DATA = 3;
const SEEK_HOLE = 4;
const O_RDONLY = 0;
const O_RDWR = 2;
const O_CLOEXEC = 0o2000000;
// struct loop_info64: five __u64, then lo_number, lo_encrypt_type, lo_encrypt_key_size, lo_flags (__u32 each), ...
const INFO_SIZE = 232;
const INFO_FLAGS = 52;
// struct loop_config: __u32 fd, __u32 block_size, struct loop_info64 info, __u64 __reserved[8].
const CONFIG_SIZE = 8 + INFO_SIZE + 64;

let loaded: Promise<Syscalls | null> | undefined;

/** The system calls, or null where koffi cannot load (the callers then run the commands). */
export function syscalls(): Promise<Syscalls | null> {
  loaded ??= load().catch((err: unknown) => {
    log.warn('system calls through koffi are not available; running losetup, mount and umount instead', { err: String(err) });
    return null;
  });
  return loaded;
}

function errnoName(n: number): string {
  return Object.entries(constants.errno).find(([, v]) => v === n)?.[0] ?? `errno ${n}`;
}

async function load(): Promise<Syscalls> {
  if (process.env.VPOOL_NO_SYSCALLS === '1') throw new Error('VPOOL_NO_SYSCALLS=1');
  const koffi = (await import('koffi')).default;
  const libc = koffi.load('libc.so.6');
  const open = libc.func('int open(const char *path, int flags)');
  const close = libc.func('int close(int fd)');
  // ioctl is variadic; one integer or pointer argument is passed the same way to a non-variadic
  // prototype on the 64-bit ABIs koffi ships for, and only a non-variadic function can run on a worker.
  const ioctlInt = libc.func('ioctl', 'int', ['int', 'unsigned long', 'unsigned long']);
  const ioctlPtr = libc.func('ioctl', 'int', ['int', 'unsigned long', 'void *']);
  const mount = libc.func('int mount(const char *src, const char *target, const char *fstype, unsigned long flags, const void *data)');
  const umount2 = libc.func('int umount2(const char *target, int flags)');
  const lseek = libc.func('int64_t lseek(int fd, int64_t offset, int whence)');
  const ioctlPtrAsync = promisify(ioctlPtr.async) as (fd: number, req: number, arg: Buffer | null) => Promise<number>;
  const ioctlIntAsync = promisify(ioctlInt.async) as (fd: number, req: number, arg: number) => Promise<number>;
  const umountAsync = promisify(umount2.async) as (target: string, flags: number) => Promise<number>;

  const withFd = async <T>(path: string, flags: number, fn: (fd: number) => Promise<T> | T): Promise<T | null> => {
    const fd = open(path, flags | O_CLOEXEC) as number;
    if (fd < 0) return null;
    try {
      return await fn(fd);
    } finally {
      close(fd);
    }
  };

  return {
    async configureLoop(fd, readOnly, directIo) {
      // Another process may take the free device between the two calls: ask again, a few times.
      for (let attempt = 0; attempt < 5; attempt++) {
        const n = await withFd('/dev/loop-control', O_RDWR, (ctl) => ioctlInt(ctl, LOOP_CTL_GET_FREE, 0) as number);
        if (n === null || n < 0) return null;
        const config = Buffer.alloc(CONFIG_SIZE);
        config.writeUInt32LE(fd, 0);
        config.writeUInt32LE(VOLUME_SECTOR, 4); // block_size: see VOLUME_SECTOR
        config.writeUInt32LE((readOnly ? LO_FLAGS_READ_ONLY : 0) | (directIo ? LO_FLAGS_DIRECT_IO : 0), 8 + INFO_FLAGS);
        const r = await withFd(`/dev/loop${n}`, readOnly ? O_RDONLY : O_RDWR, (loop) => ioctlPtrAsync(loop, LOOP_CONFIGURE, config));
        if (r === 0) return n;
      }
      return null;
    },
    async clearLoop(device) {
      return (await withFd(device, O_RDONLY, (loop) => ioctlIntAsync(loop, LOOP_CLR_FD, 0))) === 0;
    },
    async refreshLoop(device) {
      return (await withFd(device, O_RDONLY, (loop) => ioctlIntAsync(loop, LOOP_SET_CAPACITY, 0))) === 0;
    },
    loopStatus(device) {
      const fd = open(device, O_RDONLY | O_CLOEXEC) as number;
      if (fd < 0) return null;
      try {
        const info = Buffer.alloc(INFO_SIZE);
        if ((ioctlPtr(fd, LOOP_GET_STATUS64, info) as number) !== 0) return null;
        return { dev: info.readBigUInt64LE(0), ino: info.readBigUInt64LE(8), readOnly: (info.readUInt32LE(INFO_FLAGS) & LO_FLAGS_READ_ONLY) !== 0 };
      } finally {
        close(fd);
      }
    },
    bindMount(source, target, readOnly) {
      if ((mount(source, target, null, MS_BIND, null) as number) !== 0) {
        log.warn('mount(2) of a bind refused', { source, target, errno: errnoName(koffi.errno()) });
        return false;
      }
      if (readOnly && (mount(null, target, null, MS_BIND | MS_REMOUNT | MS_RDONLY, null) as number) !== 0) {
        log.warn('read-only remount refused', { target, errno: errnoName(koffi.errno()) });
        umount2(target, 0);
        return false;
      }
      return true;
    },
    async unmount(target) {
      return (await umountAsync(target, 0)) === 0;
    },
    seek(fd, offset, whence) {
      const at = Number(lseek(fd, offset, whence === 'data' ? SEEK_DATA : SEEK_HOLE));
      return at >= 0 ? { offset: at } : { errno: errnoName(koffi.errno()) };
    },
    address(buf) {
      return koffi.address(buf);
    },
    async fiemap(fd, start, length, max) {
      const buf = Buffer.alloc(FIEMAP_HEADER + max * FIEMAP_EXTENT);
      buf.writeBigUInt64LE(BigInt(start), 0); // fm_start
      buf.writeBigUInt64LE(BigInt(length), 8); // fm_length
      buf.writeUInt32LE(FIEMAP_FLAG_SYNC, 16); // fm_flags
      buf.writeUInt32LE(max, 24); // fm_extent_count
      if ((await ioctlPtrAsync(fd, FS_IOC_FIEMAP, buf)) !== 0) return { failed: true };
      const mapped = buf.readUInt32LE(20);
      const extents: MappedExtent[] = [];
      let last = false;
      for (let i = 0; i < mapped; i++) {
        const at = FIEMAP_HEADER + i * FIEMAP_EXTENT;
        const flags = buf.readUInt32LE(at + 40);
        extents.push({ logical: Number(buf.readBigUInt64LE(at)), physical: Number(buf.readBigUInt64LE(at + 8)), length: Number(buf.readBigUInt64LE(at + 16)), flags });
        if (flags & FIEMAP_EXTENT_LAST) last = true;
      }
      return { extents, more: mapped === max && !last };
    },
  };
}
