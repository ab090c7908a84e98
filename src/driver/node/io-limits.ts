import { invalid, precondition } from '../../errors.js';
import { log } from '../../log.js';
import { deviceNumber } from '../../host/devices.js';
import { isPodUid, type DeviceIoLimits, type PodCgroups } from '../../host/cgroup-io.js';
import { readMounts, type MountEntry } from '../../host/mounts.js';
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
export function kernelLimits(volume: Pick<VolumeRecord, 'parameters'>): DeviceIoLimits {
  const all = ioLimitsOf(volume.parameters);
  return Object.fromEntries(IO_LIMIT_KEYS.filter((k) => all[k] !== undefined).map((k) => [k, all[k]]));
}

const limited = (l: DeviceIoLimits) => Object.keys(l).length > 0;

/** One look at the node for many volumes: the mount table, and each volume's attached devices. */
export interface NodeTable {
  mounts: MountEntry[];
  devices: Map<string, string[]>;
}

/**
 * A node-local pool's I/O limits, held by the kernel for each pod that uses the volume: the limits
 * are set in the pod's cgroup (cgroup v2 io.max, which holds the pod's containers; on v1 in its cgroup and
 * every cgroup under it, watched for containers made later) on the device the
 * pod was given. Who uses a volume is read from the kernel's mount table (the kubelet's publish paths
 * carry the pod's UID), never remembered, so a restarted plugin applies them again from what it
 * finds. The caller holds the volume's lock.
 */
export class PodIoLimits {
  constructor(
    /** The pod cgroups, or why this node cannot limit a pod's I/O. */
    private readonly cgroups: PodCgroups | string,
    private readonly blockDevices: BlockDevices,
  ) {}

  /** Why volumes with I/O limits cannot be held here (no cgroup filesystem, no kubepods cgroups there), or null: made or changed to have limits, they are refused. */
  refusal(): string | null {
    return typeof this.cgroups === 'string' ? this.cgroups : null;
  }

  /** INVALID_ARGUMENT (the spec's "the volume cannot support the parameters") when the record would hold limits this node cannot. */
  check(parameters: Record<string, string>): void {
    const why = this.refusal();
    if (why && limited(kernelLimits({ parameters }))) throw invalid(`this node cannot hold a volume to I/O limits: ${why}`);
  }

  /** The mount table and the volumes' devices, read once. */
  async table(volumeIds: readonly string[]): Promise<NodeTable> {
    const attached = this.blockDevices.devicesOfMany ? await this.blockDevices.devicesOfMany(volumeIds) : new Map(await Promise.all(volumeIds.map(async (id) => [id, await this.blockDevices.devices(id)] as const)));
    const devices = new Map([...attached].map(([id, a]) => [id, a.map((x) => x.device)]));
    return { mounts: await readMounts(), devices };
  }

  /**
   * The pods using the volume on this node, from the mount table: a filesystem publish by the device
   * number the kernel writes for the mount, a raw block publish (a bind of a device node, so a devtmpfs
   * mount) by the device node at its path. Only devtmpfs mounts are looked at: another driver's hung NFS
   * or FUSE mount under the kubelet's pods cannot hang the lookup.
   */
  async consumers(volumeId: string, table?: NodeTable): Promise<Consumer[]> {
    const t = table ?? (await this.table([volumeId]));
    const byNumber = new Map<string, string>();
    for (const device of t.devices.get(volumeId) ?? []) {
      const n = await deviceNumber(device);
      if (n) byNumber.set(n, device);
    }
    if (!byNumber.size) return [];
    const out: Consumer[] = [];
    for (const m of t.mounts) {
      const pod = podOfTarget(m.mountPoint);
      if (!pod || out.some((c) => c.target === m.mountPoint)) continue;
      const number = FS_TARGET.test(m.mountPoint) ? m.majorMinor : m.fsType === 'devtmpfs' ? await deviceNumber(m.mountPoint) : null;
      const device = number ? byNumber.get(number) : undefined;
      if (device) out.push({ pod, device, target: m.mountPoint });
    }
    return out;
  }

