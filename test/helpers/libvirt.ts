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

export interface TestDomain {
  name: string;
  uuid: string;
  /** What the guest printed on its serial console so far. */
  console(): Promise<string>;
  /** Waits until the console's last "GUEST DISKS:" line satisfies `ok`; returns that line. */
  waitDisks(ok: (line: string) => boolean, ms?: number): Promise<string>;
  remove(): Promise<void>;
}

/**
 * A small TCG domain (`type='qemu'`, no KVM here) booting Debian's kernel and the idle initramfs of
 * test/libvirt/idle-guest.sh; `<acpi/>` is what PCI hot-plug needs. Defined only, or started.
 */
export async function testDomain(name: string, dir: string, start: boolean): Promise<TestDomain> {
  const { writeFile, readFile } = await import('node:fs/promises');
  const { randomUUID } = await import('node:crypto');
  const guest = path.join(dir, 'guest');
  await execFileP('bash', [path.join(PROJECT_ROOT, 'test/libvirt/idle-guest.sh'), guest], { timeout: 600_000 });
  const uuid = randomUUID();
  const consoleLog = path.join(dir, `${name}.console.log`);
  const root = path.join(dir, `${name}-root.qcow2`);
  await execFileP('qemu-img', ['create', '-q', '-f', 'qcow2', root, '64M']);
  const xml = `<domain type='qemu'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='MiB'>256</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${guest}/vmlinux</kernel>
    <initrd>${guest}/idle-initrd.cpio</initrd>
    <cmdline>console=ttyS0 quiet</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file='${root}'/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <serial type='file'><source path='${consoleLog}'/></serial>
  </devices>
</domain>`;
  const file = path.join(dir, `${name}.xml`);
  await writeFile(file, xml);
  await virsh('define', file);
  const consoleText = () => readFile(consoleLog, 'utf8').catch(() => '');
  const dom: TestDomain = {
    name,
    uuid,
    console: consoleText,
    async waitDisks(ok, ms = 60_000) {
      const deadline = Date.now() + ms;
      let last = '';
      for (;;) {
        const lines = (await consoleText()).split('\n').filter((l) => l.startsWith('GUEST DISKS:'));
        last = lines[lines.length - 1] ?? '';
        if (last && ok(last)) return last;
        if (Date.now() > deadline) throw new Error(`guest ${name}: disks never matched; last report: ${JSON.stringify(last)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    },
    async remove() {
      await virshTry('destroy', name);
      await virshTry('undefine', name);
    },
  };
  if (start) {
    await virsh('start', name);
    await dom.waitDisks((l) => l.includes(' vda:'), 120_000);
  }
  return dom;
}

/** The guest's view of one disk, from its last report: sectors and read-only flag, or null when absent. */
export function guestDisk(line: string, serial: string): { dev: string; sectors: number; ro: boolean } | null {
  for (const part of line.replace('GUEST DISKS:', '').trim().split(/\s+/)) {
    const [dev, s, sectors, ro] = part.split(':');
    if (s === serial) return { dev, sectors: Number(sectors), ro: ro === '1' };
  }
  return null;
}
