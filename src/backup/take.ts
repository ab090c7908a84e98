import { mkdir, open } from 'node:fs/promises';
import { blockDeviceSize } from '../host/loop.js';
import { ArchiveWriter, listArchive, type ArchiveHeader } from './archive.js';
import { Progress, size } from './progress.js';
import { allRanges, csiRanges, kubernetesRanges, type RangeSource } from '../csi/snapshot-metadata-client.js';

const READ = 4 * 1024 * 1024;

/** The size of a block device or a file. */
async function sizeOf(path: string, fh: Awaited<ReturnType<typeof open>>): Promise<number> {
  const st = await fh.stat();
  return st.isFile() ? st.size : blockDeviceSize(path);
}

export async function take(
  o: { out: string; source: string; endpoint?: string; snapshotId?: string; service?: string; ca?: string; tokenFile?: string; namespace?: string; snapshot?: string; snapshotHandle?: string; baseId?: string; maxResults?: string },
  signal: AbortSignal,
): Promise<void> {
  const maxResults = Number(o.maxResults ?? 0);
  if (!Number.isInteger(maxResults) || maxResults < 0 || maxResults > 2 ** 31 - 1) throw new Error(`--max-results is a whole number (0: the server's choice), not ${JSON.stringify(o.maxResults)}`);
  let src: RangeSource;
  let recordAs: string;
  if (o.endpoint) {
    if (!o.snapshotId) throw new Error('--endpoint needs --snapshot-id');
    if (o.service) throw new Error('give --endpoint or --service, not both');
    src = csiRanges(o.endpoint, { snapshotId: o.snapshotId, baseId: o.baseId, maxResults });
    recordAs = o.snapshotId;
  } else if (o.service) {
    const missing = (['ca', 'tokenFile', 'namespace', 'snapshot', 'snapshotHandle'] as const).filter((k) => !o[k]);
    if (missing.length) throw new Error(`--service needs ${missing.map((k) => `--${k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')}`);
    src = kubernetesRanges({ address: o.service, caFile: o.ca!, tokenFile: o.tokenFile!, namespace: o.namespace!, snapshotName: o.snapshot!, baseId: o.baseId, maxResults });
    recordAs = o.snapshotHandle!;
  } else throw new Error('give --endpoint (the driver\'s CSI socket) or --service (the Kubernetes SnapshotMetadata API)');

  await mkdir(o.out, { recursive: true, mode: 0o700 });
  const held = await listArchive(o.out);
  if (held.some((e) => e.header.snapshot === recordAs)) throw new Error(`the backup in ${o.out} holds ${recordAs} already`);
  if (o.baseId && !held.some((e) => e.header.snapshot === o.baseId)) throw new Error(`the backup in ${o.out} holds no ${o.baseId}: take a full backup (without --base-id) first`);
  if (!o.baseId && held.length) process.stderr.write(`note: ${o.out} holds ${held.length} file(s); this full backup starts a new chain\n`);
  const seq = held.reduce((m, e) => Math.max(m, e.seq), 0) + 1;

  const data = await open(o.source, 'r');
  let writer: ArchiveWriter | undefined;
  const progress = new Progress(`backing up ${recordAs}${o.baseId ? ` (changes since ${o.baseId})` : ''}`, null);
  try {
    const sourceBytes = await sizeOf(o.source, data);
    let capacity = 0;
    const header = (): ArchiveHeader => ({ format: 'vpool-backup/1', snapshot: recordAs, base: o.baseId ?? null, capacity, createdAt: new Date().toISOString() });
    let ranges = 0;
    for await (const { range } of allRanges(src, signal, {
      onCapacity: (c) => {
        capacity = c;
        if (sourceBytes < c) throw new Error(`${o.source} holds ${size(sourceBytes)}, less than the snapshot's ${size(c)}: is it a volume restored from ${recordAs}?`);
      },
      onRetry: (from, err) => process.stderr.write(`the metadata stream broke off (${err.message}); asking again from offset ${from}\n`),
    })) {
      writer ??= await ArchiveWriter.create(o.out, seq, header());
      ranges++;
      for (let at = range[0]; at < range[1]; at += READ) {
        if (signal.aborted) throw signal.reason;
        const n = Math.min(READ, range[1] - at);
        const buf = Buffer.allocUnsafe(n);
        const { bytesRead } = await data.read(buf, 0, n, at);
        if (bytesRead !== n) throw new Error(`${o.source} ended at ${at + bytesRead}, inside the snapshot's data`);
        await writer.block(at, buf);
        progress.add(n);
      }
    }
    writer ??= await ArchiveWriter.create(o.out, seq, header());
    const file = await writer.commit();
    progress.end();
    process.stdout.write(`${file}: ${ranges} ranges of ${recordAs}${o.baseId ? ` changed since ${o.baseId}` : ''}, volume ${size(capacity)}\n`);
  } catch (err) {
    await writer?.abort();
    throw err;
  } finally {
    await data.close();
  }
}
