import { detached } from '../../call-context.js';
import { conflict, exhausted, notFound, outOfRange, precondition } from '../../errors.js';
import { DEFAULT_FS, isFsType, MIN_FS_BYTES } from '../../filesystems.js';
import { idFor, parseId, validateName } from '../../ids.js';
import { snapshotLock, volumeLock } from '../../locks.js';
import type { ContentSource, VolumeRecord } from '../../records.js';
import type { WritableData } from '../../pool/backend.js';
import { fillFromPeer } from '../transfer.js';
import { underOperation } from '../../operations.js';
import { formatBytes, roundUp } from '../../units.js';
import type { Capability } from '../access.js';
import type { ControllerContext, DriverContext } from '../context.js';
import { chooseFilesystem } from '../filesystem-choice.js';
import { identityParameters, parseVolumeParameters, sameParameters } from '../parameters.js';
import { parseMutableParameters, withChanges, withoutMutable } from '../../pool/mutable-parameters.js';
import { chooseSize, fitsRange, type Range } from '../sizing.js';

/** Topology segments: key → value, as in NodeGetInfo's accessible_topology. */
export type Segments = Record<string, string>;

/** Where a new volume must (requisite) or should (preferred) be reachable; empty lists mean anywhere. */
export interface Placement {
  requisite: Segments[];
  preferred: Segments[];
}

export interface NewVolume {
  name: string;
  /** Every way the volume will be used (validated by the caller). */
  uses: Capability[];
  /** StorageClass parameters as given. */
  parameters: Record<string, string>;
  /** VolumeAttributesClass parameters as given (they win over the StorageClass's). */
  mutableParameters?: Record<string, string>;
  range: Range;
  /** The content source as the CO named it (its ID not yet checked). */
  source?: ContentSource;
  placement?: Placement;
}

/** Whether a topology term names where this pool is (a term with other keys or values does not). */
export function isHere(ctx: Pick<DriverContext, 'topology'>, segs: Segments): boolean {
  const ours = Object.entries(ctx.topology);
  return Object.keys(segs).length === ours.length && ours.every(([k, v]) => segs[k] === v);
}

function checkPlacement(ctx: DriverContext, placement: Placement | undefined): void {
  if (!placement) return;
  const terms = placement.requisite.length ? placement.requisite : placement.preferred;
  if (terms.length && !terms.some((t) => isHere(ctx, t))) {
    const where = Object.entries(ctx.topology).map(([k, v]) => `${k}=${v}`).join(', ');
    throw exhausted(`this pool serves only ${where}, which the accessibility requirements exclude`);
  }
}

function checkSource(src: ContentSource | undefined): ContentSource | undefined {
  if (!src) return undefined;
  const field = src.kind === 'snapshot' ? 'volume_content_source.snapshot.snapshot_id' : 'volume_content_source.volume.volume_id';
  const id = parseId(src.kind === 'snapshot' ? 'snap' : 'vol', field, src.id);
  if (!id) throw notFound(`source ${src.kind} ${src.id} does not exist`);
  return { kind: src.kind, id };
}

/** IDs are compared by the hash that ends them (unique per name): a backend may know a gone source only by it. */
function canonical(ctx: ControllerContext, p: Record<string, string>): Record<string, string> {
  return ctx.backend.canonicalParameters ? ctx.backend.canonicalParameters(p) : p;
}

function sameSource(a: ContentSource | undefined, b: ContentSource | undefined): boolean {
  return (a?.kind ?? '') === (b?.kind ?? '') && (a?.id ?? '').slice(-16) === (b?.id ?? '').slice(-16);
}

function minimumFor(uses: Capability[], fsParam: string | undefined): number {
  let min = 0;
  for (const c of uses) {
    if (c.access !== 'mount') continue;
    const fs = c.fsType || (fsParam && isFsType(fsParam) ? fsParam : DEFAULT_FS);
    min = Math.max(min, MIN_FS_BYTES[fs]);
  }
  return min;
}

