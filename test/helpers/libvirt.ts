import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import assert from 'node:assert/strict';
import { PROJECT_ROOT } from '../../src/csi/proto.js';
import { finish, type Driver } from './driver.js';

const execFileP = promisify(execFile);
/** The tests' own libvirtd (test/libvirt/libvirt-start.sh), never the host's: its directory, socket, admin socket and PID file. */
export const LIBVIRT_ROOT = '/run/vpool-test-libvirt';
export const URI = `qemu+unix:///system?socket=${LIBVIRT_ROOT}/run/libvirt-sock`;
export const ADMIN_URI = `libvirtd+unix:///system?socket=${LIBVIRT_ROOT}/run/libvirt-admin-sock`;
export const LIBVIRTD_PIDFILE = `${LIBVIRT_ROOT}/libvirtd.pid`;

/** Polls `check` every 200 ms until it returns a value; throws `failure()`'s message past `ms`. */
export async function pollUntil<T>(check: () => Promise<T | undefined>, ms: number, failure: () => Promise<string>): Promise<T> {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await check();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(await failure());
    await new Promise((r) => setTimeout(r, 200));
  }
}

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

/** A pool's volume names, as libvirt lists them once the pool is refreshed. */
export async function poolVolumes(name: string): Promise<string[]> {
  await virsh('pool-refresh', name);
  return (await virsh('vol-list', name)).split('\n').map((l) => l.trim().split(/\s+/)[0]).filter(Boolean);
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
    volumes: () => poolVolumes(name),
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
 * `writer`: the guest also writes dependent writes across that many vp- disks (idle-guest.sh).
 * `stamp` ("SLOT:WORD"): the guest writes WORD into 4 KiB block SLOT of each vp- disk and reports blocks 0-3 (idle-guest.sh).
 */
export async function testDomain(name: string, dir: string, start: boolean, o: { writer?: number; stamp?: string } = {}): Promise<TestDomain> {
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
    <cmdline>console=ttyS0 quiet${o.writer ? ` vpwriter=${o.writer}` : ''}${o.stamp ? ` vpstamp=${o.stamp}` : ''}</cmdline>
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
      const last = async () => (await consoleText()).split('\n').filter((l) => l.startsWith('GUEST DISKS:')).pop() ?? '';
      return pollUntil(async () => {
        const line = await last();
        return line && ok(line) ? line : undefined;
      }, ms, async () => `guest ${name}: disks never matched; last report: ${JSON.stringify(await last())}`);
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

/** The guest's view of one disk, from its last report: sectors, read-only flag and (a stamping guest's) blocks 0-3, or null when absent. */
export function guestDisk(line: string, serial: string): { dev: string; sectors: number; ro: boolean; words: string[] } | null {
  for (const part of line.replace('GUEST DISKS:', '').trim().split(/\s+/)) {
    const [dev, s, sectors, ro, words] = part.split(':');
    if (s === serial) return { dev, sectors: Number(sectors), ro: ro === '1', words: words === undefined ? [] : words.split(',') };
  }
  return null;
}

export interface NodeVm {
  name: string;
  uuid: string;
  run: string;
  /** Waits until the guest wrote /vmrun/<file>. */
  waitFile(file: string, ms?: number): Promise<void>;
  /** Tells the guest to go on: writes /vmrun/go-<step>. */
  go(step: string): Promise<void>;
  console(): Promise<string>;
  remove(): Promise<void>;
}

/**
 * A node VM under libvirt: the VM harness's kernel and initramfs (test/vm/vm-run.sh), the host's
 * root over 9p read-only and a run directory read-write, both as libvirt <filesystem> devices, so
 * the guest runs the project's own code. `command` runs in the guest (cwd: the project); its exit
 * code lands in <run>/rc and the guest powers off. `devices`: more device XML (a virtio-serial channel).
 */
export async function nodeVm(name: string, uuid: string, command: string[], env: Record<string, string>, o: { devices?: string } = {}): Promise<NodeVm> {
  const { mkdtemp, readFile, writeFile, access, copyFile, rm } = await import('node:fs/promises');
  const cache = process.env.VM_CACHE ?? '/var/cache/vm-lvm-test';
  await execFileP('bash', [path.join(PROJECT_ROOT, 'test/vm/vm-run.sh'), '--setup-only'], { timeout: 600_000 });
  const kver = (await readFile(path.join(cache, 'kver'), 'utf8')).trim();
  const run = await mkdtemp('/var/tmp/vpool-nodevm-');
  await copyFile(path.join(cache, 'stage2.sh'), path.join(run, 'stage2.sh'));
  await writeFile(path.join(run, 'moddir'), `${cache}/k/lib/modules/${kver}\n`);
  await writeFile(path.join(run, 'cwd'), `${PROJECT_ROOT}\n`);
  await writeFile(path.join(run, 'cmd.sh'), command.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ') + '\n');
  const exports = Object.entries({ NO_COLOR: '1', NODE_DISABLE_COLORS: '1', TERM: 'dumb', ...env }).map(([k, v]) => `export ${k}='${v.replace(/'/g, `'\\''`)}'`);
  await writeFile(path.join(run, 'env'), exports.join('\n') + '\n');
  // The project read-write at its own path, as vm-run.sh shares $PWD: the guest's /tmp and /run are
  // its own tmpfs, so a checkout there would be hidden behind them in the host root's view.
  await writeFile(path.join(run, 'shares'), `project ${PROJECT_ROOT}\n`);
  const xml = `<domain type='qemu'>
  <name>${name}</name>
  <uuid>${uuid}</uuid>
  <memory unit='MiB'>2048</memory>
  <vcpu>2</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>${cache}/vmlinux</kernel>
    <initrd>${cache}/initrd.cpio</initrd>
    <cmdline>console=ttyS0 panic=-1 quiet loglevel=3 mitigations=off</cmdline>
  </os>
  <features><acpi/><apic/></features>
  <cpu mode='maximum' migratable='off'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>/usr/bin/qemu-system-x86_64</emulator>
    <filesystem type='mount' accessmode='passthrough' multidevs='remap'>
      <driver type='path'/>
      <source dir='/'/>
      <target dir='hostroot'/>
      <readonly/>
    </filesystem>
    <filesystem type='mount' accessmode='passthrough'>
      <driver type='path'/>
      <source dir='${run}'/>
      <target dir='vmrun'/>
    </filesystem>
    <filesystem type='mount' accessmode='passthrough' multidevs='remap'>
      <driver type='path'/>
      <source dir='${PROJECT_ROOT}'/>
      <target dir='project'/>
    </filesystem>
    <rng model='virtio'><backend model='random'>/dev/urandom</backend></rng>
    <serial type='file'><source path='${run}/console.log'/></serial>${o.devices ? `\n    ${o.devices}` : ''}
  </devices>
</domain>`;
  await writeFile(path.join(run, 'domain.xml'), xml);
  await virsh('define', path.join(run, 'domain.xml'));
  await virsh('start', name);
  return {
    name,
    uuid,
    run,
    async waitFile(file, ms = 300_000) {
      const has = (f: string) => access(path.join(run, f)).then(() => true, () => false);
      // rc counts once it has content: the guest's shell creates it before it writes the exit code, and over
      // 9p the host can see it in between (an empty rc was read as the suite's exit code once).
      const ready = (f: string) => (f === 'rc' ? readFile(path.join(run, f), 'utf8').then((t) => t.trim().length > 0, () => false) : has(f));
      const log = () => readFile(path.join(run, 'console.log'), 'utf8').catch(() => '');
      await pollUntil(async () => {
        if (await ready(file)) return true;
        if (file !== 'rc' && (await has('rc'))) throw new Error(`the guest finished without writing ${file}:\n${await log()}`);
        return undefined;
      }, ms, async () => `the guest did not write ${file} within ${ms / 1000} s:\n${await log()}`);
    },
    async go(step) {
      await writeFile(path.join(run, `go-${step}`), '');
    },
    console: () => readFile(path.join(run, 'console.log'), 'utf8').catch(() => ''),
    async remove() {
      await virshTry('destroy', name);
      await virshTry('undefine', name);
      await rm(run, { recursive: true, force: true });
    },
  };
}

/** The process IDs of libvirtd's clients now (virt-admin's view of its "libvirtd" server). */
export async function libvirtdClientPids(): Promise<number[]> {
  const admin = (...args: string[]) => execFileP('virt-admin', ['-q', '-c', ADMIN_URI, ...args], { timeout: 30_000 }).then((r) => String(r.stdout));
  const ids = (await admin('srv-clients-list', 'libvirtd'))
    .split('\n')
    .map((l) => /^\s*(\d+)\s/.exec(l)?.[1])
    .filter((x): x is string => !!x);
  const pids: number[] = [];
  for (const id of ids) {
    const info = await admin('client-info', 'libvirtd', id).catch(() => ''); // gone meanwhile
    const m = /unix_process_id\s*:\s*(\d+)/.exec(info);
    if (m) pids.push(Number(m[1]));
  }
  return pids;
}

/**
 * The end of a hypervisor-mode suite: the driver stopped, its domains and pool removed (with the
 * domains' directory beside the pool), and then nothing may be left: no volume the driver still
 * lists, no volume in the pool.
 */
export async function finishHypervisorSuite(d: Driver | undefined, pool: TestPool | undefined, domains: ReadonlyArray<TestDomain | undefined>): Promise<void> {
  const left = d ? await finish(d) : [];
  for (const dom of domains) await dom?.remove();
  const vols = pool ? await pool.volumes() : [];
  await pool?.remove();
  if (pool) await rm(`${pool.dir}-dom`, { recursive: true, force: true });
  assert.deepEqual(left, []);
  assert.deepEqual(vols, []);
}
