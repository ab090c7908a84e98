import { DeviceNotAnswering } from '../errors.js';
import { probePool } from '../pool/probe-once.js';
import type { DriverContext, IdentityState } from './context.js';

/** What the pool behind this process can do, in the terms the CSI capability table is built from. */
export interface PoolFeatures {
  /** Volumes are attached to nodes from the controller (hypervisor mode hot-plugs disks). */
  attachesFromController: boolean;
  /** Volumes grow on the controller; otherwise on the node that holds them. */
  growsOnController: boolean;
  /** The pool tells its snapshots' allocated and changed blocks (the SnapshotMetadata service). */
  snapshotMetadata: boolean;
  /** The pool cuts snapshots of several volumes at one point in time (the GroupController service). */
  groupSnapshots: boolean;
  /** The pool changes a live volume's mutable parameters (VolumeAttributesClass). */
  modifiesVolumes: boolean;
}

/**
 * The snapshot services each kind of pool serves, known before its pool opens (a VolumePool still
 * being built): the sidecars ask GetPluginCapabilities once, at their start. A unit test holds each
 * pool to its row.
 */
export const SNAPSHOT_SERVICES_BY_KIND: Readonly<Record<string, { snapshotMetadata: boolean; groupSnapshots: boolean; modifiesVolumes: boolean }>> = {
  file: { snapshotMetadata: true, groupSnapshots: true, modifiesVolumes: true },
  lvm: { snapshotMetadata: true, groupSnapshots: true, modifiesVolumes: true },
  libvirt: { snapshotMetadata: true, groupSnapshots: false, modifiesVolumes: true },
};

/** A pool not open yet (a VolumePool being built) is node-local: it grows on the node. */
export function poolFeatures(ctx: Partial<DriverContext>): PoolFeatures {
  const byKind = ctx.backendKind !== undefined ? SNAPSHOT_SERVICES_BY_KIND[ctx.backendKind] : undefined;
  return {
    attachesFromController: ctx.controllerAttacher !== undefined,
    growsOnController: ctx.backend?.expansion === 'controller',
    snapshotMetadata: ctx.backend ? ctx.backend.snapshotBlocks !== undefined : (byKind?.snapshotMetadata ?? false),
    groupSnapshots: ctx.backend ? ctx.backend.groupSnapshots !== undefined : (byKind?.groupSnapshots ?? false),
    modifiesVolumes: ctx.backend ? ctx.backend.setParameters !== undefined && ctx.backend.mutableParameters !== undefined : (byKind?.modifiesVolumes ?? false),
  };
}

/** Why this process cannot serve calls now; `deviceNotAnswering` when it is a disk of the pool that hangs. Null when it can. */
export async function notReadyBecause({ ctx, notServing }: IdentityState): Promise<{ reason: string; deviceNotAnswering: boolean } | null> {
  if (notServing) return { reason: notServing, deviceNotAnswering: false };
  try {
    // A node in hypervisor mode has no pool to ask; it is ready when it can serve its own calls.
    if (ctx.backend) await probePool(ctx.backend);
    return null;
  } catch (err) {
    return { reason: `pool not usable: ${String(err)}`, deviceNotAnswering: err instanceof DeviceNotAnswering };
  }
}
