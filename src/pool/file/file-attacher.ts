import { access } from 'node:fs/promises';
import type { Attacher } from '../backend.js';
import { SourceMissingError } from '../errors.js';
import { attachLoop, detachLoop, findLoopDevices, refreshLoopSize } from '../../node/loop.js';
import type { FilePool } from './file-pool.js';

/** Attaches file-pool volumes as loop devices; the kernel's loop list is the only record of it. */
export class FileAttacher implements Attacher {
  constructor(private readonly pool: FilePool) {}

  async findDevice(volumeId: string): Promise<string | null> {
    const loops = await findLoopDevices(this.pool.volumeImage(volumeId));
    return loops.find((l) => !l.readOnly)?.device ?? null;
  }

  async findAllDevices(volumeId: string): Promise<string[]> {
    return (await findLoopDevices(this.pool.volumeImage(volumeId))).map((l) => l.device);
  }

  async attach(volumeId: string): Promise<string> {
    return (await this.findDevice(volumeId)) ?? attachLoop(await this.image(volumeId));
  }

  async attachReadOnly(volumeId: string): Promise<string> {
    return attachLoop(await this.image(volumeId), true);
  }

  async detach(volumeId: string, device?: string): Promise<void> {
    for (const loop of await findLoopDevices(this.pool.volumeImage(volumeId))) {
      if (!device || loop.device === device) await detachLoop(loop.device);
    }
  }

  async refreshSize(device: string): Promise<void> {
    await refreshLoopSize(device);
  }

  async deviceProblem(volumeId: string, device: string): Promise<string | null> {
    const loops = await findLoopDevices(this.pool.volumeImage(volumeId));
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
      throw new SourceMissingError(`volume ${volumeId} has no backing file`);
    }
    return image;
  }
}
