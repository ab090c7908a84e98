import { open, stat } from 'node:fs/promises';
import path from 'node:path';
import { blockDeviceSize } from '../host/loop.js';
import { chainTo, listArchive, readArchive } from './archive.js';
import { Progress, size } from './progress.js';

/**
 * Restores a snapshot from a backup onto a blank volume: the chain of files that leads to it (a full
 * backup, then each increment on the one before) is read through and checked first (every header,
 * every digest, the chain unbroken, the volume large enough), so a damaged backup is refused before
 * a byte is written; then each file's blocks are written in order and the volume synced.
 */
export async function restore(o: { from: string; to: string; upto?: string }, signal: AbortSignal): Promise<void> {
  const chain = chainTo(await listArchive(o.from), o.upto);
  const last = chain[chain.length - 1]!;
  const st = await stat(o.to);
  const room = st.isFile() ? st.size : await blockDeviceSize(o.to);
  if (room < last.header.capacity) throw new Error(`${o.to} holds ${size(room)}, less than the ${size(last.header.capacity)} of ${last.header.snapshot}`);
  const total = (await Promise.all(chain.map(async (e) => (await stat(e.file)).size))).reduce((a, b) => a + b, 0);

  const check = new Progress(`checking ${chain.length} file(s) of the backup`, total);
  for (const e of chain) {
    await readArchive(e, async () => {
      if (signal.aborted) throw signal.reason;
    }, (n) => check.add(n));
  }
  check.end();

  const target = await open(o.to, 'r+');
  const progress = new Progress(`restoring ${last.header.snapshot}`, total);
  try {
    for (const e of chain) {
      await readArchive(e, async (offset, data) => {
        if (signal.aborted) throw signal.reason;
        let done = 0;
        while (done < data.length) done += (await target.write(data, done, data.length - done, offset + done)).bytesWritten;
      }, (n) => progress.add(n));
    }
    await target.sync();
    progress.end();
  } finally {
    await target.close();
  }
  process.stdout.write(`${o.to}: ${last.header.snapshot} restored from ${chain.map((e) => path.basename(e.file)).join(' + ')}\n`);
}
