import { open } from 'node:fs/promises';
import { log } from '../../log.js';
import { blockDeviceSize } from '../../host/loop.js';
import { progressReporter } from '../../operations.js';

const CHUNK = 4 * 1024 * 1024;

/**
 * Copies one block device onto another of at least its size, in-process, logging progress. Every
 * block is written, zeros included: a thick destination may hold another volume's old data.
 */
export async function copyBlockDevice(from: string, to: string): Promise<void> {
  const progress = progressReporter();
  const src = await open(from, 'r');
  try {
    const dst = await open(to, 'r+');
    try {
      const size = await blockDeviceSize(from);
      const buf = Buffer.alloc(CHUNK);
      let done = 0;
      let lastLogged = 0;
      const started = Date.now();
      while (done < size) {
        const { bytesRead } = await src.read(buf, 0, Math.min(CHUNK, size - done), done);
        if (bytesRead === 0) break;
        await dst.write(buf, 0, bytesRead, done);
        done += bytesRead;
        progress?.bytes(done, size);
        if (Date.now() - lastLogged > 5000) {
          lastLogged = Date.now();
          log.info('copying volume', { from, to, percent: Math.floor((done / size) * 100), bytes: done });
        }
      }
      progress?.syncing();
      await dst.datasync();
      log.info('copied volume', { from, to, bytes: done, ms: Date.now() - started });
    } finally {
      await dst.close();
    }
  } finally {
    await src.close();
  }
}

