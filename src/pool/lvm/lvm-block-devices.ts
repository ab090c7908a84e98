import { realpath, stat } from 'node:fs/promises';
import { notFound } from '../../errors.js';
import type { AttachedDevice, BlockDevices } from '../backend.js';
import { attachLoop, detachLoop, loopsBackedBy, refreshLoopSize } from '../../host/loop.js';
import type { LvmCli } from './lvm-cli.js';

/**
 * Node side of the LVM pool: an LV is attached by activating it (its device node appears at
 * /dev/<vg>/<lv>) and detached by deactivating it. Read-only raw block publishes get a read-only
 * loop device over the LV, since a read-only bind mount does not stop writes through a device node.
 */
export class LvmBlockDevices implements BlockDevices {
  constructor(
    private readonly lvm: LvmCli,
    private readonly vg: string,
  ) {}

  private node(volumeId: string): string {
    return `/dev/${this.vg}/${volumeId}`;
  }

  /** The active LV's real device (/dev/dm-N), or null when inactive; a stat, no lvs call. */
  private async activeDevice(volumeId: string): Promise<string | null> {
    const st = await stat(this.node(volumeId)).catch(() => null);
    return st?.isBlockDevice() ? realpath(this.node(volumeId)) : null;
  }

  async devices(volumeId: string): Promise<AttachedDevice[]> {
    const dm = await this.activeDevice(volumeId);
    if (!dm) return [];
    const views = await loopsBackedBy(dm);
    return [{ device: this.node(volumeId), readOnly: false }, ...views.map((l) => ({ device: l.device, readOnly: true }))];
  }

  async attach(volumeId: string): Promise<string> {
    if (await this.activeDevice(volumeId)) return this.node(volumeId);
    try {
      await this.lvm.exec('lvchange', ['-y', '-ay', '-K', `${this.vg}/${volumeId}`]);
    } catch (err) {
      if (!(await this.lvm.lv(this.vg, volumeId))) throw notFound(`volume ${volumeId} has no LV in ${this.vg}`);
      throw err;
    }
    return this.node(volumeId);
  }

  async attachReadOnly(volumeId: string): Promise<string> {
    const dm = (await this.activeDevice(volumeId)) ?? (await realpath(await this.attach(volumeId)));
    return attachLoop(dm, true);
  }

  async detach(volumeId: string, device?: string): Promise<void> {
    const dm = await this.activeDevice(volumeId);
    if (!dm) return;
    for (const loop of await loopsBackedBy(dm)) if (!device || loop.device === device) await detachLoop(loop.device);
    if (!device || device === this.node(volumeId)) await this.lvm.exec('lvchange', ['-y', '-an', `${this.vg}/${volumeId}`]);
  }

  /** Always asks blkid: one blkid costs less than the lvs it would take to prove an LV blank. */
  async provablyBlank(): Promise<boolean> {
    return false;
  }

  async refreshSize(device: string): Promise<void> {
    // Device-mapper devices take their new size with lvextend; only loop views need telling.
    if (device.startsWith('/dev/loop')) await refreshLoopSize(device);
  }

  async deviceProblem(volumeId: string, device: string): Promise<string | null> {
    if (!(await this.activeDevice(volumeId))) return `LV ${this.vg}/${volumeId} is not active`;
    if (device.startsWith('/dev/loop') && !(await loopsBackedBy(await realpath(this.node(volumeId)))).some((l) => l.device === device)) {
      return `${device} no longer reads the LV`;
    }
    return null;
  }
}