/** Creates the volume, or returns the one a retry of the same request made; ALREADY_EXISTS for the same name asked differently. */
export async function createVolume(ctx: ControllerContext, req: NewVolume): Promise<VolumeRecord> {
  const name = validateName('name', req.name);
  const mutableSpec = ctx.backend.mutableParameters ?? {};
  const params = parseVolumeParameters(req.parameters, ctx.backend.volumeParameters, mutableSpec);
  const mutable = { ...params.mutable, ...parseMutableParameters(req.mutableParameters, mutableSpec) };
  const legacyFsType = params.fsType;
  const fsType = chooseFilesystem(req.uses, legacyFsType);
  if (fsType) params.fsType = fsType;
  const { range } = req;
  const source = checkSource(req.source);
  checkPlacement(ctx, req.placement);
  const id = idFor('vol', name);
  const lockKeys = [volumeLock(id), ...(source ? [source.kind === 'snapshot' ? snapshotLock(source.id) : volumeLock(source.id)] : [])];

  return ctx.locks.with(lockKeys, async () => {
    const existing = await ctx.backend.getVolume(id);
    if (existing) {
      if (!fitsRange(existing.capacityBytes, range)) throw conflict(`volume ${name} exists with ${formatBytes(existing.capacityBytes)} (${existing.capacityBytes} bytes), outside the requested range: ask for its size, or use another name`);
      if (!sameSource(existing.source, source)) throw conflict(`volume ${name} exists with another content source`);
      // Earlier versions recorded only a class's fsType, not the capability's: such a volume is not
      // held against a filesystem that only the capability names (a retry across the upgrade).
      const asked = !existing.parameters.fsType && !legacyFsType ? identityParameters({ ...params, fsType: undefined }) : identityParameters(params);
      if (existing.parameters.fsType && params.fsType && existing.parameters.fsType !== params.fsType) throw conflict(`volume ${name} exists for ${existing.parameters.fsType}, not ${params.fsType}`);
      const made = withoutMutable(existing.parameters, mutableSpec);
      if (!sameParameters(canonical(ctx, made), canonical(ctx, asked))) throw conflict(`volume ${name} exists with other parameters (${JSON.stringify(made)})`);
      // The spec's "compatible with mutable_parameters": a retry asking other figures is another request (keys it does not name are not compared).
      if (withChanges(existing.parameters, mutable) !== existing.parameters) {
        const asked = Object.entries(mutable).map(([k, v]) => `${k}=${v ?? 'unlimited'}`).join(', ');
        throw conflict(`volume ${name} exists with other mutable parameters than ${asked} (${JSON.stringify(existing.parameters)}): a live volume's class is changed with ControllerModifyVolume`);
      }
      return existing;
    }

    let minBytes = minimumFor(req.uses, params.fsType);
    let fill: ((target: WritableData) => Promise<void>) | undefined;
    let fromNode: string | undefined;
    if (source) {
      let sourceBytes = source.kind === 'snapshot' ? (await ctx.backend.getSnapshot(source.id))?.sizeBytes : (await ctx.backend.getVolume(source.id))?.capacityBytes;
      if (sourceBytes === undefined && ctx.transfer) {
        // Not in this node's pool: the node holding it sends it, for this claim only (transfer/).
        if (!params.pvcName || !params.pvcNamespace) throw notFound(`source ${source.kind} ${source.id} is not on this node, and the request names no claim to fetch it from another node for (external-provisioner's --extra-create-metadata)`);
        const claim = { namespace: params.pvcNamespace, name: params.pvcName };
        const remote = await ctx.transfer.locate(source.kind, source.id, claim);
        if (remote) {
          sourceBytes = remote.size;
          fill = fillFromPeer(ctx.transfer, remote.peer, source.kind, source.id, claim, remote.size);
          fromNode = remote.peer.node;
        }
      }
      if (sourceBytes === undefined) throw notFound(`source ${source.kind} ${source.id} does not exist${ctx.transfer ? ' on this node or on the node holding it' : ''}`);
      if (range.limit && range.limit < sourceBytes) throw outOfRange(`the source ${source.kind} ${source.id} is ${formatBytes(sourceBytes)}, more than limit_bytes ${formatBytes(range.limit)}: a copy is at least as large as its source`);
      minBytes = Math.max(minBytes, sourceBytes);
    }
    // A copy asked without a size is the size of its source, not the default size of a new volume.
    const sizing = source && !range.required && !range.limit ? { ...ctx.sizing, defaultBytes: roundUp(minBytes, ctx.backend.granularity) } : ctx.sizing;
    const size = Math.max(chooseSize(range, { ...sizing, granularity: ctx.backend.granularity }), roundUp(minBytes, ctx.backend.granularity));
    if (range.limit && size > range.limit) throw outOfRange(`the volume needs at least ${formatBytes(size)} (filesystem or source minimum), more than limit_bytes ${formatBytes(range.limit)}`);
    const parameters: Record<string, string> = withChanges({ ...identityParameters(params) }, mutable);
    ctx.volumeLimits?.check(parameters);
    if (params.pvcName) parameters.pvcName = params.pvcName;
    if (params.pvcNamespace) parameters.pvcNamespace = params.pvcNamespace;
    if (params.pvName) parameters.pvName = params.pvName;
    const spec = { id, name, capacityBytes: size, source, parameters, ...(fill ? { fill } : {}) };
    // A copy (local or from a peer) may take longer than the CO waits for one call: it goes on, under
    // the lock, after the call's deadline; retries are ABORTED ("in progress") until it is done.
    // Its progress is shown to a client waiting on the call (operations.ts, the Inspect service).
    if (!source) return ctx.backend.createVolume(spec);
    const operation = { kind: fill ? ('receive' as const) : ('copy' as const), name, volumeId: id, source: `${source.kind} ${source.id}`, ...(fromNode ? { fromNode } : {}), totalBytes: minBytes };
    return detached(() => underOperation(operation, () => ctx.backend.createVolume(spec)));
  });
}

