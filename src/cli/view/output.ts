import { renderTable, type Column } from './table.js';
import { protoJson } from './proto-json.js';

/** What `-o` takes: kubectl's formats. */
export const FORMATS = ['table', 'wide', 'json', 'yaml', 'name'] as const;
export type Format = (typeof FORMATS)[number];

export interface OutputOptions {
  format: Format;
  headers: boolean;
  /** The terminal's width when standard output is one. */
  width?: number;
  /** Now, for ages: fixed by the caller so that one table has one now. */
  now: number;
}

/** A kind of object listed in a table: its name for -o name and messages, and its columns. */
export interface ListView<R> {
  kind: string;
  plural: string;
  columns: Column<R>[];
  id(row: R): string;
}

export interface Printed {
  stdout: string;
  stderr: string;
}

/**
 * The format asked for, or the default: a table for a person at a terminal, JSON for a program (standard
 * output is a pipe or a file), so a script that pipes the client still reads JSON (in proto3's names
 * since 0.1.0's CLI change: docs/cli.md).
 */
export function chooseFormat(asked: string | undefined, isTTY: boolean): Format {
  if (asked === undefined) return isTTY ? 'table' : 'json';
  if (!(FORMATS as readonly string[]).includes(asked)) throw new UsageError(`-o ${asked}: the output format is one of ${FORMATS.join(', ')}`);
  return asked as Format;
}

/** A mistake on the command line: exits 2, as a usage error does. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** JSON or YAML of a response: a CSI message in proto3's JSON mapping (`proto`), or our own JSON as it is. */
export async function machine(raw: unknown, format: 'json' | 'yaml', proto = true): Promise<string> {
  const data = proto ? protoJson(raw) : raw;
  if (format === 'json') return JSON.stringify(data, null, 2) + '\n';
  // Loaded only for -o yaml: every other start does not pay for it.
  const { stringify } = await import('yaml');
  return stringify(data, { lineWidth: 0 });
}

/** A list (or one object) in the chosen format; `raw` is what -o json and yaml print. */
export async function printList<R>(view: ListView<R>, rows: readonly R[], raw: unknown, o: OutputOptions, proto = true): Promise<Printed> {
  if (o.format === 'json' || o.format === 'yaml') return { stdout: await machine(raw, o.format, proto), stderr: '' };
  if (o.format === 'name') return { stdout: rows.map((r) => `${view.kind}/${view.id(r)}\n`).join(''), stderr: '' };
  if (rows.length === 0) return { stdout: '', stderr: o.headers ? `No ${view.plural} found.\n` : '' };
  const t = renderTable(view.columns, rows, { headers: o.headers, wide: o.format === 'wide', width: o.width });
  const note = t.dropped.length || t.shortened ? `(cut to ${o.width} columns${t.dropped.length ? `: no ${t.dropped.join(', ')}` : ''}; -o wide shows all)\n` : '';
  return { stdout: t.text, stderr: note };
}

/** The outcome of a command that changes something: kubectl's "<kind>/<name> <what>" line, or the response. */
export async function printDone(kind: string, id: string, what: string, raw: unknown, o: OutputOptions): Promise<Printed> {
  if (o.format === 'json' || o.format === 'yaml') return { stdout: await machine(raw, o.format), stderr: '' };
  if (o.format === 'name') return { stdout: `${kind}/${id}\n`, stderr: '' };
  return { stdout: `${kind}/${id} ${what}\n`, stderr: '' };
}
