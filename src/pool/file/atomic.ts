import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import path from 'node:path';

/** Writes `data` to a new temporary file in `tmpDir` and makes it durable; returns its path. */
export async function writeTempSynced(name: string, data: string, tmpDir: string): Promise<string> {
  const tmp = path.join(tmpDir, `${name}.${randomBytes(6).toString('hex')}`);
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  return tmp;
}

/** Flushes a file's data (after a copy made by another program). */
export async function syncFile(file: string): Promise<void> {
  const fh = await open(file, 'r+');
  try {
    await fh.datasync();
  } finally {
    await fh.close();
  }
}

/** Writes a file so that readers see the old content or the new one, never a torn mix, even across a crash. */
export async function writeFileAtomic(file: string, data: string, tmpDir: string): Promise<void> {
  const tmp = await writeTempSynced(path.basename(file), data, tmpDir);
  try {
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
  await syncDir(path.dirname(file));
}

export async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}
