import { existsSync, watch, type FSWatcher } from 'node:fs';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errno } from '../errors.js';
import { log } from '../log.js';
import { CgroupProblem, checkDeviceNumber, type DeviceIoLimits, type IoThrottle } from './io-throttle.js';

const FILES: ReadonlyArray<[keyof DeviceIoLimits, string]> = [
  ['readBytesPerSecond', 'blkio.throttle.read_bps_device'],
  ['writeBytesPerSecond', 'blkio.throttle.write_bps_device'],
  ['readIOPS', 'blkio.throttle.read_iops_device'],
  ['writeIOPS', 'blkio.throttle.write_iops_device'],
];

/** A pod cgroup tree deeper or wider than a pod's is not walked further (a runaway tree cannot stall the plugin). */
const MAX_DEPTH = 6;
const MAX_CGROUPS = 512;

interface HeldPod {
  /** The limits held on each device, by device number. */
  devices: Map<string, DeviceIoLimits>;
  /** One inotify watch per cgroup of the pod's tree, to see containers' cgroups made later. */
  watchers: Map<string, FSWatcher>;
  /** The writes to this pod's tree, one at a time (a class change never lands under an older one). */
  queue: Promise<void>;
  released: boolean;
}

/**
 * cgroup v1's blkio throttling for a pod. v1's throttling is not hierarchical: a rule holds only the
 * tasks of the cgroup it is written in, not those of its children, so the rule is written in the pod's
 * cgroup and in every cgroup under it (the containers', which the runtime makes after the volume is
 * published, and makes again at each restart). The pod's tree is watched (inotify) while it holds a
 * rule, and a new cgroup gets the pod's rules as it appears; a walk every `resyncMs` catches what a watch
 * missed (an overflowed queue). Each cgroup holds the rule on its own: a pod with two containers doing
 * I/O on the volume gets the figure twice over, unlike v2's one budget for the pod. v1 throttles only
 * what a task submits itself: reads and direct writes. Buffered writes are written back by the kernel's
 * flusher threads, outside the pod's cgroup, and are not held (v2 holds them).
 */
export class BlkioThrottle implements IoThrottle {
  readonly version = 1;
  private readonly pods = new Map<string, HeldPod>();
  private readonly timer: NodeJS.Timeout;

  constructor(resyncMs = 30_000) {
    this.timer = setInterval(() => void this.resync(), resyncMs);
    this.timer.unref();
  }

  async set(dir: string, device: string, limits: DeviceIoLimits): Promise<void> {
    checkDeviceNumber(device);
    if (!existsSync(path.join(dir, FILES[0]![1]))) throw new CgroupProblem(`${dir} has no ${FILES[0]![1]}: the blkio controller is not mounted with the kubelet's pod cgroups`);
    const want = { ...limits };
    let pod = this.pods.get(dir);
    if (Object.keys(want).length) {
      pod ??= this.hold(dir);
      pod.devices.set(device, want);
    } else pod?.devices.delete(device);
    const run = async () => {
      for (const cg of await this.tree(dir, pod)) await this.write(cg, device, want);
    };
    if (pod) await this.serialize(pod, run);
    else await run();
    if (pod && !pod.devices.size) this.release(dir);
  }

  /** What the kernel holds for the device in the pod's own cgroup. */
  async get(dir: string, device: string): Promise<DeviceIoLimits> {
    const out: DeviceIoLimits = {};
    for (const [k, file] of FILES) {
      const v = await current(path.join(dir, file), device);
      if (v) out[k] = v;
    }
    return out;
  }

  /** The pod cgroups whose tree is watched, for status and tests. */
  held(): string[] {
    return [...this.pods.keys()];
  }

  close(): void {
    clearInterval(this.timer);
    for (const dir of [...this.pods.keys()]) this.release(dir);
  }

  private hold(dir: string): HeldPod {
    const pod: HeldPod = { devices: new Map(), watchers: new Map(), queue: Promise.resolve(), released: false };
    this.pods.set(dir, pod);
    return pod;
  }

  private release(dir: string): void {
    const pod = this.pods.get(dir);
    if (!pod) return;
    pod.released = true;
    for (const w of pod.watchers.values()) w.close();
    this.pods.delete(dir);
  }

