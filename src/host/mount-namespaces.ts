import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { parseMountInfo, type MountEntry } from './mounts.js';

/** One mount namespace's table, read through a process that lives in it. */
export interface NamespaceMounts {
  /** A process in that namespace; its /proc/<pid>/root resolves paths as that namespace does. */
  pid: number;
  self: boolean;
  mounts: MountEntry[];
}

const nsOf = (pid: string) => {
  try {
    return readlinkSync(`/proc/${pid}/ns/mnt`);
  } catch {
    return null; // gone, or a kernel thread
  }
};

/**
 * The mount table of every mount namespace this process can see (every one on the node where it
 * shares the host's PID namespace; its own and its children's otherwise), its own first. A volume
 * can be in use in a namespace other than the driver's: a previous driver container's, a pod's.
 * procfs is memory-backed, so this is read synchronously.
 */
export function mountNamespaces(): NamespaceMounts[] {
  const own = nsOf('self');
  const seen = new Set<string>(own ? [own] : []);
  const out: NamespaceMounts[] = [{ pid: process.pid, self: true, mounts: parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8')) }];
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue;
    const ns = nsOf(name);
    if (!ns || seen.has(ns)) continue;
    seen.add(ns);
    try {
      out.push({ pid: Number(name), self: false, mounts: parseMountInfo(readFileSync(`/proc/${name}/mountinfo`, 'utf8')) });
    } catch {
      // the process left between the two reads
    }
  }
  return out;
}
