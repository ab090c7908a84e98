import type { NodeVolumeView, PoolBackend, VolumeRecord } from './backend.js';

/** Node side of a node-local pool: the pool is right here, so the node asks it. */
export class LocalVolumeView implements NodeVolumeView {
  constructor(private readonly backend: PoolBackend) {}

  get(id: string): Promise<VolumeRecord | null> {
    return this.backend.getVolume(id);
  }

  async expand(volume: VolumeRecord, bytes: number): Promise<number> {
    return (await this.backend.expandVolume(volume.id, bytes)).capacityBytes;
  }
}
