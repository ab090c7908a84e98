/** One page of items in key order: those after `after` (all when empty), at most `limit` (0: no limit). */
export interface Page<T> {
  items: T[];
  /** Whether items follow the page. */
  more: boolean;
}

/**
 * Code-unit order (not locale order), the same order a token is compared in, so pages stay correct
 * while items are created or deleted between calls.
 */
export function pageAfter<T>(unsorted: readonly T[], key: (t: T) => string, after: string, limit: number): Page<T> {
  const items = [...unsorted].sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));
  let start = 0;
  if (after) {
    start = items.findIndex((i) => key(i) > after);
    if (start < 0) start = items.length;
  }
  const end = limit > 0 ? Math.min(items.length, start + limit) : items.length;
  return { items: items.slice(start, end), more: end < items.length };
}
