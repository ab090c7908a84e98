/**
 * Tables as kubectl prints them (k8s.io/cli-runtime's printers): upper-case headers, columns left-aligned
 * and three spaces apart, no trailing blanks. kubectl never cuts a cell; we cut only an ID column, in
 * its middle, and only when the table would not fit a known terminal width: the start names the
 * object and the end is its unique tail. `-o wide`, json, yaml and name never cut.
 */
export interface Column<R> {
  header: string;
  cell(row: R): string;
  /** Shown with -o wide only. */
  wide?: boolean;
  /** May be shortened in its middle to fit the terminal (IDs). */
  shrink?: boolean;
  /** May be left out to fit the terminal, once IDs are as short as they go: the highest first. */
  drop?: number;
}

export interface TableOptions {
  headers: boolean;
  wide: boolean;
  /** The terminal's width, when known and the output is for a person. */
  width?: number;
}

const GAP = '   ';
const MIN_SHRUNK = 16;

export interface Rendered {
  text: string;
  /** Whether a cell was shortened to fit the width. */
  shortened: boolean;
  /** The headers of columns left out to fit the width. */
  dropped: string[];
}

export function renderTable<R>(columns: readonly Column<R>[], rows: readonly R[], o: TableOptions): Rendered {
  let cols = columns.filter((c) => o.wide || !c.wide);
  // Control characters (an escape sequence in an Event's message) never reach the terminal.
  let cells = rows.map((r) => cols.map((c) => c.cell(r).replace(/\s+/g, ' ').replace(/[\u0000-\u001f\u007f-\u009f]/g, '?')));
  let width = cols.map((c, i) => cells.reduce((w, row) => Math.max(w, len(row[i]!)), o.headers ? c.header.length : 0));
  let shortened = false;
  const dropped: string[] = [];
  if (o.width && !o.wide) {
    const total = () => width.reduce((a, b) => a + b, 0) + GAP.length * (cols.length - 1);
    const floor = (i: number) => (cols[i]!.shrink ? Math.max(MIN_SHRUNK, cols[i]!.header.length) : width[i]!);
    // Columns go first, while even the shortest IDs would not make the table fit.
    while (width.reduce((a, _, i) => a + floor(i), 0) + GAP.length * (cols.length - 1) > o.width) {
      let out = -1;
      for (const [i, c] of cols.entries()) if (c.drop !== undefined && (out < 0 || c.drop > cols[out]!.drop!)) out = i;
      if (out < 0) break;
      dropped.push(cols[out]!.header);
      cols = cols.filter((_, i) => i !== out);
      cells = cells.map((row) => row.filter((_, i) => i !== out));
      width = width.filter((_, i) => i !== out);
    }
    // A character at a time from the widest shrinkable column, so that two long IDs are cut alike; never below MIN_SHRUNK (or the header).
    while (total() > o.width) {
      let widest = -1;
      for (const [i, c] of cols.entries()) if (c.shrink && width[i]! > floor(i) && (widest < 0 || width[i]! > width[widest]!)) widest = i;
      if (widest < 0) break;
      width[widest]!--;
      shortened = true;
    }
    if (shortened)
      for (const row of cells)
        for (const [i, c] of cols.entries()) if (c.shrink) row[i] = middle(row[i]!, width[i]!);
  }
  const line = (row: string[]) => row.map((cell, i) => (i === row.length - 1 ? cell : cell + ' '.repeat(width[i]! - len(cell)))).join(GAP).trimEnd() + '\n';
  const out = (o.headers ? [line(cols.map((c) => c.header))] : []).concat(cells.map(line));
  return { text: out.join(''), shortened: shortened && cells.some((row) => row.some((cell) => cell.includes('…'))), dropped };
}

/** Characters as a terminal counts them (no wide characters appear in what the driver returns). */
function len(s: string): number {
  return [...s].length;
}

/** "vol-pvc-0b1c…72ad8f0e": the start and the end, at most `n` characters in all. */
function middle(s: string, n: number): string {
  const chars = [...s];
  if (chars.length <= n) return s;
  const tail = Math.floor((n - 1) / 2);
  return chars.slice(0, n - 1 - tail).join('') + '…' + chars.slice(chars.length - tail).join('');
}
