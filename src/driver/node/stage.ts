import { mkdir, rm, writeFile } from 'node:fs/promises';
import { conflict, precondition, notFound } from '../../errors.js';
import { log } from '../../log.js';
import { extFilesystemBytes, growExtOffline, makeFilesystem, probeSignature } from '../../host/filesystem.js';
import { bindMount, mountFilesystem, readMounts, unmount } from '../../host/mounts.js';
import { blockDeviceSize } from '../../host/loop.js';
import { deviceUsers } from '../../host/in-use.js';
import { blockMarker, stateAt, type PathState } from '../../host/staging.js';
import type { VolumeRecord } from '../../records.js';
import type { Capability } from '../access.js';
import { DEFAULT_FS, isFsType, type FsType } from '../../filesystems.js';
import type { DriverContext } from '../context.js';
import { requireVolume } from '../lookups.js';
import { volumeLock } from '../../locks.js';
import { parseId } from '../../ids.js';
import { MiB } from '../../units.js';

/** The filesystem a mount volume gets: the capability's fs_type, else the StorageClass fsType, else ext4. */
export function fsTypeFor(cap: Capability, vol: VolumeRecord): FsType {
  const fromClass = vol.parameters.fsType;
  if (cap.access === 'mount' && cap.fsType) {
    if (fromClass && fromClass !== cap.fsType) throw precondition(`volume was created for ${fromClass}, the capability asks for ${cap.fsType}`);
    return cap.fsType;
  }
  return fromClass && isFsType(fromClass) ? fromClass : DEFAULT_FS;
}

function describe(state: PathState): string {
  return state.kind === 'foreign' ? `${state.mount.source} (${state.mount.fsType})` : state.kind;
}

export interface Staging {
  volumeId: string;
  /** The staging path as the CO gave it; it must lie where the CO keeps staging paths. */
  stagingPath: string;
  use: Capability;
  /** What ControllerPublishVolume returned (hypervisor mode), and the volume_context of CreateVolume. */
  publishContext: Record<string, string>;
  volumeContext: Record<string, string>;
}

/** Attaches the volume and mounts it (filesystem, made if the volume is blank) or binds its device (raw block) at the staging path. */
export async function stageVolume(ctx: DriverContext, req: Staging): Promise<void> {
  const id = parseId('vol', 'volume_id', req.volumeId);
  const staging = await ctx.paths.resolve('staging_target_path', req.stagingPath);
  const cap = req.use;
  if (!id) throw notFound(`volume ${req.volumeId} does not exist`);
  ctx.blockDevices.checkPublishContext?.(id, req.publishContext);
  return ctx.locks.with([volumeLock(id)], async () => {
    const vol = await requireVolume(ctx, 'volume_id', id, req.volumeContext);
    const fsType = cap.access === 'mount' ? fsTypeFor(cap, vol) : undefined;
    const attached = await ctx.blockDevices.devices(vol.id);
    const devices = attached.map((a) => a.device);
    const mounts = await readMounts();
    const atStaging = await stateAt(mounts, staging, devices);
    const atMarker = await stateAt(mounts, blockMarker(staging), devices);

    if (atStaging.kind === 'foreign') throw precondition(`staging_target_path is already a mount point of ${describe(atStaging)}`);
    if (cap.access === 'mount') {
      if (atMarker.kind === 'block') throw conflict(`volume ${vol.id} is staged at ${staging} as a raw block device`);
      if (atStaging.kind === 'filesystem') {
        if (atStaging.fsType !== fsType || atStaging.readOnly !== cap.readOnly) {
          throw conflict(`volume ${vol.id} is staged at ${staging} as ${atStaging.fsType}${atStaging.readOnly ? ' read-only' : ''}`);
        }
        return;
      }
    } else {
      if (atStaging.kind === 'filesystem') throw conflict(`volume ${vol.id} is staged at ${staging} with a filesystem`);
      if (atMarker.kind === 'block') return;
      if (atMarker.kind === 'foreign') throw precondition(`${blockMarker(staging)} is already a mount point of ${describe(atMarker)}`);
    }

    await mkdir(staging, { recursive: true, mode: 0o750 });
    const wasAttached = attached.some((a) => !a.readOnly);
    const device = await ctx.blockDevices.attach(vol.id, req.publishContext);
    try {
      if (cap.access === 'mount' && fsType) await stageFilesystem(device, staging, fsType, cap, await ctx.blockDevices.provablyBlank(vol.id));
      else await stageBlock(device, staging);
    } catch (err) {
      // Leave nothing behind: the next attempt starts from the same clean state.
      await rm(blockMarker(staging), { force: true }).catch(() => undefined);
      if (!wasAttached) await ctx.blockDevices.detach(vol.id, device).catch((e) => log.error('rollback detach failed', { device, err: String(e) }));
      throw err;
    }
  });
}

