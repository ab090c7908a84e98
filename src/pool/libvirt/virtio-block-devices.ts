import { readdir, readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import { invalid, notFound, precondition } from '../../errors.js';
import { attachLoop, blockDeviceSize, detachLoop, loopsBackedBy, refreshLoopSize } from '../../host/loop.js';
import type { AttachedDevice, BlockDevices, NodeVolumeView, VolumeRecord } from '../backend.js';
import { SERIAL_RE, serialFor } from './names.js';

export interface VirtioBlockDevicesOptions {
  /** How long NodeStageVolume waits for a hot-plugged disk to appear. */
  waitMs: number;
  byIdDir?: string;
  sysBlockDir?: string;
}

/**
 * Node side of hypervisor mode: the controller hot-plugged the volume as a virtio disk with a
 * known serial; "attaching" is finding it. /dev/disk/by-id/virtio-<serial> where udev runs, else
 * /sys/block/<dev>/serial, which the kernel always has. The disk itself is the controller's to
 * detach; here only the read-only loop views made for read-only raw block publishes come and go.
 */
export class VirtioBlockDevices implements BlockDevices {
  private readonly byId: string;
  private readonly sysBlock: string;

  constructor(private readonly opts: VirtioBlockDevicesOptions) {
    this.byId = opts.byIdDir ?? '/dev/disk/by-id';
    this.sysBlock = opts.sysBlockDir ?? '/sys/block';
  }

  /** The disk with this serial, or null; a stat and, without udev, a walk over /sys/block. */
  async find(serial: string): Promise<string | null> {
    const link = path.join(this.byId, `virtio-${serial}`);
    const st = await stat(link).catch(() => null);
    if (st?.isBlockDevice()) return realpath(link);
    for (const dev of await readdir(this.sysBlock).catch(() => [] as string[])) {
      if (!dev.startsWith('vd')) continue;
      const s = await readFile(path.join(this.sysBlock, dev, 'serial'), 'utf8').catch(() => '');
      if (s.trim() === serial) return `/dev/${dev}`;
    }
    return null;
  }

  checkPublishContext(volumeId: string, publishContext: Record<string, string>): void {
    this.serial(volumeId, publishContext);
  }

  private serial(volumeId: string, publishContext?: Record<string, string>): string {
    const expected = serialFor(volumeId);
    const given = publishContext?.serial;
    if (given !== undefined && (!SERIAL_RE.test(given) || given !== expected)) {
      throw invalid(`publish_context.serial ${JSON.stringify(given)} is not the serial of volume ${volumeId}`);
    }
    return expected;
  }

  async devices(volumeId: string): Promise<AttachedDevice[]> {
    const disk = await this.find(serialFor(volumeId));
    if (!disk) return [];
    const views = await loopsBackedBy(disk);
    return [{ device: disk, readOnly: false }, ...views.map((l) => ({ device: l.device, readOnly: true }))];
  }

  async attach(volumeId: string, publishContext?: Record<string, string>): Promise<string> {
    const serial = this.serial(volumeId, publishContext);
    const deadline = Date.now() + this.opts.waitMs;
    for (;;) {
      const disk = await this.find(serial);
      if (disk) return disk;
      if (Date.now() >= deadline) {
        throw notFound(`no disk with serial ${serial} appeared within ${this.opts.waitMs / 1000} s; is volume ${volumeId} ControllerPublished to this node?`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async attachReadOnly(volumeId: string): Promise<string> {
    return attachLoop(await this.attach(volumeId), true);
  }

  async detach(volumeId: string, device?: string): Promise<void> {
    const disk = await this.find(serialFor(volumeId));
    if (!disk) return;
    for (const loop of await loopsBackedBy(disk)) if (!device || loop.device === device) await detachLoop(loop.device);
  }

  /** Always asks blkid: a hot-plugged disk may hold anything. */
  async provablyBlank(): Promise<boolean> {
    return false;
  }

  async refreshSize(device: string): Promise<void> {
    // virtio-blk learns a new capacity from QEMU's config interrupt; only loop views need telling.
    if (device.startsWith('/dev/loop')) await refreshLoopSize(device);
  }

  async deviceProblem(volumeId: string, device: string): Promise<string | null> {
    const disk = await this.find(serialFor(volumeId));
    if (!disk) return `the disk with serial ${serialFor(volumeId)} is no longer attached`;
    if (device.startsWith('/dev/loop') && !(await loopsBackedBy(disk)).some((l) => l.device === device)) return `${device} no longer reads ${disk}`;
    return null;
  }
}

/**
 * What a node in hypervisor mode knows of a volume: the CO's volume_context (fsType) and the disk
 * it was given. It cannot reach the pool, so "exists" is answered by the disk appearing (attach).
 */
export class HypervisorVolumeView implements NodeVolumeView {
  constructor(private readonly waitMs = 10_000) {}

  async get(id: string, volumeContext: Record<string, string>): Promise<VolumeRecord> {
    const fsType = volumeContext.fsType;
    return { id, name: id, capacityBytes: 0, createdAt: 0, parameters: fsType === 'ext4' || fsType === 'xfs' ? { fsType } : {} };
  }

  /** The controller grew the disk (ControllerExpandVolume); wait, bounded, for the guest to see the size. */
  async expand(volume: VolumeRecord, bytes: number, device: string | undefined): Promise<number> {
    if (!device) throw precondition(`volume ${volume.id} has no disk on this node`);
    const deadline = Date.now() + this.waitMs;
    for (;;) {
      const size = await blockDeviceSize(device);
      if (size >= bytes) return size;
      if (Date.now() >= deadline) throw precondition(`the disk of volume ${volume.id} is ${size} bytes, not ${bytes}: ControllerExpandVolume has not grown it (yet)`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
