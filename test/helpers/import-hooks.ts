// Module hooks (node:module register) that record every module a process loads, one URL a line,
// in $VPOOL_IMPORT_LOG: how the footprint test sees what a command pulls in.
import { appendFileSync } from 'node:fs';

type Resolve = (specifier: string, context: unknown) => Promise<{ url: string }>;

export async function resolve(specifier: string, context: unknown, next: Resolve): Promise<{ url: string }> {
  const r = await next(specifier, context);
  if (process.env.VPOOL_IMPORT_LOG) appendFileSync(process.env.VPOOL_IMPORT_LOG, `${r.url}\n`);
  return r;
}
