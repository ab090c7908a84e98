/** The filesystems a mount volume can get, and their facts: one place for the CSI layer and the host code. */
export const FS_TYPES = ['ext4', 'xfs'] as const;
export type FsType = (typeof FS_TYPES)[number];
export const DEFAULT_FS: FsType = 'ext4';

/** Smallest volume each filesystem can be made on (mkfs.xfs refuses below 300 MiB). */
export const MIN_FS_BYTES: Record<FsType, number> = { ext4: 1024 * 1024, xfs: 300 * 1024 * 1024 };

export function isFsType(v: string): v is FsType {
  return (FS_TYPES as readonly string[]).includes(v);
}