/** Deletes the volume; an ID that was never ours, or a volume already gone, is done. FAILED_PRECONDITION while it is attached. */
export async function deleteVolume(ctx: ControllerContext, volumeId: string): Promise<void> {
  const id = parseId('vol', 'volume_id', volumeId);
  if (!id) return;
  await ctx.locks.with([volumeLock(id)], async () => {
    const busy = await ctx.backend.volumeBusy(id);
    if (busy) throw precondition(busy);
    await ctx.backend.deleteVolume(id);
  });
}

export interface CapacityQuery {
  parameters: Record<string, string>;
  /** The segments asked about, if any. */
  segments?: Segments;
  /** False when the CO asked about a use this driver cannot serve: no capacity for it. */
  servable: boolean;
}

export interface Capacity {
  availableBytes: number;
  maximumVolumeBytes: number | null;
  minimumVolumeBytes: number | null;
}

export async function capacity(ctx: ControllerContext, q: CapacityQuery): Promise<Capacity> {
  const params = parseVolumeParameters(q.parameters, ctx.backend.volumeParameters, ctx.backend.mutableParameters);
  const none = { availableBytes: 0, maximumVolumeBytes: null, minimumVolumeBytes: null };
  if (q.segments && !isHere(ctx, q.segments)) return none;
  if (!q.servable) return none;
  // A class's mutable keys place volumes too (an lvm tier): its capacity is where its volumes go.
  const { availableBytes } = await ctx.backend.capacity(withChanges(params.backend, params.mutable));
  const g = ctx.backend.granularity;
  return { availableBytes, maximumVolumeBytes: Math.min(Math.floor(availableBytes / g) * g, ctx.sizing.maxBytes), minimumVolumeBytes: g };
}
