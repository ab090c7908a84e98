import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { errno } from '../errors.js';

/** Limits on one device for one cgroup; an absent figure is no limit. */
export interface DeviceIoLimits {
  readIOPS?: number;
  writeIOPS?: number;
  readBytesPerSecond?: number;
  writeBytesPerSecond?: number;
}

const POD_UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
const MAJOR_MINOR = /^[0-9]{1,10}:[0-9]{1,10}$/;

export function isPodUid(uid: string): boolean {
  return POD_UID.test(uid);
}

/** Why a pod's limits cannot be set (no cgroup, no I/O controller), as a sentence an operator acts on. */
export class CgroupProblem extends Error {}

const V2_KEYS: ReadonlyArray<[keyof DeviceIoLimits, string]> = [
  ['readBytesPerSecond', 'rbps'],
  ['writeBytesPerSecond', 'wbps'],
  ['readIOPS', 'riops'],
  ['writeIOPS', 'wiops'],
];

/**
 * The kubelet's pod cgroups and cgroup v2's block I/O throttling in them (`io.max`), which holds every
 * container of the pod (its child cgroups) to the pod's limit. cgroup v1 is not used: its blkio
 * throttling is not hierarchical, so a limit on the pod's cgroup does not reach the containers under it,
 * and the containers' own cgroups come and go with restarts the driver never sees. A pod's cgroup is
 * found where the kubelet makes it, with either cgroup driver: systemd (`kubepods.slice/
 * kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`) or cgroupfs (`kubepods/burstable/
 * pod<uid>`), for each QoS class; `parents` are the kubelet's kubepods cgroups to look under (its
 * --cgroup-root moves them). Only paths built from a checked pod UID are touched.
 */
export class PodCgroups {
  private constructor(
    /** The cgroup v2 root. */
    readonly hierarchy: string,
    private readonly parents: readonly string[],
  ) {}

  /** The cgroup v2 filesystem under `root` (the host's /sys/fs/cgroup), or why the node cannot limit a pod's I/O. */
  static detect(root: string, parents: readonly string[] = ['kubepods.slice', 'kubepods']): PodCgroups | string {
    PodCgroups.checkParents(parents);
    if (existsSync(path.join(root, 'cgroup.controllers'))) {
      // None of them there: the kubelet keeps its pods elsewhere, and no pod's cgroup would ever be found.
      if (!parents.some((p) => existsSync(path.join(root, p)))) return `none of the kubelet's kubepods cgroups ${parents.join(', ')} is under ${root} (--kubepods-cgroup)`;
      return new PodCgroups(root, parents);
    }
    if (existsSync(path.join(root, 'blkio', 'blkio.throttle.read_iops_device'))) {
      return 'this node runs cgroup v1, whose blkio throttling does not reach the containers under a pod\'s cgroup: I/O limits need cgroup v2 (systemd.unified_cgroup_hierarchy=1, the default of current distributions)';
    }
    return `${root} is no cgroup filesystem (--cgroup-root; the chart mounts the host's /sys/fs/cgroup)`;
  }

  /** Throws for a kubepods cgroup that is not a plain path under the root (a flag's mistake, found at start). */
  static checkParents(parents: readonly string[]): void {
    for (const p of parents) if (!p || path.isAbsolute(p) || p.split('/').some((part) => part === '..' || part === '.' || part === '')) throw new Error(`--kubepods-cgroup is a path under the cgroup root, such as kubepods.slice or kubelet/kubepods, not ${JSON.stringify(p)}`);
  }

  /** Where the pod's cgroup would be, in the order looked at. */
  candidates(uid: string): string[] {
    if (!isPodUid(uid)) throw new CgroupProblem(`${JSON.stringify(uid)} is not a pod UID`);
    const u = uid.replaceAll('-', '_');
    const out: string[] = [];
    for (const parent of this.parents) {
      const base = path.join(this.hierarchy, parent);
      if (parent.endsWith('.slice')) {
        // systemd names a nested slice by its whole path: kubepods-burstable-pod<uid>.slice.
        const prefix = path.basename(parent, '.slice');
        out.push(path.join(base, `${prefix}-pod${u}.slice`));
        for (const qos of ['burstable', 'besteffort']) out.push(path.join(base, `${prefix}-${qos}.slice`, `${prefix}-${qos}-pod${u}.slice`));
      } else {
        out.push(path.join(base, `pod${uid}`));
        for (const qos of ['burstable', 'besteffort']) out.push(path.join(base, qos, `pod${uid}`));
      }
    }
    return out;
  }

  /** The pod's cgroup directory, or null when the kubelet has made none (the pod is gone). */
  podCgroup(uid: string): string | null {
    return this.candidates(uid).find((dir) => existsSync(dir)) ?? null;
  }

  /**
   * Sets the pod's limits on one device, every figure at once (one write of io.max: all or nothing; an
   * absent figure lifts that limit). Nothing is written when the kernel holds them already.
   */
  async set(dir: string, device: string, limits: DeviceIoLimits): Promise<void> {
    if (!MAJOR_MINOR.test(device)) throw new Error(`${JSON.stringify(device)} is not a major:minor device number`);
    const file = path.join(dir, 'io.max');
    if (!existsSync(file)) throw new CgroupProblem(`${dir} has no io.max: the io controller is not enabled for the kubelet's pod cgroups (cgroup.subtree_control of its parents)`);
    const held = await this.get(dir, device);
    if (V2_KEYS.every(([k]) => held[k] === limits[k])) return;
    await writeFile(file, [device, ...V2_KEYS.map(([k, key]) => `${key}=${limits[k] ?? 'max'}`)].join(' '));
  }

  /** The limits the kernel holds for the device in this cgroup (what `set` wrote, as the kernel reads it back). */
  async get(dir: string, device: string): Promise<DeviceIoLimits> {
    const out: DeviceIoLimits = {};
    const line = (await readFile(path.join(dir, 'io.max'), 'utf8')).split('\n').find((l) => l.startsWith(`${device} `));
    for (const field of line?.split(' ').slice(1) ?? []) {
      const [key, value] = field.split('=');
      const k = V2_KEYS.find(([, name]) => name === key)?.[0];
      if (k && value !== 'max') out[k] = Number(value);
    }
    return out;
  }

  /** Lifts every limit on the device; a cgroup already gone (its pod ended) is fine. */
  async clear(dir: string, device: string): Promise<void> {
    try {
      await this.set(dir, device, {});
    } catch (err) {
      if (errno(err) === 'ENOENT' || errno(err) === 'ENODEV' || err instanceof CgroupProblem) return;
      throw err;
    }
  }
}
