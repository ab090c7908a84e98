import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

/** virsh reads XML from a file (client side, so remote URIs work too); the file lives only for the call. */
export async function withXmlFile<T>(xml: string, fn: (file: string) => Promise<T>): Promise<T> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-xml-'));
  try {
    const file = path.join(dir, 'device.xml');
    await writeFile(file, xml, { mode: 0o600 });
    return await fn(file);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
