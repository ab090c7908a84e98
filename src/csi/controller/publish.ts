import type { ControllerExpandVolumeRequest__Output } from '../../../gen/csi/v1/ControllerExpandVolumeRequest.js';
import type { ControllerExpandVolumeResponse } from '../../../gen/csi/v1/ControllerExpandVolumeResponse.js';
import type { ControllerPublishVolumeRequest__Output } from '../../../gen/csi/v1/ControllerPublishVolumeRequest.js';
import type { ControllerPublishVolumeResponse } from '../../../gen/csi/v1/ControllerPublishVolumeResponse.js';
import type { ControllerUnpublishVolumeRequest__Output } from '../../../gen/csi/v1/ControllerUnpublishVolumeRequest.js';
import type { ControllerUnpublishVolumeResponse } from '../../../gen/csi/v1/ControllerUnpublishVolumeResponse.js';
import { conflict, exhausted, internal, invalid, notFound, outOfRange, precondition } from '../../errors.js';
import type { ControllerAttacher } from '../../pool/backend.js';
import { parseCapability } from '../capabilities.js';
import { type ControllerContext } from '../context.js';
import { nodeLock, volumeLock } from '../../locks.js';
import { requirePoolVolume } from '../lookups.js';
import { isNodeId, parseId } from '../../ids.js';
import { chooseSize, fitsRange, parseRange } from '../sizing.js';

function publisherOf(ctx: ControllerContext): ControllerAttacher {
  // Reached only when PUBLISH_UNPUBLISH_VOLUME is advertised, which it is exactly when there is a controller attacher (service-capabilities.ts).
  if (!ctx.controllerAttacher) throw internal('ControllerPublish/Unpublish reached without a publisher');
  return ctx.controllerAttacher;
}

function validateNodeId(nodeId: string): string {
  if (!nodeId) throw invalid('node_id is required');
  if (!isNodeId(nodeId)) throw invalid(`node_id ${JSON.stringify(nodeId)} is neither a domain UUID nor a plain domain name`);
  return nodeId;
}

export async function controllerPublishVolume(ctx: ControllerContext, req: ControllerPublishVolumeRequest__Output): Promise<ControllerPublishVolumeResponse> {
  const publisher = publisherOf(ctx);
  const id = parseId('vol', 'volume_id', req.volume_id);
  const nodeId = validateNodeId(req.node_id);
  const cap = parseCapability(req.volume_capability, ctx.access);
  if (!id) throw notFound(`volume ${req.volume_id} does not exist`);
  const readOnly = req.readonly || cap.readOnly;
  const shared = cap.mode === 'MULTI_NODE_MULTI_WRITER';
  // Kubernetes names a node by what NodeGetInfo returned (the UUID), so one node has one lock key.
  return ctx.locks.with([volumeLock(id), nodeLock(nodeId.toLowerCase())], async () => {
    const publish_context = await publisher.publish(id, nodeId, { readOnly, shared }, ({ nodeId: node, attachments, nodeVolumes }) => {
      const here = attachments.find((a) => a.nodeId === node);
      if (here) {
        if (here.readOnly !== readOnly) throw conflict(`volume ${id} is already published to ${nodeId} ${here.readOnly ? 'read-only' : 'read-write'}`);
        return false;
      }
      const elsewhere = attachments.filter((a) => a.nodeId !== node);
      const compatible = elsewhere.every((a) => (shared && a.shared) || (cap.mode === 'MULTI_NODE_READER_ONLY' && a.readOnly));
      if (elsewhere.length && !compatible) {
        throw precondition(`volume ${id} is published to ${elsewhere.map((a) => a.nodeId).join(', ')} and access mode ${cap.mode} allows one node only`);
      }
      if (ctx.maxVolumesPerNode > 0 && nodeVolumes >= ctx.maxVolumesPerNode) throw exhausted(`node ${nodeId} already has ${ctx.maxVolumesPerNode} volumes of this driver attached`);
      return true;
    });
    return { publish_context };
  });
}

export async function controllerUnpublishVolume(ctx: ControllerContext, req: ControllerUnpublishVolumeRequest__Output): Promise<ControllerUnpublishVolumeResponse> {
  const publisher = publisherOf(ctx);
  const id = parseId('vol', 'volume_id', req.volume_id);
  if (req.node_id) validateNodeId(req.node_id);
  // A volume or node that does not exist cannot be attached: already unpublished, as the spec allows.
  if (!id) return {};
  const nodes = req.node_id ? [await publisher.resolveNode(req.node_id)].filter((n): n is string => n !== null) : [...new Set((await publisher.attachments(id)).map((a) => a.nodeId))];
  for (const node of nodes) await ctx.locks.with([volumeLock(id), nodeLock(node)], () => publisher.unpublish(id, node));
  return {};
}

export async function controllerExpandVolume(ctx: ControllerContext, req: ControllerExpandVolumeRequest__Output): Promise<ControllerExpandVolumeResponse> {
  parseId('vol', 'volume_id', req.volume_id);
  if (!req.capacity_range) throw invalid('capacity_range is required');
  const range = parseRange(req.capacity_range);
  const cap = req.volume_capability ? parseCapability(req.volume_capability, ctx.access) : null;
  return ctx.locks.with([volumeLock(req.volume_id)], async () => {
    const vol = await requirePoolVolume(ctx, 'volume_id', req.volume_id);
    if (range.limit && vol.capacityBytes > range.limit) throw outOfRange(`volume ${vol.id} is already ${vol.capacityBytes} bytes, more than limit_bytes ${range.limit}; volumes do not shrink`);
    let bytes = vol.capacityBytes;
    if (!fitsRange(vol.capacityBytes, range)) {
      const size = chooseSize(range, { ...ctx.sizing, granularity: ctx.backend.granularity });
      bytes = (await ctx.backend.expandVolume(vol.id, Math.max(size, vol.capacityBytes))).capacityBytes;
    }
    // A filesystem must be grown by the node; a raw block device is the new size as soon as the guest hears of it.
    return { capacity_bytes: String(bytes), node_expansion_required: cap?.access !== 'block' };
  });
}
