import { conflict, exhausted, internal, invalid, notFound, outOfRange, precondition } from '../../errors.js';
import { isNodeId, parseId } from '../../ids.js';
import { nodeLock, volumeLock } from '../../locks.js';
import type { ControllerAttacher } from '../../pool/backend.js';
import type { Capability } from '../access.js';
import type { ControllerContext } from '../context.js';
import { requirePoolVolume } from '../lookups.js';
import { chooseSize, fitsRange, type Range } from '../sizing.js';
import { formatBytes } from '../../units.js';

function attacherOf(ctx: ControllerContext): ControllerAttacher {
  // Reached only when PUBLISH_UNPUBLISH_VOLUME is advertised, which it is exactly when there is a controller attacher (pool-state.ts).
  if (!ctx.controllerAttacher) throw internal('ControllerPublish/Unpublish reached without a controller attacher');
  return ctx.controllerAttacher;
}

function validateNodeId(nodeId: string): string {
  if (!nodeId) throw invalid('node_id is required');
  if (!isNodeId(nodeId)) throw invalid(`node_id ${JSON.stringify(nodeId)} is neither a domain UUID nor a plain domain name`);
  return nodeId;
}

/**
 * The one name a node is locked and attached by, whichever name the call used (a domain's name or
 * its UUID in any case): so an attach by name and a detach by UUID of one domain queue on one key.
 */
function nodeKey(attacher: ControllerAttacher, nodeId: string): Promise<string | null> {
  return attacher.resolveNode(nodeId);
}

export interface Publication {
  volumeId: string;
  nodeId: string;
  use: Capability;
  readOnly: boolean;
}

/** Attaches the volume to the node (once), and returns what the node needs to find it. */
export async function publishVolume(ctx: ControllerContext, req: Publication): Promise<Record<string, string>> {
  const attacher = attacherOf(ctx);
  const id = parseId('vol', 'volume_id', req.volumeId);
  const nodeId = validateNodeId(req.nodeId);
  if (!id) throw notFound(`volume ${req.volumeId} does not exist`);
  const { use } = req;
  const readOnly = req.readOnly || use.readOnly;
  const shared = use.mode === 'MULTI_NODE_MULTI_WRITER';
  const node = await nodeKey(attacher, nodeId);
  if (!node) throw notFound(`node ${nodeId} does not exist`);
  return ctx.locks.with([volumeLock(id), nodeLock(node)], () =>
    attacher.publish(id, node, { readOnly, shared }, ({ attachments, nodeVolumes }) => {
      const here = attachments.find((a) => a.nodeId === node);
      if (here) {
        if (here.readOnly !== readOnly) throw conflict(`volume ${id} is already published to ${nodeId} ${here.readOnly ? 'read-only' : 'read-write'}`);
        return false;
      }
      const elsewhere = attachments.filter((a) => a.nodeId !== node);
      const compatible = elsewhere.every((a) => (shared && a.shared) || (use.mode === 'MULTI_NODE_READER_ONLY' && a.readOnly));
      if (elsewhere.length && !compatible) {
        throw precondition(`volume ${id} is published to ${elsewhere.map((a) => a.nodeId).join(', ')} and access mode ${use.mode} allows one node only`);
      }
      if (ctx.maxVolumesPerNode > 0 && nodeVolumes >= ctx.maxVolumesPerNode) throw exhausted(`node ${nodeId} already has ${ctx.maxVolumesPerNode} volumes of this driver attached`);
      return true;
    }),
  );
}

/** Detaches the volume from the node, or from every node when none is named. */
export async function unpublishVolume(ctx: ControllerContext, volumeId: string, nodeId: string): Promise<void> {
  const attacher = attacherOf(ctx);
  const id = parseId('vol', 'volume_id', volumeId);
  if (nodeId) validateNodeId(nodeId);
  // A volume or node that does not exist cannot be attached: already unpublished, as the spec allows.
  if (!id) return;
  const nodes = nodeId ? [await nodeKey(attacher, nodeId)].filter((n): n is string => n !== null) : [...new Set((await attacher.attachments(id)).map((a) => a.nodeId))];
  for (const node of nodes) await ctx.locks.with([volumeLock(id), nodeLock(node)], () => attacher.unpublish(id, node));
}

export interface Growth {
  capacityBytes: number;
  /** A filesystem must still be grown by the node. */
  nodeExpansionRequired: boolean;
}

/** Grows the volume in the pool (never shrinks it); a volume already in the range is left as it is. */
export async function expandVolume(ctx: ControllerContext, volumeId: string, range: Range, use: Capability | null): Promise<Growth> {
  const id = parseId('vol', 'volume_id', volumeId);
  if (!id) throw notFound(`volume ${volumeId} does not exist`);
  return ctx.locks.with([volumeLock(id)], async () => {
    const vol = await requirePoolVolume(ctx, 'volume_id', id);
    if (range.limit && vol.capacityBytes > range.limit) throw outOfRange(`volume ${vol.id} is already ${formatBytes(vol.capacityBytes)}, more than limit_bytes ${formatBytes(range.limit)}; volumes do not shrink`);
    let bytes = vol.capacityBytes;
    if (!fitsRange(vol.capacityBytes, range)) {
      const size = chooseSize(range, { ...ctx.sizing, granularity: ctx.backend.granularity });
      bytes = (await ctx.backend.expandVolume(vol.id, Math.max(size, vol.capacityBytes))).capacityBytes;
    }
    // A raw block device is the new size as soon as the guest hears of it.
    return { capacityBytes: bytes, nodeExpansionRequired: use?.access !== 'block' };
  });
}
