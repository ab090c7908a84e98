import type { CreateVolumeRequest__Output } from '../../../gen/csi/v1/CreateVolumeRequest.js';
import type { CreateVolumeResponse } from '../../../gen/csi/v1/CreateVolumeResponse.js';
import type { DeleteVolumeRequest__Output } from '../../../gen/csi/v1/DeleteVolumeRequest.js';
import type { DeleteVolumeResponse } from '../../../gen/csi/v1/DeleteVolumeResponse.js';
import type { GetCapacityRequest__Output } from '../../../gen/csi/v1/GetCapacityRequest.js';
import type { GetCapacityResponse } from '../../../gen/csi/v1/GetCapacityResponse.js';
import type { Topology__Output } from '../../../gen/csi/v1/Topology.js';
import type { TopologyRequirement__Output } from '../../../gen/csi/v1/TopologyRequirement.js';
import { conflict, precondition, notFound, outOfRange, exhausted } from '../../errors.js';
import { MIN_FS_BYTES } from '../../filesystems.js';
import type { ContentSource } from '../../pool/backend.js';
import { capabilityProblem, parseCapabilities, type Capability } from '../capabilities.js';
import { DEFAULT_FS, isFsType } from '../../filesystems.js';
import type { ControllerContext, DriverContext } from '../context.js';
import { toCsiVolume } from '../lookups.js';
import { snapshotLock, volumeLock } from '../../locks.js';
import { idFor, parseId, validateName } from '../../ids.js';
import { identityParameters, parseVolumeParameters, sameParameters } from '../parameters.js';
import { chooseSize, fitsRange, parseRange } from '../sizing.js';
import { roundUp } from '../../units.js';

/** Whether a topology term names where this pool is (a term with other keys or values does not). */
function matchesPool(ctx: DriverContext, t: Topology__Output): boolean {
  const segs = t.segments ?? {};
  const ours = Object.entries(ctx.topology);
  return Object.keys(segs).length === ours.length && ours.every(([k, v]) => segs[k] === v);
}

function checkTopology(ctx: DriverContext, req: TopologyRequirement__Output | null): void {
  if (!req) return;
  const terms = req.requisite.length ? req.requisite : req.preferred;
  if (terms.length && !terms.some((t) => matchesPool(ctx, t))) {
    const where = Object.entries(ctx.topology).map(([k, v]) => `${k}=${v}`).join(', ');
    throw exhausted(`this pool serves only ${where}, which the accessibility requirements exclude`);
  }
}

function contentSource(req: CreateVolumeRequest__Output): ContentSource | undefined {
  const src = req.volume_content_source;
  if (!src) return undefined;
  if (src.type === 'snapshot') {
    const id = parseId('snap', 'volume_content_source.snapshot.snapshot_id', src.snapshot?.snapshot_id ?? '');
    if (!id) throw notFound(`source snapshot ${src.snapshot?.snapshot_id} does not exist`);
    return { kind: 'snapshot', id };
  }
  if (src.type === 'volume') {
    const id = parseId('vol', 'volume_content_source.volume.volume_id', src.volume?.volume_id ?? '');
    if (!id) throw notFound(`source volume ${src.volume?.volume_id} does not exist`);
    return { kind: 'volume', id };
  }
  return undefined;
}

/** IDs are compared by the hash that ends them (unique per name): a backend may know a gone source only by it. */
function canonical(ctx: ControllerContext, p: Record<string, string>): Record<string, string> {
  return ctx.backend.canonicalParameters ? ctx.backend.canonicalParameters(p) : p;
}

function sameSource(a: ContentSource | undefined, b: ContentSource | undefined): boolean {
  return (a?.kind ?? '') === (b?.kind ?? '') && (a?.id ?? '').slice(-16) === (b?.id ?? '').slice(-16);
}

function minimumFor(caps: Capability[], fsParam: string | undefined): number {
  let min = 0;
  for (const c of caps) {
    if (c.access !== 'mount') continue;
    const fs = c.fsType || (fsParam && isFsType(fsParam) ? fsParam : DEFAULT_FS);
    min = Math.max(min, MIN_FS_BYTES[fs]);
  }
  return min;
}

