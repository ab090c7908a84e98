import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import path from 'node:path';

export const CGROUP_ROOT = '/sys/fs/cgroup';

/**
 * A pod's cgroup where the kubelet's cgroupfs driver makes it (`<kubepods>/burstable/pod<uid>`), in
 * this host's real cgroup filesystem: v2 when the host runs it, else v1's blkio hierarchy. The
 * kubepods cgroup is a test's own (`--kubepods-cgroup`), so nothing of the host's is touched.
 */
export class PodCgroup {
  readonly uid = randomUUID();
  readonly version: 1 | 2 = existsSync(path.join(CGROUP_ROOT, 'cgroup.controllers')) ? 2 : 1;
  readonly hierarchy = this.version === 2 ? CGROUP_ROOT : path.join(CGROUP_ROOT, 'blkio');
  /** The --kubepods-cgroup to give the driver. */
  readonly kubepods: string;
  readonly dir: string;

  constructor(tag: string) {
    this.kubepods = `vpool-test-${tag}-${process.pid}/kubepods`;
    this.dir = path.join(this.hierarchy, this.kubepods, 'burstable', `pod${this.uid}`);
  }

  async create(): Promise<void> {
    if (this.version === 2) {
      // The io controller must be enabled on the way down, as the kubelet's parents have it.
      let at = this.hierarchy;
      for (const part of path.relative(this.hierarchy, this.dir).split('/')) {
        await writeFile(path.join(at, 'cgroup.subtree_control'), '+io').catch(() => undefined);
        at = path.join(at, part);
        await mkdir(at, { recursive: true });
      }
    } else {
      await mkdir(this.dir, { recursive: true });
    }
  }

  /** The limit lines the kernel holds in this cgroup (v1: every throttle file's lines; v2: io.max's). */
  async lines(): Promise<string[]> {
    if (this.version === 2) return (await readFile(path.join(this.dir, 'io.max'), 'utf8')).split('\n').filter(Boolean);
    const out: string[] = [];
    for (const f of ['read_iops', 'write_iops', 'read_bps', 'write_bps']) {
      for (const l of (await readFile(path.join(this.dir, `blkio.throttle.${f}_device`), 'utf8')).split('\n').filter(Boolean)) out.push(`${f} ${l}`);
    }
    return out;
  }

  /** Runs a command as a process of the pod: a node process joins the cgroup, then starts it (its children stay in it). */
  async run(cmd: string, args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
    const script = `require('fs').writeFileSync(${JSON.stringify(path.join(this.dir, 'cgroup.procs'))}, String(process.pid));
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

  /** Removes the pod's cgroup and the test's kubepods tree (their processes have exited). */
  async remove(): Promise<void> {
    let at = this.dir;
    while (at.startsWith(path.join(this.hierarchy, 'vpool-test-')) && at !== this.hierarchy) {
      await rmdir(at).catch(() => undefined);
      at = path.dirname(at);
    }
  }
}

/** fio's figures for one job on a device, run as a process of the pod. */
export async function fioInPod(pod: PodCgroup, device: string, job: { rw: 'randread' | 'randwrite' | 'read' | 'write'; bs: string; seconds: number }): Promise<{ iops: number; bytesPerSecond: number }> {
  const r = await pod.run('fio', ['--name=limits', `--filename=${device}`, `--rw=${job.rw}`, `--bs=${job.bs}`, '--direct=1', '--ioengine=libaio', '--iodepth=16', '--time_based', `--runtime=${job.seconds}`, '--output-format=json']);
  if (r.code !== 0) throw new Error(`fio failed (${r.code}): ${r.stderr}`);
  const j = JSON.parse(r.stdout.slice(r.stdout.indexOf('{'))).jobs[0];
  const d = job.rw.includes('read') ? j.read : j.write;
  return { iops: d.iops, bytesPerSecond: d.bw_bytes };
}
