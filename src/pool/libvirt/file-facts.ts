import { statSync } from 'node:fs';

/** What libvirt says of one volume: its size, what it allocates, where it is. */
export interface VolumeSizeAndPath {
  capacity: number;
  allocation: number;
  path: string;
  /** Seconds since the epoch, where the pool type reports it. */
  mtime?: number;
  /** libvirt's ctime of the file, as it printed it ("seconds.fraction"), where it reports it. */
  ctime?: string;
}

/** A file's identity and state: every write, resize, rename over it or metadata change moves it. */
function stampOf(path: string): { stamp: string; ctimeNs: bigint } | null {
  try {
    const st = statSync(path, { bigint: true, throwIfNoEntry: false });
    if (!st || !st.isFile()) return null;
    return { stamp: `${st.dev}:${st.ino}:${st.size}:${st.blocks}:${st.mtimeNs}:${st.ctimeNs}`, ctimeNs: st.ctimeNs };
  } catch {
    return null;
  }
}

/** "1796140289.7199502" → nanoseconds, as libvirt prints timestamps (the fraction's trailing zeros left out). */
export function timestampNs(t: string | undefined): bigint | null {
  const m = t ? /^(\d+)(?:\.(\d{1,9}))?$/.exec(t) : null;
  return m ? BigInt(m[1]) * 1_000_000_000n + BigInt((m[2] ?? '').padEnd(9, '0')) : null;
}

/**
 * libvirt's facts of file-backed volumes, held while the file is as it was: libvirt derives a file
 * volume's capacity, allocation and times from the file (and a qcow2 header in it), so while the
 * file's inode, size, blocks and times are unchanged libvirt would say the same again, and one stat
 * stands in for one XML read. Kept only where this process sees the very file libvirtd described:
 * the ctime libvirt reported equals ours to the nanosecond (a controller in a container with another
 * file at that path never matches, and reads libvirt every time).
 */
export class FileFacts {
  private readonly held = new Map<string, { stamp: string; facts: VolumeSizeAndPath }>();

  constructor(private readonly dir: string) {}

  async get(name: string, read: () => Promise<VolumeSizeAndPath | null>): Promise<VolumeSizeAndPath | null> {
    const before = stampOf(`${this.dir}/${name}`);
    const held = this.held.get(name);
    if (before && held?.stamp === before.stamp) return held.facts;
    const facts = await read();
    // Keyed by the stat taken before libvirt was asked: a change in between makes the key stale, never the facts.
    if (facts && before && timestampNs(facts.ctime) === before.ctimeNs && facts.path === `${this.dir}/${name}`) this.held.set(name, { stamp: before.stamp, facts });
    else this.held.delete(name);
    return facts;
  }

  /** Forgets names libvirt no longer lists, so the memo is as large as the pool. */
  keepOnly(names: { has(name: string): boolean }): void {
    for (const n of this.held.keys()) if (!names.has(n)) this.held.delete(n);
  }
}
