import { busy, invalid } from '../errors.js';
import { pageAfter, type Page } from '../paging.js';

/**
 * Checks a page request: max_entries not negative; a starting_token that is no key of ours gets
 * ABORTED, as the spec asks for an invalid starting_token. The token is the last key returned.
 */
export function checkPageRequest(maxEntries: number, token: string, isValidKey: (k: string) => boolean): void {
  if (maxEntries < 0) throw invalid('max_entries must not be negative');
  if (token && !isValidKey(token)) throw busy(`starting_token ${JSON.stringify(token.slice(0, 64))} is not a token this driver issued`);
}

/** The token for the page after this one: its last key, or none when nothing follows. */
export function nextTokenOf<T>(page: Page<T>, key: (t: T) => string): string {
  return page.more && page.items.length > 0 ? key(page.items[page.items.length - 1]) : '';
}

/** Pages over items sorted by key. */
export function paginate<T>(unsorted: readonly T[], key: (t: T) => string, maxEntries: number, token: string, isValidKey: (k: string) => boolean) {
  checkPageRequest(maxEntries, token, isValidKey);
  const page = pageAfter(unsorted, key, token, maxEntries);
  return { page: page.items, nextToken: nextTokenOf(page, key) };
}
