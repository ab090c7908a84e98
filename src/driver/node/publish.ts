import { lstat, mkdir, rm, rmdir, writeFile } from 'node:fs/promises';
import { conflict, errno, precondition, notFound } from '../../errors.js';
import { log } from '../../log.js';
import { bindMount, readMounts, unmount } from '../../host/mounts.js';
import { blockMarker, stateAt } from '../../host/staging.js';
import type { Capability } from '../access.js';
import type { DriverContext } from '../context.js';
import { volumeLock } from '../../locks.js';
import { parseId } from '../../ids.js';
import { requireVolume } from '../lookups.js';

/** What the kubelet adds to the volume context with the CSIDriver's podInfoOnMount. */
export const POD_UID_KEY = 'csi.storage.k8s.io/pod.uid';

export interface Publication {
  volumeId: string;
  /** The pod's path as the CO gave it: a directory to bind the filesystem on, or a file to bind the device on. */
  targetPath: string;
  stagingPath: string;
  use: Capability;
  readOnly: boolean;
  publishContext: Record<string, string>;
  volumeContext: Record<string, string>;
}

/** Binds the staged filesystem, or the volume's device, at the pod's target path. */
export async function publishVolume(ctx: DriverContext, req: Publication): Promise<void> {
  const known = parseId('vol', 'volume_id', req.volumeId);
  const target = await ctx.paths.resolve('target_path', req.targetPath);
  const cap = req.use;
  if (!req.stagingPath) throw precondition('staging_target_path is required: this driver stages volumes (STAGE_UNSTAGE_VOLUME)');
  const staging = await ctx.paths.resolve('staging_target_path', req.stagingPath);
  if (!known) throw notFound(`volume ${req.volumeId} does not exist`);
  const id = known;
  ctx.blockDevices.checkPublishContext?.(id, req.publishContext);
  const readOnly = req.readOnly || cap.readOnly;
  return ctx.locks.with([volumeLock(id)], async () => {
    // A staged volume exists; only an unstaged one is looked up, to tell NOT_FOUND from "stage it first".
    const attached = await ctx.blockDevices.devices(id);
    const vol = attached.length ? { id } : await requireVolume(ctx, 'volume_id', id, req.volumeContext);
    const devices = attached.map((a) => a.device);
    const mounts = await readMounts();
    const atTarget = await stateAt(mounts, target, devices);
    if (atTarget.kind === 'foreign') throw precondition(`target_path is already a mount point of ${atTarget.mount.source}`);

    if (cap.access === 'mount') {
      const staged = await stateAt(mounts, staging, devices);
      if (staged.kind !== 'filesystem') throw precondition(`volume ${vol.id} is not staged with a filesystem at ${staging}; call NodeStageVolume first`);
      if (cap.fsType && staged.fsType !== cap.fsType) throw conflict(`volume ${vol.id} is staged as ${staged.fsType}, not ${cap.fsType}`);
      if (atTarget.kind === 'filesystem') {
        if (atTarget.readOnly !== readOnly) throw conflict(`volume ${vol.id} is published at ${target} ${atTarget.readOnly ? 'read-only' : 'read-write'}`);
        return limitPod(ctx, id, req, target, atTarget.device);
      }
      if (atTarget.kind === 'block') throw conflict(`volume ${vol.id} is published at ${target} as a raw block device`);
      await mkdir(target, { recursive: true, mode: 0o750 });
      try {
        await bindMount(staging, target, readOnly);
      } catch (err) {
        await rmdir(target).catch(() => undefined);
        throw err;
      }
      // A pod that cannot be held to its limits gets no mount: nothing is left for the kubelet to clean.
      return limitPod(ctx, id, req, target, staged.device).catch(async (err) => {
        await unmount(target).then(() => rmdir(target)).catch((e) => log.error('undoing a publish failed', { target, err: String(e) }));
        throw err;
      });
    }

    const staged = await stateAt(mounts, blockMarker(staging), devices);
    if (staged.kind !== 'block') throw precondition(`volume ${vol.id} is not staged as a raw block device at ${staging}; call NodeStageVolume first`);
    if (atTarget.kind === 'block') {
      if (atTarget.readOnly !== readOnly) throw conflict(`volume ${vol.id} is published at ${target} ${atTarget.readOnly ? 'read-only' : 'read-write'}`);
      return limitPod(ctx, id, req, target, atTarget.device);
    }
    if (atTarget.kind === 'filesystem') throw conflict(`volume ${vol.id} is published at ${target} with a filesystem`);
    // A read-only mount does not stop writes through a device node, so a read-only publish gets its own read-only device.
    const device = readOnly ? await ctx.blockDevices.attachReadOnly(vol.id) : staged.device;
    const existed = await lstat(target).then(() => true, () => false);
    try {
      await writeFile(target, '', { flag: 'a', mode: 0o600 });
      await bindMount(device, target, readOnly);
    } catch (err) {
      if (!existed) await rm(target, { force: true });
      if (readOnly) await ctx.blockDevices.detach(vol.id, device).catch((e) => log.error('rollback detach failed', { device, err: String(e) }));
      throw err;
    }
    return limitPod(ctx, id, req, target, device).catch(async (err) => {
      await unmount(target)
        .then(() => (existed ? undefined : rm(target, { force: true })))
        .then(() => (readOnly ? ctx.blockDevices.detach(vol.id, device) : undefined))
        .catch((e) => log.error('undoing a publish failed', { target, err: String(e) }));
      throw err;
    });
  });
}

/**
 * The pod gets the volume's I/O limits once its mount is in place (a repeat of the call sets them
 * again). Failing to set them fails the publish: the kubelet retries, and the pod does not start
 * without the limits its class asks for.
 */
async function limitPod(ctx: DriverContext, id: string, req: Publication, target: string, device: string): Promise<void> {
  if (!ctx.podIoLimits) return;
  const vol = await ctx.volumeView.get(id, req.volumeContext);
  if (vol) await ctx.podIoLimits.published(vol, target, device, req.volumeContext[POD_UID_KEY]);
}

/** Undoes publishVolume and removes what it created at the target path; leaves alone anything it did not create. */
export async function unpublishVolume(ctx: DriverContext, volumeId: string, targetPath: string): Promise<void> {
  const id = parseId('vol', 'volume_id', volumeId);
  const target = await ctx.paths.resolve('target_path', targetPath);
  if (!id) throw notFound(`volume ${volumeId} does not exist`);
  return ctx.locks.with([volumeLock(id)], async () => {
    const attached = await ctx.blockDevices.devices(id);
    const devices = attached.map((a) => a.device);
    const staged = attached.find((a) => !a.readOnly)?.device;
    const state = await stateAt(await readMounts(), target, devices);
    if (state.kind === 'foreign') throw precondition(`target_path is a mount point of ${state.mount.source}, not of volume ${id}`);
    if (state.kind === 'filesystem' || state.kind === 'block') await ctx.podIoLimits?.unpublished(target, state.device);
    if (state.kind !== 'empty') await unmount(target);
    if (state.kind === 'block' && state.device !== staged) await ctx.blockDevices.detach(id, state.device);
    // Remove what NodePublishVolume created: an empty directory or the device file.
    const st = await lstat(target).catch((err) => {
      if (errno(err) === 'ENOENT') return null;
      throw err;
    });
    if (st?.isDirectory()) await rmdir(target);
    else if (st?.isFile() && st.size === 0) await rm(target);
    else if (st) throw precondition(`target_path ${target} is not what NodePublishVolume created; leaving it alone`);
  });
}