async function stageFilesystem(device: string, staging: string, fsType: FsType, cap: Capability & { access: 'mount' }, provablyBlank: boolean): Promise<void> {
  // A volume that never had a byte written carries no signature; anything else is asked of blkid.
  const sig = provablyBlank ? null : await probeSignature(device);
  if (!sig) {
    await makeFilesystem(device, fsType);
  } else if (sig.type !== fsType) {
    // Never format over data: a volume restored from a snapshot of another filesystem, or a disk with a partition table.
    throw precondition(`the volume holds ${sig.type ?? `a ${sig.ptType} partition table`}, not ${fsType}; refusing to format it`);
  } else if (fsType === 'ext4') {
    await growExtIfSmaller(device);
  }
  // Restores and clones of an XFS volume carry its UUID; XFS refuses a second mount of one UUID without nouuid.
  const options = [...(cap.readOnly ? ['ro'] : []), ...(fsType === 'xfs' ? ['nouuid'] : []), ...cap.mountFlags];
  await mountFilesystem(device, staging, fsType, options);
}

/** Catches up an ext4 whose device grew while online growth was not permitted. */
async function growExtIfSmaller(device: string): Promise<void> {
  const fsBytes = await extFilesystemBytes(device);
  const devBytes = await blockDeviceSize(device);
  if (fsBytes !== null && fsBytes + MiB <= devBytes) {
    log.info('growing ext4 offline before mounting', { device, fsBytes, devBytes });
    await growExtOffline(device);
  }
}

async function stageBlock(device: string, staging: string): Promise<void> {
  const marker = blockMarker(staging);
  await writeFile(marker, '', { flag: 'a', mode: 0o600 });
  await bindMount(device, marker, false);
}

/** Undoes stageVolume and detaches the volume; FAILED_PRECONDITION while anything on the node still uses its device. */
export async function unstageVolume(ctx: DriverContext, volumeId: string, stagingPath: string): Promise<void> {
  const id = parseId('vol', 'volume_id', volumeId);
  const staging = await ctx.paths.resolve('staging_target_path', stagingPath);
  if (!id) throw notFound(`volume ${volumeId} does not exist`);
  return ctx.locks.with([volumeLock(id)], async () => {
    const devices = (await ctx.blockDevices.devices(id)).map((a) => a.device);
    const mounts = await readMounts();
    const marker = blockMarker(staging);
    const atMarker = await stateAt(mounts, marker, devices);
    const atStaging = await stateAt(mounts, staging, devices);
    if (atStaging.kind === 'foreign') throw precondition(`staging_target_path is a mount point of ${describe(atStaging)}, not of volume ${id}`);
    if (atMarker.kind === 'foreign') throw precondition(`${marker} is a mount point of ${describe(atMarker)}, not of volume ${id}`);
    if (atMarker.kind === 'block') await unmount(marker);
    await rm(marker, { force: true });
    if (atStaging.kind === 'filesystem') await unmount(staging);
    if (devices.length === 0) return;
    // Detaching a device that is still used anywhere on the node (a publish left behind, another mount namespace) would pull it from under its user.
    const stillUsed = await deviceUsers(devices);
    if (stillUsed.length) throw precondition(`volume ${id} is still in use: ${stillUsed.join('; ')}; unpublish it first`);
    await ctx.blockDevices.detach(id);
  });
}