export async function createVolume(ctx: ControllerContext, req: CreateVolumeRequest__Output): Promise<CreateVolumeResponse> {
  const name = validateName('name', req.name);
  const caps = parseCapabilities(req.volume_capabilities, ctx.access);
  const params = parseVolumeParameters(req.parameters, ctx.backend.volumeParameters);
  const range = parseRange(req.capacity_range);
  const source = contentSource(req);
  checkTopology(ctx, req.accessibility_requirements);
  const id = idFor('vol', name);
  const lockKeys = [volumeLock(id), ...(source ? [source.kind === 'snapshot' ? snapshotLock(source.id) : volumeLock(source.id)] : [])];

  return ctx.locks.with(lockKeys, async () => {
    const existing = await ctx.backend.getVolume(id);
    if (existing) {
      if (!fitsRange(existing.capacityBytes, range)) throw conflict(`volume ${name} exists with ${existing.capacityBytes} bytes, outside the requested range`);
      if (!sameSource(existing.source, source)) throw conflict(`volume ${name} exists with another content source`);
      if (!sameParameters(canonical(ctx, existing.parameters), canonical(ctx, identityParameters(params)))) throw conflict(`volume ${name} exists with other parameters (${JSON.stringify(existing.parameters)})`);
      return { volume: toCsiVolume(ctx, existing) };
    }

    let minBytes = minimumFor(caps, params.fsType);
    if (source) {
      const sourceBytes = source.kind === 'snapshot' ? (await ctx.backend.getSnapshot(source.id))?.sizeBytes : (await ctx.backend.getVolume(source.id))?.capacityBytes;
      if (sourceBytes === undefined) throw notFound(`source ${source.kind} ${source.id} does not exist`);
      if (range.limit && range.limit < sourceBytes) throw outOfRange(`the source ${source.kind} is ${sourceBytes} bytes, more than limit_bytes ${range.limit}`);
      minBytes = Math.max(minBytes, sourceBytes);
    }
    const size = Math.max(chooseSize(range, { ...ctx.sizing, granularity: ctx.backend.granularity }), roundUp(minBytes, ctx.backend.granularity));
    if (range.limit && size > range.limit) throw outOfRange(`the volume needs at least ${size} bytes (filesystem or source minimum), more than limit_bytes ${range.limit}`);
    const parameters: Record<string, string> = { ...identityParameters(params) };
    if (params.pvcName) parameters.pvcName = params.pvcName;
    if (params.pvcNamespace) parameters.pvcNamespace = params.pvcNamespace;
    if (params.pvName) parameters.pvName = params.pvName;
    const created = await ctx.backend.createVolume({ id, name, capacityBytes: size, source, parameters });
    return { volume: toCsiVolume(ctx, created) };
  });
}

export async function deleteVolume(ctx: ControllerContext, req: DeleteVolumeRequest__Output): Promise<DeleteVolumeResponse> {
  const id = parseId('vol', 'volume_id', req.volume_id);
  if (!id) return {}; // never ours, so already gone
  return ctx.locks.with([volumeLock(id)], async () => {
    const busy = await ctx.backend.volumeBusy(id);
    if (busy) throw precondition(busy);
    await ctx.backend.deleteVolume(id);
    return {};
  });
}

export async function getCapacity(ctx: ControllerContext, req: GetCapacityRequest__Output): Promise<GetCapacityResponse> {
  const params = parseVolumeParameters(req.parameters, ctx.backend.volumeParameters);
  const zero = { available_capacity: '0', maximum_volume_size: null, minimum_volume_size: null };
  if (req.accessible_topology && !matchesPool(ctx, req.accessible_topology)) return zero;
  if (req.volume_capabilities.some((c) => capabilityProblem(c, ctx.access) !== null)) return zero;
  const { availableBytes } = await ctx.backend.capacity(params.backend);
  const g = ctx.backend.granularity;
  const max = Math.min(Math.floor(availableBytes / g) * g, ctx.sizing.maxBytes);
  return {
    available_capacity: String(availableBytes),
    maximum_volume_size: { value: String(max) },
    minimum_volume_size: { value: String(g) },
  };
}
