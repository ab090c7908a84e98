import { precondition } from '../../errors.js';
import { log } from '../../log.js';
import { deviceNumber } from '../../host/devices.js';
import { isPodUid, type DeviceIoLimits, type PodCgroups } from '../../host/cgroup-io.js';
import { readMounts } from '../../host/mounts.js';
import { stateAt } from '../../host/staging.js';
import type { BlockDevices, VolumeRecord } from '../../pool/backend.js';
import { IO_LIMIT_KEYS, ioLimitsOf } from '../../pool/mutable-parameters.js';

/** The kubelet's publish paths, which carry the pod's UID (k8s-contracts.md: kubelet). */
const FS_TARGET = /\/pods\/([0-9a-f-]{36})\/volumes\/kubernetes\.io~csi\/[^/]+\/mount$/;
const BLOCK_TARGET = /\/volumeDevices\/publish\/[^/]+\/([0-9a-f-]{36})$/;

/** The pod a kubelet publish path is for, or null for a path the kubelet did not make. */
export function podOfTarget(target: string): string | null {
  const uid = FS_TARGET.exec(target)?.[1] ?? BLOCK_TARGET.exec(target)?.[1];
  return uid && isPodUid(uid) ? uid : null;
}

export interface Consumer {
  pod: string;
  /** The device the pod reads and writes: the staged one, or its own read-only view for a read-only raw block publish. */
  device: string;
  target: string;
}

/** The kernel's four figures from a volume's recorded limits (bursts are QEMU's, not the kernel's). */
export function kernelLimits(volume: VolumeRecord): DeviceIoLimits {
  const all = ioLimitsOf(volume.parameters);
  return Object.fromEntries(IO_LIMIT_KEYS.filter((k) => all[k] !== undefined).map((k) => [k, all[k]]));
}

const limited = (l: DeviceIoLimits) => Object.keys(l).length > 0;

/**
 * A node-local pool's I/O limits, held by the kernel for each pod that uses the volume: the limits
 * are set in the pod's cgroup on the device the pod was given. Who uses a volume is read from the
 * kernel's mount table (the kubelet's publish paths carry the pod's UID), never remembered, so a
 * restarted plugin applies them again from what it finds. The caller holds the volume's lock.
 */
export class PodIoLimits {
  constructor(
    private readonly cgroups: PodCgroups | null,
    private readonly blockDevices: BlockDevices,
  ) {}

  /** The pods using the volume on this node, from the mount table. */
  async consumers(volumeId: string): Promise<Consumer[]> {
    const devices = (await this.blockDevices.devices(volumeId)).map((a) => a.device);
    if (!devices.length) return [];
    const mounts = await readMounts();
    const out: Consumer[] = [];
    for (const m of mounts) {
      const pod = podOfTarget(m.mountPoint);
      if (!pod || out.some((c) => c.target === m.mountPoint)) continue;
      const state = await stateAt(mounts, m.mountPoint, devices);
      if (state.kind === 'filesystem' || state.kind === 'block') out.push({ pod, device: state.device, target: m.mountPoint });
    }
    return out;
  }

  /**
   * Sets the volume's recorded limits for every pod using it here (no figure lifts a limit). A pod
   * whose cgroup is gone is ending: skipped. Every pod is tried; the failures are reported together.
   */
  async apply(volume: VolumeRecord): Promise<void> {
    const limits = kernelLimits(volume);
    const consumers = await this.consumers(volume.id);
    if (!consumers.length) return;
    const failed: string[] = [];
    for (const c of consumers) {
      try {
        const cgroups = this.need(volume, limits);
        if (!cgroups) return;
        const dir = cgroups.podCgroup(c.pod);
        if (!dir) {
          log.warn('a pod using the volume has no cgroup (ending?): its limits are not set', { volume: volume.id, pod: c.pod });
          continue;
        }
        await cgroups.set(dir, await this.number(c.device), limits);
      } catch (err) {
        failed.push(`pod ${c.pod}: ${(err as Error).message}`);
      }
    }
    if (failed.length) throw precondition(`volume ${volume.id}'s I/O limits are recorded, but not set for ${failed.join('; ')}`);
    log.info('volume I/O limits set', { volume: volume.id, pods: consumers.map((c) => c.pod), limits });
  }

  /** After a publish: the new pod gets the volume's limits (the kubelet made its cgroup before mounting its volumes). */
  async published(volume: VolumeRecord, target: string, device: string, podFromContext: string | undefined): Promise<void> {
    const limits = kernelLimits(volume);
    if (!limited(limits)) return;
    const cgroups = this.need(volume, limits);
    if (!cgroups) return;
    const pod = podFromContext && isPodUid(podFromContext) ? podFromContext : podOfTarget(target);
    if (!pod) {
      log.warn('published to a path that names no pod, and no pod UID in the volume context (CSIDriver podInfoOnMount): its I/O limits are not set', { volume: volume.id, target });
      return;
    }
    const dir = cgroups.podCgroup(pod);
    if (!dir) throw precondition(`volume ${volume.id} has I/O limits, and pod ${pod} has no cgroup under ${cgroups.candidates(pod)[0].replace(/\/[^/]+$/, '')} or the other kubepods cgroups looked at (--kubepods-cgroup)`);
    try {
      await cgroups.set(dir, await this.number(device), limits);
    } catch (err) {
      throw precondition(`volume ${volume.id}'s I/O limits could not be set for pod ${pod}: ${(err as Error).message}`);
    }
  }

  /** Before the pod's mount goes: its limit on the device is lifted (the device may be given to another pod next). */
  async unpublished(target: string, device: string): Promise<void> {
    const pod = podOfTarget(target);
    const dir = pod && this.cgroups?.podCgroup(pod);
    if (!dir || !this.cgroups) return;
    await this.cgroups.clear(dir, await this.number(device)).catch((err) => log.warn('lifting a pod\'s I/O limits failed', { pod, device, err: String(err) }));
  }

  private need(volume: VolumeRecord, limits: DeviceIoLimits): PodCgroups | null {
    if (this.cgroups) return this.cgroups;
    if (limited(limits)) throw precondition(`volume ${volume.id} has I/O limits, and this node's cgroup filesystem (--cgroup-root) has no block I/O control (cgroup v2 io or v1 blkio)`);
    return null;
  }

  private async number(device: string): Promise<string> {
    const n = await deviceNumber(device);
    if (!n) throw new Error(`${device} is not a block device`);
    return n;
  }
}
