import { existsSync, statSync, watch, type FSWatcher } from 'node:fs';
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

/** A pod cgroup tree deeper (levels under the pod's) or wider than a pod's is not walked further (a runaway tree cannot stall the plugin); said once. */
const MAX_DEPTH = 6;
const MAX_CGROUPS = 512;
/** Pods walked at once by the periodic walk. */
const MAX_WALKS = 2;

interface HeldPod {
  /** The limits held on each device, by device number. */
  devices: Map<string, DeviceIoLimits>;
  /** One inotify watch per cgroup of the pod's tree, to see containers' cgroups made later; with the inode it watches (a cgroup removed and made again under the same path is another). */
  watchers: Map<string, { w: FSWatcher; ino: number }>;
  /** The writes to this pod's tree, one at a time (a class change never lands under an older one). */
  queue: Promise<void>;
  released: boolean;
  /** Said once per pod: a watch the kernel refused (inotify's limits), a tree cut short, a cgroup that refused a rule. */
  warned: Set<string>;
  /** A walk of this pod's tree is under way or queued: one at a time per pod (a walk held up by a hung write is not stacked on). */
  walking: boolean;
  /** Calls of set() on this pod not yet done: the pod is let go only when none is (one may be about to give it a rule). */
  pending: number;
}

/** The kernel knows no block device by that number (a volume detached under a pod that still holds its rule). */
class UnknownDevice extends CgroupProblem {}

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

  constructor(
    resyncMs = 30_000,
    /** inotify, or a stand-in that refuses (a test of the kernel's watch limit). */
    private readonly watchDir: (dir: string, listener: (event: string, name: string | Buffer | null) => void) => FSWatcher = (dir, listener) => watch(dir, { persistent: false }, listener),
  ) {
    this.timer = setInterval(() => void this.resync(), resyncMs);
    this.timer.unref();
  }

  async set(dir: string, device: string, limits: DeviceIoLimits): Promise<void> {
    checkDeviceNumber(device);
    if (!existsSync(path.join(dir, FILES[0]![1]))) throw new CgroupProblem(`${dir} has no ${FILES[0]![1]}: the blkio controller is not mounted with the kubelet's pod cgroups`);
    const want = { ...limits };
    const lift = !Object.keys(want).length;
    const pod = this.pods.get(dir) ?? (lift ? undefined : this.hold(dir));
    if (!pod) {
      // A lift in a pod not held: its tree written once, nothing watched.
      for (const cg of await this.tree(dir, undefined, dir)) await this.write(cg, device, want);
      return;
    }
    pod.pending++;
    try {
      // The pod's record and the kernel change together, in the pod's queue: no fill, walk or other set runs between.
      await this.serialize(pod, async () => {
        const before = pod.devices.get(device);
        if (lift) pod.devices.delete(device);
        else pod.devices.set(device, want);
        const written: string[] = [];
        try {
          // A pod whose last rule goes is walked without new watches: it is let go below.
          for (const cg of await this.tree(dir, pod.devices.size ? pod : undefined, dir)) {
            written.push(cg);
            await this.write(cg, device, want);
          }
        } catch (err) {
          // Not set: the pod keeps what it had, in its record (a refused publish unmounts) and in the cgroups
          // this call wrote (best effort: the failure may be theirs too).
          if (before) pod.devices.set(device, before);
          else pod.devices.delete(device);
          for (const cg of written) await this.write(cg, device, before ?? {}).catch(() => undefined);
          throw err;
        }
      });
    } finally {
      pod.pending--;
      if (!pod.devices.size && !pod.pending) this.release(dir, pod);
    }
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

  /** The pod cgroups whose tree is watched, and how many watches each has, for status and tests. */
  held(): Map<string, number> {
    return new Map([...this.pods].map(([dir, pod]) => [dir, pod.watchers.size]));
  }

  close(): void {
    clearInterval(this.timer);
    for (const [dir, pod] of [...this.pods]) this.release(dir, pod);
  }

  private hold(dir: string): HeldPod {
    const pod: HeldPod = { devices: new Map(), watchers: new Map(), queue: Promise.resolve(), released: false, warned: new Set(), walking: false, pending: 0 };
    this.pods.set(dir, pod);
    return pod;
  }

  /** Lets this pod go (its watches closed); a newer entry for the same path (the pod held again since) stays. */
  private release(dir: string, pod: HeldPod): void {
    pod.released = true;
    for (const { w } of pod.watchers.values()) w.close();
    pod.watchers.clear();
    if (this.pods.get(dir) === pod) this.pods.delete(dir);
  }

  private serialize(pod: HeldPod, fn: () => Promise<void>): Promise<void> {
    const next = pod.queue.then(fn);
    pod.queue = next.catch(() => undefined);
    return next;
  }

  private warnOnce(pod: HeldPod, key: string, message: string, fields: Record<string, unknown>): void {
    if (pod.warned.has(key)) return;
    pod.warned.add(key);
    log.warn(message, fields);
  }

  /**
   * The cgroups of the tree at `dir` (breadth first), each watched when the pod is held. The bounds are
   * the pod's: depth counted from the pod's cgroup `podDir`, and no more cgroups than the pod may have
   * (a walk of part of the tree has room for what the rest is not already watched for).
   */
  private async tree(dir: string, pod: HeldPod | undefined, podDir: string): Promise<string[]> {
    const out: string[] = [];
    const below = dir === podDir ? 0 : path.relative(podDir, dir).split(path.sep).length;
    const room = dir === podDir || !pod ? MAX_CGROUPS : Math.max(0, MAX_CGROUPS - pod.watchers.size);
    let level = [dir];
    for (let depth = below; level.length; depth++) {
      if (depth > MAX_DEPTH || out.length + level.length > room) {
        if (pod) this.warnOnce(pod, 'cut', 'a pod\'s cgroup tree is deeper or wider than the walk goes: cgroups past it get no I/O limits', { cgroup: podDir, maxDepth: MAX_DEPTH, maxCgroups: MAX_CGROUPS });
        if (depth > MAX_DEPTH) break;
        level = level.slice(0, Math.max(0, room - out.length));
        if (!level.length) break;
      }
      const next: string[] = [];
      for (const cg of level) {
        if (pod) this.watch(pod, podDir, cg);
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

  /**
   * Watches a cgroup of a held pod for cgroups made under it. A watch the kernel refuses (inotify's
   * watch limit) is said once and let be: the rules are still written, and the walk every resyncMs
   * reaches the cgroups a watch would have.
   */
  private watch(pod: HeldPod, podDir: string, cg: string): void {
    if (pod.released) return;
    let ino: number;
    try {
      ino = statSync(cg).ino;
    } catch {
      return; // gone meanwhile
    }
    const had = pod.watchers.get(cg);
    if (had?.ino === ino) return;
    had?.w.close();
    pod.watchers.delete(cg);
    let w: FSWatcher;
    try {
      w = this.watchDir(cg, (event, name) => {
        // A cgroup made or removed under this one: 'rename' (our own writes to its files are 'change').
        if (event !== 'rename' || !name || pod.released) return;
        void this.serialize(pod, () => this.fill(pod, podDir, path.join(cg, String(name)))).catch((err: unknown) => log.warn('setting a pod\'s I/O limits in a new cgroup failed', { cgroup: cg, error: String(err) }));
      });
    } catch (err) {
      if (errno(err) !== 'ENOENT') this.warnOnce(pod, 'watch', 'a pod\'s cgroups cannot all be watched: a container made later gets its I/O limits at the next walk, not at once (fs.inotify.max_user_watches)', { cgroup: cg, error: String(err) });
      return;
    }
    w.on('error', () => {
      w.close();
      if (pod.watchers.get(cg)?.w === w) pod.watchers.delete(cg);
    });
    pod.watchers.set(cg, { w, ino });
  }

  /** A cgroup that appeared in a held pod's tree gets every rule the pod holds; one that went loses its watches. */
  private async fill(pod: HeldPod, podDir: string, cg: string): Promise<void> {
    if (pod.released) return;
    if (!existsSync(path.join(cg, FILES[0]![1]))) {
      this.unwatch(pod, (dir) => dir === cg || dir.startsWith(`${cg}/`));
      return;
    }
    await this.writeAll(pod, podDir, await this.tree(cg, pod, podDir));
  }

  /**
   * Every rule the pod holds, in each of the cgroups: a cgroup that refuses one is said once and the rest
   * are still written; a device the kernel no longer knows (detached under the pod) is let go.
   */
  private async writeAll(pod: HeldPod, podDir: string, cgs: readonly string[]): Promise<void> {
    for (const [device, limits] of [...pod.devices]) {
      for (const c of cgs) {
        if (pod.devices.get(device) !== limits) break; // changed or lifted meanwhile
        try {
          await this.write(c, device, limits);
        } catch (err) {
          if (err instanceof UnknownDevice) {
            if (pod.devices.get(device) === limits) pod.devices.delete(device);
            log.warn('a pod held I/O limits on a device the kernel no longer knows: they are let go', { cgroup: podDir, device });
            break;
          }
          this.warnOnce(pod, `write ${c} ${device}`, 'a cgroup of a pod refused its I/O limits: the others hold them, the next walk tries again', { cgroup: c, device, error: String(err) });
        }
      }
    }
  }

  private unwatch(pod: HeldPod, which: (dir: string) => boolean): void {
    for (const [dir, { w }] of [...pod.watchers]) {
      if (!which(dir)) continue;
      w.close();
      pod.watchers.delete(dir);
    }
  }

  /**
   * Every held pod's tree walked again: its rules in every cgroup, a watch on each (made again where a
   * cgroup was made again), the watches of cgroups that went closed; a pod whose cgroup went is let go.
   * Two pods are walked at a time, each one walk at a time: a walk held up (a hung write) is not stacked
   * on, and holds up the other pods' only when two are held up (each holds a thread of libuv's pool,
   * which the plugin's other file I/O needs too).
   */
  async resync(): Promise<void> {
    const waiting = [...this.pods].filter(([, pod]) => !pod.walking);
    const slots = MAX_WALKS - [...this.pods.values()].filter((pod) => pod.walking).length;
    const worker = async () => {
      for (let next = waiting.shift(); next; next = waiting.shift()) await this.walk(...next);
    };
    await Promise.all(Array.from({ length: Math.max(0, Math.min(slots, waiting.length)) }, worker));
  }

  private async walk(dir: string, pod: HeldPod): Promise<void> {
    // Already walked or queued (a walker held up by a hung write may carry an older resync's list).
    if (pod.released || pod.walking) return;
    if (!existsSync(dir)) {
      this.release(dir, pod);
      return;
    }
    pod.walking = true;
    try {
      await this.serialize(pod, async () => {
        if (pod.released) return;
        const cgs = await this.tree(dir, pod, dir);
        const walked = new Set(cgs);
        this.unwatch(pod, (c) => !walked.has(c));
        await this.writeAll(pod, dir, cgs);
      });
      if (!pod.devices.size && !pod.pending) this.release(dir, pod);
    } catch (err) {
      log.warn('walking a pod\'s cgroups for its I/O limits failed', { cgroup: dir, error: String(err) });
    } finally {
      pod.walking = false;
    }
  }

  /** The rules of one cgroup for the device: each file written only where it differs (0 removes a rule). A cgroup gone meanwhile is skipped; a device the kernel does not know is an error. */
  private async write(cg: string, device: string, limits: DeviceIoLimits): Promise<void> {
    for (const [k, file] of FILES) {
      const f = path.join(cg, file);
      const want = limits[k] ?? 0;
      try {
        if ((await current(f, device)) !== want) await writeFile(f, `${device} ${want}`);
      } catch (err) {
        // ENODEV is also the kernel's answer for a device number it does not know: only a cgroup that went is skipped.
        if ((errno(err) === 'ENOENT' || errno(err) === 'ENODEV') && !existsSync(cg)) return;
        if (errno(err) === 'ENODEV') throw new UnknownDevice(`${cg}: the kernel knows no block device ${device}`);
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
