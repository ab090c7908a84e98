import { createHash } from 'node:crypto';
import { open } from 'node:fs/promises';

/** Writes and flushes data at an offset of a file or block device. */
export async function writeAt(file: string, offset: number, data: Buffer, flags = 'r+'): Promise<void> {
  const fh = await open(file, flags);
  try {
    await fh.write(data, 0, data.length, offset);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

/** `length` bytes at an offset of a file or block device. */
export async function readAt(file: string, offset: number, length: number): Promise<Buffer> {
  const fh = await open(file, 'r');
  try {
    const buf = Buffer.alloc(length);
    await fh.read(buf, 0, length, offset);
    return buf;
  } finally {
    await fh.close();
  }
}

/** sha256 of `length` bytes at an offset. */
export async function sumAt(file: string, offset: number, length: number): Promise<string> {
  return createHash('sha256').update(await readAt(file, offset, length)).digest('hex');
}

export const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
