import { existsSync } from 'node:fs';
import path from 'node:path';
import { errno } from '../errors.js';
import { BlkioThrottle } from './blkio-throttle.js';
import { CgroupProblem, IoMax, type DeviceIoLimits, type IoThrottle } from './io-throttle.js';

export { CgroupProblem, type DeviceIoLimits } from './io-throttle.js';

const POD_UID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export function isPodUid(uid: string): boolean {
  return POD_UID.test(uid);
}

/**
 * The kubelet's pod cgroups and the kernel's block I/O throttling in them. On cgroup v2 the pod's
 * io.max holds every container of the pod (its child cgroups); on v1, whose blkio throttling is not
 * hierarchical, the rule is written in the pod's cgroup and in every cgroup under it, watched for the
 * containers made later (BlkioThrottle). A pod's cgroup is found where the kubelet makes it, with either
 * cgroup driver: systemd (`kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod<uid_>.slice`)
 * or cgroupfs (`kubepods/burstable/pod<uid>`), for each QoS class; `parents` are the kubelet's kubepods
 * cgroups to look under (its --cgroup-root moves them). Only paths built from a checked pod UID are touched.
 */
export class PodCgroups {
  private constructor(
    /** The hierarchy that holds the I/O controller: the v2 root, or v1's blkio. */
    readonly hierarchy: string,
    private readonly parents: readonly string[],
    readonly throttle: IoThrottle,
  ) {}

  get version(): 1 | 2 {
    return this.throttle.version;
  }

  /** The pod cgroups under `root` (the host's /sys/fs/cgroup, v2 or v1's blkio), or why the node cannot limit a pod's I/O. */
  static detect(root: string, parents: readonly string[] = ['kubepods.slice', 'kubepods']): PodCgroups | string {
    PodCgroups.checkParents(parents);
    // None of them there: the kubelet keeps its pods elsewhere, and no pod's cgroup would ever be found.
    const elsewhere = (h: string) => (parents.some((p) => existsSync(path.join(h, p))) ? null : `none of the kubelet's kubepods cgroups ${parents.join(', ')} is under ${h} (--kubepods-cgroup)`);
    if (existsSync(path.join(root, 'cgroup.controllers'))) return elsewhere(root) ?? new PodCgroups(root, parents, new IoMax());
    const blkio = path.join(root, 'blkio');
    if (existsSync(path.join(blkio, 'blkio.throttle.read_iops_device'))) return elsewhere(blkio) ?? new PodCgroups(blkio, parents, new BlkioThrottle());
    if (existsSync(path.join(blkio, 'cgroup.procs'))) return `the cgroup v1 blkio hierarchy at ${blkio} has no blkio.throttle files: this kernel cannot throttle block I/O (CONFIG_BLK_DEV_THROTTLING)`;
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

  /** Sets the pod's limits on one device (an absent figure lifts that limit); nothing is written where the kernel holds them already. */
  set(dir: string, device: string, limits: DeviceIoLimits): Promise<void> {
    return this.throttle.set(dir, device, limits);
  }

  /** The limits the kernel holds for the device in the pod's cgroup. */
  get(dir: string, device: string): Promise<DeviceIoLimits> {
    return this.throttle.get(dir, device);
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
