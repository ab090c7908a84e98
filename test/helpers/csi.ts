import assert from 'node:assert/strict';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { VolumeCapability } from '../../gen/csi/v1/VolumeCapability.js';
import type { Driver } from './driver.js';

type Mode = NonNullable<VolumeCapability['access_mode']>['mode'];

export function mountCap(fsType = '', mode: Mode = 'SINGLE_NODE_WRITER', flags: string[] = []): VolumeCapability {
  return { mount: { fs_type: fsType, mount_flags: flags }, access_mode: { mode } };
}

export function blockCap(mode: Mode = 'SINGLE_NODE_WRITER'): VolumeCapability {
  return { block: {}, access_mode: { mode } };
}

/** Kubelet's layout in miniature: a staging directory per volume, a target per pod. */
export async function paths(d: Driver, name: string) {
  const staging = path.join(d.mntDir, 'staging', name);
  const podDir = path.join(d.mntDir, 'pods', name);
  await mkdir(staging, { recursive: true });
  await mkdir(podDir, { recursive: true });
  return { staging, target: path.join(podDir, 'volume') };
}

export async function createVolume(d: Driver, name: string, bytes: number, cap: VolumeCapability, extra: { parameters?: Record<string, string>; source?: { snapshot?: string; volume?: string } } = {}) {
  const res = await d.client.createVolume({
    name,
    capacity_range: { required_bytes: String(bytes) },
    volume_capabilities: [cap],
    parameters: extra.parameters ?? {},
    volume_content_source: extra.source?.snapshot ? { snapshot: { snapshot_id: extra.source.snapshot } } : extra.source?.volume ? { volume: { volume_id: extra.source.volume } } : null,
  });
  if (!res.volume) throw new Error('CreateVolume returned no volume');
  return res.volume;
}

export async function stageAndPublish(d: Driver, volumeId: string, p: { staging: string; target: string }, cap: VolumeCapability, readonly = false) {
  await d.client.nodeStageVolume({ volume_id: volumeId, staging_target_path: p.staging, volume_capability: cap });
  await d.client.nodePublishVolume({ volume_id: volumeId, staging_target_path: p.staging, target_path: p.target, volume_capability: cap, readonly });
}

export async function unpublishAndUnstage(d: Driver, volumeId: string, p: { staging: string; target: string }) {
  await d.client.nodeUnpublishVolume({ volume_id: volumeId, target_path: p.target });
  await d.client.nodeUnstageVolume({ volume_id: volumeId, staging_target_path: p.staging });
}

/**
 * A clone of a staged file-pool volume: one point in time only by reflink, so on a pool that cannot
 * (ext4) the driver refuses it (FAILED_PRECONDITION, saying so); then it is made once the source is
 * detached, and the source is staged and published again for what the test does next.
 */
export async function cloneOfStaged(d: Driver, clone: () => ReturnType<typeof createVolume>, source: { id: string; p: { staging: string; target: string }; cap: VolumeCapability }) {
  return clone().catch(async (err: { code?: number; details?: string }) => {
    assert.equal(err.code, 9, `FAILED_PRECONDITION, not ${err.details}`);
    assert.match(err.details ?? '', /attached .* cannot reflink/);
    await unpublishAndUnstage(d, source.id, source.p);
    const made = await clone();
    await stageAndPublish(d, source.id, source.p, source.cap);
    return made;
  });
}
