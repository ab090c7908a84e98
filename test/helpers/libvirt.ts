import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from '../../src/csi/proto.js';

const execFileP = promisify(execFile);
export const URI = 'qemu:///system';

/** Starts the real libvirtd (test/libvirt/libvirt-start.sh: Debian packages, no systemd); reused if running. */
export async function startLibvirt(): Promise<void> {
  await execFileP('bash', [path.join(PROJECT_ROOT, 'test/libvirt/libvirt-start.sh')], { timeout: 600_000 });
}

export async function virsh(...args: string[]): Promise<string> {
  return (await execFileP('virsh', ['-q', '-c', URI, ...args], { timeout: 300_000 })).stdout;
}

/** virsh that resolves with its exit code and output instead of rejecting. */
export async function virshTry(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP('virsh', ['-q', '-c', URI, ...args], { timeout: 300_000 });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

export interface TestPool {
  name: string;
  dir: string;
  /** The pool's volume names, as libvirt lists them. */
  volumes(): Promise<string[]>;
  remove(): Promise<void>;
}

/** A `dir` pool in a fresh directory (not tmpfs: disks are opened with O_DIRECT). */
export async function dirPool(prefix: string): Promise<TestPool> {
  const dir = await mkdtemp(`/var/tmp/${prefix}-`);
  const name = path.basename(dir);
  await virsh('pool-define-as', name, 'dir', '--target', dir);
  await virsh('pool-start', name);
  return {
    name,
    dir,
    async volumes() {
      await virsh('pool-refresh', name);
      return (await virsh('vol-list', name)).split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
    },
    async remove() {
      await virshTry('pool-destroy', name);
      await virshTry('pool-undefine', name);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
