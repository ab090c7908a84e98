import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/** This host's cgroup version: 2 when the unified hierarchy is mounted at the root, else 1. */
export const hostCgroupVersion = (): 1 | 2 => (existsSync(path.join(CGROUP_ROOT, 'cgroup.controllers')) ? 2 : 1);

const V1_FILES: ReadonlyArray<[string, string]> = [
  ['rbps', 'blkio.throttle.read_bps_device'],
  ['wbps', 'blkio.throttle.write_bps_device'],
  ['riops', 'blkio.throttle.read_iops_device'],
  ['wiops', 'blkio.throttle.write_iops_device'],
];

/**
 * A pod's cgroup where the kubelet's cgroupfs driver makes it (`<kubepods>/burstable/pod<uid>`), in
 * this host's real cgroup filesystem (v2's root, or v1's blkio hierarchy), with container cgroups under
 * it as the container runtime makes them: the pod's processes run in a container's cgroup, never in the
 * pod's (cgroup v2 allows no process in a cgroup whose controllers are enabled for its children), so a
 * limit on the pod is shown to reach its containers. The kubepods cgroup is a test's own
 * (`--kubepods-cgroup`): nothing of the host's is touched.
 */
export class PodCgroup {
  readonly uid = randomUUID();
  readonly version = hostCgroupVersion();
  /** The hierarchy that holds the I/O controller. */
  readonly root = this.version === 2 ? CGROUP_ROOT : path.join(CGROUP_ROOT, 'blkio');
  /** The --kubepods-cgroup to give the driver. */
  readonly kubepods: string;
  readonly dir: string;
  readonly container: string;
  /** Containers made after the first (a restart, a sidecar), by `addContainer`. */
  private readonly later: string[] = [];

  constructor(tag: string) {
    this.kubepods = `vpool-test-${tag}-${process.pid}/kubepods`;
    this.dir = path.join(this.root, this.kubepods, 'burstable', `pod${this.uid}`);
    this.container = this.containerDir(this.uid);
  }

  private containerDir(id: string): string {
    return path.join(this.dir, `cri-containerd-${id.replaceAll('-', '')}.scope`);
  }

  async create(): Promise<void> {
    // v2: the io controller enabled on the way down, as the kubelet's parents and the pod's cgroup have it.
    let at = this.root;
    for (const part of path.relative(this.root, this.container).split('/')) {
      if (this.version === 2) await writeFile(path.join(at, 'cgroup.subtree_control'), '+io');
      at = path.join(at, part);
      await mkdir(at, { recursive: true });
    }
  }

  /** A container the runtime makes once the pod runs (after its volumes are published): its cgroup under the pod's. */
  async addContainer(): Promise<string> {
    const dir = this.containerDir(randomUUID());
    await mkdir(dir);
    this.later.push(dir);
    return dir;
  }

  /** The limits the kernel holds in a cgroup of the pod (the pod's own by default), one line per device as v2's io.max writes them (v1's four files read as one). */
  async lines(dir = this.dir): Promise<string[]> {
    if (this.version === 2) return (await readFile(path.join(dir, 'io.max'), 'utf8')).split('\n').filter(Boolean);
    const byDevice = new Map<string, Record<string, string>>();
    for (const [key, file] of V1_FILES) {
      for (const l of (await readFile(path.join(dir, file), 'utf8')).split('\n').filter(Boolean)) {
        const [dev, value] = l.split(' ');
        byDevice.set(dev!, { ...(byDevice.get(dev!) ?? {}), [key]: value! });
      }
    }
    return [...byDevice].map(([dev, v]) => [dev, ...V1_FILES.map(([k]) => `${k}=${v[k] ?? 'max'}`)].join(' '));
  }

  /** Lifts the limits on a device in the pod's cgroup by hand, as a person (or a runtime) would, behind the driver's back. */
  async liftByHand(device: string): Promise<void> {
    if (this.version === 2) await writeFile(path.join(this.dir, 'io.max'), `${device} riops=max wbps=max rbps=max wiops=max`);
    else for (const dir of [this.dir, this.container, ...this.later]) for (const [, file] of V1_FILES) await writeFile(path.join(dir, file), `${device} 0`);
  }

  /** Runs a command as a process of one of the pod's containers (the first by default): a node process joins its cgroup, then starts it (its children stay in it). */
  async run(cmd: string, args: string[], container = this.container): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const script = `require('fs').writeFileSync(${JSON.stringify(path.join(container, 'cgroup.procs'))}, String(process.pid));
const r = require('child_process').spawnSync(process.argv[1], process.argv.slice(2), { encoding: 'utf8', maxBuffer: 64 << 20 });
process.stdout.write(r.stdout ?? ''); process.stderr.write(r.stderr ?? ''); process.exit(r.status ?? 1);`;
    return new Promise((resolve, reject) => {
      const p = spawn(process.execPath, ['-e', script, cmd, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
      let stdout = '';
      let stderr = '';
      p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
      p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
      p.on('error', reject);
      p.on('exit', (code) => resolve({ code, stdout, stderr }));
    });
  }

  /** Removes the containers' and the pod's cgroups and the test's kubepods tree (their processes have exited). */
  async remove(): Promise<void> {
    for (const dir of this.later.splice(0)) await rmdir(dir).catch(() => undefined);
    let at = this.container;
    while (at.startsWith(path.join(this.root, 'vpool-test-')) && at !== this.root) {
      await rmdir(at).catch(() => undefined);
      at = path.dirname(at);
    }
  }
}

/** fio's figures for one job on a device or file, run as a process of the pod's container. */
export async function fioInPod(pod: PodCgroup, target: string, job: { rw: 'randread' | 'randwrite' | 'read' | 'write'; bs: string; seconds: number }, container?: string): Promise<{ iops: number; bytesPerSecond: number }> {
  const r = await pod.run('fio', ['--name=limits', `--filename=${target}`, `--rw=${job.rw}`, `--bs=${job.bs}`, '--direct=1', '--ioengine=libaio', '--iodepth=16', '--time_based', `--runtime=${job.seconds}`, '--output-format=json'], container);
  if (r.code !== 0) throw new Error(`fio failed (${r.code}): ${r.stderr}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  const d = job.rw.includes('read') ? j.read : j.write;
  return { iops: d.iops, bytesPerSecond: d.bw_bytes };
}

/** What the kubelet's volume manager does (k8s-contracts.md): a staging path per volume, publish paths that carry the pod's UID. */
export function kubeletPaths(mntDir: string, pv: string, podUid: string, access: 'block' | 'mount') {
  const kubelet = path.join(mntDir, 'kubelet');
  return access === 'block'
    ? { staging: path.join(kubelet, 'plugins/kubernetes.io/csi/volumeDevices/staging', pv), target: path.join(kubelet, 'plugins/kubernetes.io/csi/volumeDevices/publish', pv, podUid) }
    : { staging: path.join(kubelet, 'plugins/kubernetes.io/csi/vpool.csi.dev', pv, 'globalmount'), target: path.join(kubelet, 'pods', podUid, 'volumes/kubernetes.io~csi', pv, 'mount') };
}

/** The directories the kubelet makes before it calls the driver: the staging directory, and the target's parent. */
export async function makeKubeletDirs(p: { staging: string; target: string }): Promise<void> {
  await mkdir(p.staging, { recursive: true });
  await mkdir(path.dirname(p.target), { recursive: true });
}
