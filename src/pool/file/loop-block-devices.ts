import { access, stat } from 'node:fs/promises';
import { notFound } from '../../errors.js';
import type { AttachedDevice, BlockDevices } from '../backend.js';
import { attachLoop, detachLoop, fileIdOf, listLoopDevices, loopsBackedBy, refreshLoopSize, sameFile } from '../../host/loop.js';
import type { FilePool } from './file-pool.js';

/**
 * Attaches file-pool volumes as loop devices; the kernel's loop list is the only record of it, and a
 * volume's devices are found by its image's inode, whatever path attached them.
 */
export class LoopBlockDevices implements BlockDevices {
  constructor(private readonly pool: FilePool) {}

  async devices(volumeId: string): Promise<AttachedDevice[]> {
    return (await loopsBackedBy(this.pool.volumeImage(volumeId))).map((l) => ({ device: l.device, readOnly: l.readOnly }));
  }

  /** One listing of the loop devices for all of them: each volume's look would list them again. */
  async devicesOfMany(volumeIds: readonly string[]): Promise<Map<string, AttachedDevice[]>> {
    const loops = await listLoopDevices();
    const out = new Map<string, AttachedDevice[]>();
    for (const id of volumeIds) {
      const file = loops.length ? await fileIdOf(this.pool.volumeImage(id)) : null;
      out.set(id, file ? loops.filter((l) => sameFile(l.backing, file)).map((l) => ({ device: l.device, readOnly: l.readOnly })) : []);
    }
    return out;
  }

  async attach(volumeId: string): Promise<string> {
    const writable = (await this.devices(volumeId)).find((d) => !d.readOnly);
    return writable?.device ?? attachLoop(await this.image(volumeId));
  }

  async attachReadOnly(volumeId: string): Promise<string> {
    return attachLoop(await this.image(volumeId), true);
  }

  async detach(volumeId: string, device?: string): Promise<void> {
    for (const loop of await loopsBackedBy(this.pool.volumeImage(volumeId))) {
      if (!device || loop.device === device) await detachLoop(loop.device);
    }
  }

  /** A sparse image with no allocated block reads as zeros throughout. */
  async provablyBlank(volumeId: string): Promise<boolean> {
    const st = await stat(this.pool.volumeImage(volumeId)).catch(() => null);
    return st !== null && st.blocks === 0;
  }

  async refreshSize(device: string): Promise<void> {
    await refreshLoopSize(device);
  }

  async deviceProblem(volumeId: string, device: string): Promise<string | null> {
    const loops = await loopsBackedBy(this.pool.volumeImage(volumeId));
    const loop = loops.find((l) => l.device === device);
    if (!loop) return `${device} is no longer attached to the volume's backing file`;
    if (loop.deleted) return `the backing file of ${device} was deleted while attached`;
    return null;
  }

  private async image(volumeId: string): Promise<string> {
    const image = this.pool.volumeImage(volumeId);
    try {
      await access(image);
    } catch {
      throw notFound(`volume ${volumeId} has no backing file`);
    }
    return image;
  }
}
