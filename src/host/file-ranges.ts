import type { FileHandle } from 'node:fs/promises';
import { log } from '../log.js';
import type { SeekFn } from './syscalls.js';

/**
 * The data ranges of a file by SEEK_DATA/SEEK_HOLE; null where they cannot be had (then everything
 * is read, zero blocks still skipped). Only ENXIO means "no data after here"; every other refusal
 * (EINVAL, EOPNOTSUPP, ...) says nothing about the data, and taking it as the end would send
 * nothing and restore zeros.
 */
export async function fileRanges(fh: FileHandle, size: number, seek: SeekFn | undefined): Promise<Array<readonly [number, number]> | null> {
  return fileRangesIn(fh, 0, size, seek);
}

/** fileRanges within [start, end): a window of a large file, so no caller holds all of its ranges at once. */
export async function fileRangesIn(fh: FileHandle, start: number, end: number, seek: SeekFn | undefined): Promise<Array<readonly [number, number]> | null> {
  if (!seek) return null;
  const ranges: Array<readonly [number, number]> = [];
  let at = start;
  while (at < end) {
    const data = seek(fh.fd, at, 'data');
    if ('errno' in data) {
      if (data.errno === 'ENXIO') break;
      return cannotTell(data.errno);
    }
    if (data.offset >= end) break;
    const hole = seek(fh.fd, data.offset, 'hole');
    if ('errno' in hole) return cannotTell(hole.errno);
    ranges.push([data.offset, Math.min(hole.offset, end)]);
    at = hole.offset;
  }
  return ranges;
}

function cannotTell(errno: string): null {
  log.info('the filesystem does not tell a file\'s data ranges; reading the whole file', { errno });
  return null;
}
