/** Prints an RPC result as JSON, or as a table: one row per list entry, or key/value rows for a single object. */
export function printResult(result: unknown, format: 'json' | 'table'): void {
  if (format !== 'table') {
    process.stdout.write(JSON.stringify(result, null, 2) + '\n');
    return;
  }
  const entries = (result as { entries?: unknown[] } | null)?.entries;
  const rows = Array.isArray(entries) ? entries.map((e) => flatten(e)) : Object.entries(flatten(result)).map(([field, value]) => ({ field, value }));
  process.stdout.write(table(rows));
}

function flatten(value: unknown, prefix = '', out: Record<string, string> = {}): Record<string, string> {
  if (value === null || value === undefined) return out;
  if (typeof value !== 'object') {
    out[prefix || 'value'] = String(value);
    return out;
  }
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v !== 'object')) out[prefix] = value.join(',');
    else value.forEach((v, i) => flatten(v, `${prefix}[${i}]`, out));
    return out;
  }
  for (const [k, v] of Object.entries(value)) flatten(v, prefix ? `${prefix}.${k}` : k, out);
  return out;
}

function table(rows: Record<string, string>[]): string {
  if (rows.length === 0) return '(none)\n';
  const cols = [...new Set(rows.flatMap((r) => Object.keys(r)))];
  const width = cols.map((c) => Math.max(c.length, ...rows.map((r) => (r[c] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(width[i])).join('  ').trimEnd() + '\n';
  return line(cols.map((c) => c.toUpperCase())) + rows.map((r) => line(cols.map((c) => r[c] ?? ''))).join('');
}