  private serialize(pod: HeldPod, fn: () => Promise<void>): Promise<void> {
    const next = pod.queue.then(fn);
    pod.queue = next.catch(() => undefined);
    return next;
  }

  /** The cgroups of the tree at `dir` (breadth first, bounded), each watched when the pod is held. */
  private async tree(dir: string, pod: HeldPod | undefined): Promise<string[]> {
    const out: string[] = [];
    let level = [dir];
    for (let depth = 0; level.length && depth <= MAX_DEPTH && out.length < MAX_CGROUPS; depth++) {
      const next: string[] = [];
      for (const cg of level) {
        if (out.length >= MAX_CGROUPS) break;
        if (pod) this.watch(pod, cg);
        out.push(cg);
        const entries = await readdir(cg, { withFileTypes: true }).catch((err: unknown) => {
          if (errno(err) === 'ENOENT') return [];
          throw err;
        });
        for (const e of entries) if (e.isDirectory()) next.push(path.join(cg, e.name));
      }
      level = next;
    }
    return out;
  }

  private watch(pod: HeldPod, cg: string): void {
    if (pod.released || pod.watchers.has(cg)) return;
    let w: FSWatcher;
    try {
      w = watch(cg, { persistent: false }, (event, name) => {
        // A cgroup made or removed under this one: 'rename' (our own writes to its files are 'change').
        if (event !== 'rename' || !name || pod.released) return;
        void this.serialize(pod, () => this.fill(pod, path.join(cg, String(name)))).catch((err: unknown) => log.warn('setting a pod\'s I/O limits in a new cgroup failed', { cgroup: cg, error: String(err) }));
      });
    } catch (err) {
      if (errno(err) === 'ENOENT') return;
      throw err;
    }
    w.on('error', () => {
      w.close();
      if (pod.watchers.get(cg) === w) pod.watchers.delete(cg);
    });
    pod.watchers.set(cg, w);
  }

  /** A cgroup that appeared in a held pod's tree gets every rule the pod holds; one that went loses its watch. */
  private async fill(pod: HeldPod, cg: string): Promise<void> {
    if (!existsSync(path.join(cg, FILES[0]![1]))) {
      for (const [dir, w] of pod.watchers) {
        if (dir === cg || dir.startsWith(`${cg}/`)) {
          w.close();
          pod.watchers.delete(dir);
        }
      }
      return;
    }
    const cgs = await this.tree(cg, pod);
    for (const [device, limits] of pod.devices) for (const c of cgs) await this.write(c, device, limits);
  }

  /** Every held pod's tree walked again: its rules in every cgroup, its watches on each; a pod whose cgroup went is let go. */
  async resync(): Promise<void> {
    for (const [dir, pod] of [...this.pods]) {
      if (!existsSync(dir)) {
        this.release(dir);
        continue;
      }
      await this.serialize(pod, async () => {
        const cgs = await this.tree(dir, pod);
        for (const [device, limits] of pod.devices) for (const c of cgs) await this.write(c, device, limits);
      }).catch((err: unknown) => log.warn('walking a pod\'s cgroups for its I/O limits failed', { cgroup: dir, error: String(err) }));
    }
  }

  /** The rules of one cgroup for the device: each file written only where it differs (0 removes a rule). A cgroup gone meanwhile is skipped. */
  private async write(cg: string, device: string, limits: DeviceIoLimits): Promise<void> {
    for (const [k, file] of FILES) {
      const f = path.join(cg, file);
      const want = limits[k] ?? 0;
      try {
        if ((await current(f, device)) !== want) await writeFile(f, `${device} ${want}`);
      } catch (err) {
        if (errno(err) === 'ENOENT' || errno(err) === 'ENODEV') return;
        throw err;
      }
    }
  }
}

/** The rule a blkio.throttle file holds for the device, 0 for none. */
async function current(file: string, device: string): Promise<number> {
  const line = (await readFile(file, 'utf8')).split('\n').find((l) => l.startsWith(`${device} `));
  return line ? Number(line.split(' ')[1]) : 0;
}