  /**
   * Sets the volume's recorded limits for every pod using it here, lifting what it no longer has (no
   * write where the kernel holds them already). A pod whose cgroup is gone is ending: skipped. Every
   * pod is tried; the failures are reported together.
   */
  async apply(volume: VolumeRecord, table?: NodeTable): Promise<void> {
    const limits = kernelLimits(volume);
    if (typeof this.cgroups === 'string') {
      if (limited(limits) && (await this.consumers(volume.id, table)).length) throw precondition(`volume ${volume.id}'s I/O limits are recorded, but cannot be set: ${this.cgroups}`);
      return;
    }
    const consumers = await this.consumers(volume.id, table);
    const failed: string[] = [];
    for (const c of consumers) {
      try {
        const dir = this.cgroups.podCgroup(c.pod);
        if (!dir) {
          log.warn('a pod using the volume has no cgroup (ending?): its limits are not set', { volume: volume.id, pod: c.pod });
          continue;
        }
        await this.cgroups.set(dir, await this.number(c.device), limits);
      } catch (err) {
        failed.push(`pod ${c.pod}: ${(err as Error).message}`);
      }
    }
    if (failed.length) throw precondition(`volume ${volume.id}'s I/O limits are recorded, but not set for ${failed.join('; ')}`);
    if (consumers.length) log.info('volume I/O limits set', { volume: volume.id, pods: consumers.map((c) => c.pod), limits });
  }

  /**
   * At start: every volume in use here gets what its record says (set, or lifted). One look at the node
   * picks the volumes attached here; each is then set under its lock from a fresh look (a publish, an
   * unpublish or a modify may have come in since). Returns the volumes that failed, each logged.
   */
  async applyAll(volumeIds: readonly string[], withVolume: (id: string, fn: (now: VolumeRecord) => Promise<void>) => Promise<void>): Promise<string[]> {
    const table = await this.table(volumeIds);
    const failed: string[] = [];
    for (const id of volumeIds) {
      if (!(table.devices.get(id) ?? []).length) continue;
      await withVolume(id, (now) => this.apply(now)).catch((err) => {
        failed.push(id);
        log.warn('setting a volume\'s I/O limits again at start failed', { volume: id, error: String(err) });
      });
    }
    return failed;
  }

  /** After a publish: the new pod gets the volume's limits (the kubelet made its cgroup before mounting its volumes). */
  async published(volume: VolumeRecord, target: string, device: string, podFromContext: string | undefined): Promise<void> {
    const limits = kernelLimits(volume);
    if (!limited(limits)) return;
    if (typeof this.cgroups === 'string') throw precondition(`volume ${volume.id} has I/O limits, and ${this.cgroups}`);
    const pod = podOf(target, podFromContext);
    if (!pod) throw precondition(`volume ${volume.id} has I/O limits, and neither the target path (not the kubelet's) nor the volume context (the CSIDriver's podInfoOnMount) names the pod to hold to them`);
    const dir = this.cgroups.podCgroup(pod);
    if (!dir) throw precondition(`volume ${volume.id} has I/O limits, and pod ${pod} has no cgroup under ${this.cgroups.candidates(pod)[0].replace(/\/[^/]+$/, '')} or the other kubepods cgroups looked at (--kubepods-cgroup)`);
    try {
      await this.cgroups.set(dir, await this.number(device), limits);
    } catch (err) {
      throw precondition(`volume ${volume.id}'s I/O limits could not be set for pod ${pod}: ${(err as Error).message}`);
    }
  }

  /** Before the pod's mount goes: its limits on the device are lifted (the device may be given to another pod next). Never fails the unpublish. */
  async unpublished(target: string, device: string): Promise<void> {
    try {
      const pod = podOfTarget(target);
      if (!pod || typeof this.cgroups === 'string') return;
      const dir = this.cgroups.podCgroup(pod);
      if (dir) await this.cgroups.clear(dir, await this.number(device));
    } catch (err) {
      log.warn('lifting a pod\'s I/O limits failed', { target, device, err: String(err) });
    }
  }

  private async number(device: string): Promise<string> {
    const n = await deviceNumber(device);
    if (!n) throw new Error(`${device} is not a block device`);
    return n;
  }
}

/**
 * The pod a publish is for: the kubelet's path names it; the volume context's (podInfoOnMount) is taken
 * only where the path names none, and refused where the two disagree (a pod's limits on another pod).
 */
function podOf(target: string, fromContext: string | undefined): string | null {
  const fromPath = podOfTarget(target);
  const ctx = fromContext && isPodUid(fromContext) ? fromContext : undefined;
  if (fromPath && ctx && fromPath !== ctx) throw precondition(`the volume context names pod ${ctx}, and the target path pod ${fromPath}`);
  return fromPath ?? ctx ?? null;
}
