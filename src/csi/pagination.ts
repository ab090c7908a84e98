import { busy, invalid } from '../errors.js';

/**
 * Pages over items sorted by key. The token is the last key returned, so pages stay correct while
 * items are created or deleted between calls; a token that is no key of ours gets ABORTED, as the
 * spec asks for an invalid starting_token.
 */
export function paginate<T>(unsorted: readonly T[], key: (t: T) => string, maxEntries: number, token: string, isValidKey: (k: string) => boolean) {
  if (maxEntries < 0) throw invalid('max_entries must not be negative');
  // Code-unit order, the same order the token comparison below uses (not locale order).
  const items = [...unsorted].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  let start = 0;
  if (token) {
    if (!isValidKey(token)) throw busy(`starting_token ${JSON.stringify(token.slice(0, 64))} is not a token this driver issued`);
    start = items.findIndex((i) => key(i) > token);
    if (start < 0) start = items.length;
  }
  const end = maxEntries > 0 ? Math.min(items.length, start + maxEntries) : items.length;
  const page = items.slice(start, end);
  const nextToken = end < items.length && page.length > 0 ? key(page[page.length - 1]) : '';
  return { page, nextToken };
}
