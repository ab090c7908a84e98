import { readdir } from 'node:fs/promises';
import path from 'node:path';

/**
 * Expands a device path with shell-style wildcards (*, ?, [abc]) in any segment, as an operator
 * writes /dev/disk/by-id/nvme-Samsung_* in a VolumePool. Matches are sorted so that the pool is
 * built in the same order on every node. '*' never crosses a '/', and hidden names are not matched
 * by a leading wildcard. A path without wildcards is returned as it is (whether or not it exists:
 * the caller reports a missing device).
 */
export async function expandDeviceGlob(pattern: string): Promise<string[]> {
  if (!hasWildcard(pattern)) return [pattern];
  const segments = pattern.split('/').filter(Boolean);
  let bases = ['/'];
  for (const segment of segments) {
    const next: string[] = [];
    for (const base of bases) {
      if (!hasWildcard(segment)) {
        next.push(path.join(base, segment));
        continue;
      }
      const re = segmentRegExp(segment);
      const names = await readdir(base).catch(() => [] as string[]);
      for (const name of names) if (re.test(name) && !(name.startsWith('.') && !segment.startsWith('.'))) next.push(path.join(base, name));
    }
    bases = next;
  }
  return bases.sort();
}

export function hasWildcard(text: string): boolean {
  return /[*?[]/.test(text);
}

function segmentRegExp(segment: string): RegExp {
  let re = '';
  for (let i = 0; i < segment.length; i++) {
    const c = segment[i];
    if (c === '*') re += '[^/]*';
    else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = segment.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        const body = segment.slice(i + 1, end).replace(/\\/g, '\\\\');
        re += body.startsWith('!') ? `[^${body.slice(1)}]` : `[${body}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}
