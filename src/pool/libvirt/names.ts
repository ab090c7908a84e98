import { isId } from '../../ids.js';
import type { ContentSource } from '../backend.js';

/**
 * libvirt keeps no metadata on a storage volume, so what the driver must remember lives in the
 * volume's name (the documented convention; docs/libvirt.md):
 *
 *   volume    <volume-id>[.<fsType>][.prealloc][.wipe-<algorithm>][.from-<v|s><hash>].<raw|qcow2>
 *   snapshot  <snapshot-id>.of-<hash>.t<creation ms, base 36>[.g<group hash>].<raw|qcow2>
 *   group     <group-id>.n<members>.group           (a group snapshot's record: one byte or one extent)
 *   marker    <volume-or-snapshot-id>.incomplete        (exists while libvirt makes a copy)
 *             <snapshot-or-group-id>.t<start ms, base 36>.incomplete  (while a backup job copies a
 *             running disk, or a group is made or unmade: libvirt would let anyone delete its targets)
 *   retired   <volume-or-snapshot-id>.retired    (rbd: deleted, but Ceph clones still read its data;
 *             removed with the image once the last of them is gone)
 *   limits    iolimits-<volume id hash>.s<sequence, base 36>[.<key>-<value, base 36>]...  (a volume's
 *             I/O limits, its VolumeAttributesClass: a change makes the next sequence, then removes the
 *             older; the newest is the volume's. The hash, not the ID, keeps it within LVM's names)
 *
 * Sources are named by the 16-hex hash that ends every ID rather than the whole ID, so that the
 * longest names a Kubernetes CO produces (pvc-<uuid>, snapshot-<uuid>) stay within LVM's 127
 * characters in a `logical` pool. '.' never occurs in an ID, so the parts cannot be confused.
 */
export type Format = 'raw' | 'qcow2';
export const FORMATS: readonly Format[] = ['raw', 'qcow2'];
const FS = new Set(['ext4', 'xfs']);
const HASH = /^[0-9a-f]{16}$/;
/** vol-wipe algorithms offered as the `wipe` StorageClass parameter. */
export const WIPE_ALGORITHMS = ['zero', 'trim', 'random'] as const;
const INCOMPLETE = 'incomplete';
const RETIRED = 'retired';
const GROUP = 'group';

export interface VolumeName {
  kind: 'vol';
  id: string;
  format: Format;
  fsType?: string;
  preallocated: boolean;
  /** vol-wipe algorithm run before vol-delete. */
  wipe?: string;
  /** The source's kind and ID hash; the full ID is found by listing, while the source exists. */
  source?: { kind: ContentSource['kind']; hash: string };
}

export interface SnapshotName {
  kind: 'snap';
  id: string;
  format: Format;
  sourceHash: string;
  createdAt: number;
  /** The hash of the group snapshot this snapshot is a member of. */
  groupHash?: string;
}

/** A group snapshot's record: its ID and how many members it has. */
export interface GroupName {
  kind: 'group';
  id: string;
  members: number;
}

/** A copy or group in the making; a group's marker says when it began (a sweep leaves a young one alone). */
export interface MarkerName {
  kind: 'marker';
  id: string;
  startedAt?: number;
}

/** A deleted volume or snapshot whose image still backs Ceph clones: its ID reads as absent. */
export interface RetiredName {
  kind: 'retired';
  id: string;
}

/** A volume's I/O limits record: the newest sequence of a volume's hash is in force. */
export interface LimitsName {
  kind: 'limits';
  /** iolimits-<hash>: never a volume's or snapshot's ID, so what looks for those passes these by. */
  id: string;
  /** The hash of the volume's ID (idHash). */
  hash: string;
  sequence: number;
  /** Mutable parameter keys (mutable-parameters.ts) and their whole-number values. */
  limits: Record<string, number>;
}

export type PoolName = VolumeName | SnapshotName | GroupName | MarkerName | RetiredName | LimitsName;

/** The 16 hex characters that end every volume and snapshot ID (unique per CSI name). */
export function idHash(id: string): string {
  return id.slice(-16);
}

export function volumeName(v: Omit<VolumeName, 'kind'>): string {
  const parts = [v.id];
  if (v.fsType) parts.push(v.fsType);
  if (v.preallocated) parts.push('prealloc');
  if (v.wipe) parts.push(`wipe-${v.wipe}`);
  if (v.source) parts.push(`from-${v.source.kind === 'volume' ? 'v' : 's'}${v.source.hash}`);
  parts.push(v.format);
  return parts.join('.');
}

export function snapshotName(s: Omit<SnapshotName, 'kind'>): string {
  return [s.id, `of-${s.sourceHash}`, `t${s.createdAt.toString(36)}`, ...(s.groupHash ? [`g${s.groupHash}`] : []), s.format].join('.');
}

export function groupName(g: Omit<GroupName, 'kind'>): string {
  return `${g.id}.n${g.members}.${GROUP}`;
}

export function retiredName(id: string): string {
  return `${id}.${RETIRED}`;
}

export function markerName(id: string, startedAt?: number): string {
  return startedAt === undefined ? `${id}.${INCOMPLETE}` : `${id}.t${startedAt.toString(36)}.${INCOMPLETE}`;
}

/** The name's short words for the limit keys (m: the burst's maximum). */
const LIMIT_TOKENS: Readonly<Record<string, string>> = {
  readIOPS: 'ri',
  writeIOPS: 'wi',
  readBytesPerSecond: 'rb',
  writeBytesPerSecond: 'wb',
  readIOPSBurst: 'rim',
  writeIOPSBurst: 'wim',
  readBytesPerSecondBurst: 'rbm',
  writeBytesPerSecondBurst: 'wbm',
};
const KEY_OF_TOKEN = new Map(Object.entries(LIMIT_TOKENS).map(([k, t]) => [t, k]));
const LIMITS_PREFIX = 'iolimits-';

export function limitsName(l: Omit<LimitsName, 'kind' | 'id'>): string {
  const tokens = Object.keys(LIMIT_TOKENS)
    .filter((k) => Object.hasOwn(l.limits, k))
    .map((k) => `${LIMIT_TOKENS[k]}-${l.limits[k].toString(36)}`);
  return [`${LIMITS_PREFIX}${l.hash}`, `s${l.sequence.toString(36)}`, ...tokens].join('.');
}

function parseLimits(name: string): LimitsName | null {
  const [head, seq, ...tokens] = name.split('.');
  const hash = head.slice(LIMITS_PREFIX.length);
  if (!HASH.test(hash) || !seq || !/^s[0-9a-z]{1,8}$/.test(seq)) return null;
  const limits: Record<string, number> = {};
  for (const t of tokens) {
    const m = /^([a-z]{2,3})-([0-9a-z]{1,12})$/.exec(t);
    const key = m ? KEY_OF_TOKEN.get(m[1]) : undefined;
    if (!m || !key || Object.hasOwn(limits, key)) return null;
    limits[key] = parseInt(m[2], 36);
  }
  const parsed: LimitsName = { kind: 'limits', id: head, hash, sequence: parseInt(seq.slice(1), 36), limits };
  // Only the one spelling this driver writes (key order, no leading zeros).
  return limitsName(parsed) === name ? parsed : null;
}

/** Parses a libvirt volume name; null for anything this driver did not make. */
export function parseName(name: string): PoolName | null {
  if (name.startsWith(LIMITS_PREFIX)) return parseLimits(name);
  const parts = name.split('.');
  const id = parts[0];
  const kind = isId('vol', id) ? 'vol' : isId('snap', id) ? 'snap' : isId('group', id) ? 'group' : null;
  if (!kind || parts.length < 2) return null;
  const last = parts[parts.length - 1];
  if (parts.length === 2 && last === INCOMPLETE) return { kind: 'marker', id };
  if (parts.length === 2 && last === RETIRED) return kind === 'vol' || kind === 'snap' ? { kind: 'retired', id } : null;
  if ((kind === 'group' || kind === 'snap') && parts.length === 3 && last === INCOMPLETE && parts[1].startsWith('t')) {
    const startedAt = parseInt(parts[1].slice(1), 36);
    return Number.isSafeInteger(startedAt) && startedAt.toString(36) === parts[1].slice(1) ? { kind: 'marker', id, startedAt } : null;
  }
  if (kind === 'group') {
    const members = parts.length === 3 && last === GROUP && /^n[1-9][0-9]{0,3}$/.test(parts[1]) ? Number(parts[1].slice(1)) : 0;
    return members ? { kind: 'group', id, members } : null;
  }
  if (!(FORMATS as readonly string[]).includes(last)) return null;
  const format = last as Format;
  const middle = parts.slice(1, -1);
  if (kind === 'snap') {
    if (middle.length < 2 || middle.length > 3 || !middle[0].startsWith('of-') || !middle[1].startsWith('t')) return null;
    const sourceHash = middle[0].slice(3);
    const createdAt = parseInt(middle[1].slice(1), 36);
    if (!HASH.test(sourceHash) || !Number.isSafeInteger(createdAt) || createdAt.toString(36) !== middle[1].slice(1)) return null;
    if (middle.length === 2) return { kind: 'snap', id, format, sourceHash, createdAt };
    const groupHash = middle[2].startsWith('g') ? middle[2].slice(1) : '';
    return HASH.test(groupHash) ? { kind: 'snap', id, format, sourceHash, createdAt, groupHash } : null;
  }
  const v: VolumeName = { kind: 'vol', id, format, preallocated: false };
  for (const token of middle) {
    if (FS.has(token) && !v.fsType) v.fsType = token;
    else if (token === 'prealloc' && !v.preallocated) v.preallocated = true;
    else if (token.startsWith('wipe-') && (WIPE_ALGORITHMS as readonly string[]).includes(token.slice(5)) && !v.wipe) v.wipe = token.slice(5);
    else if (/^from-[vs][0-9a-f]{16}$/.test(token) && !v.source) v.source = { kind: token[5] === 'v' ? 'volume' : 'snapshot', hash: token.slice(6) };
    else return null;
  }
  return name === volumeName(v) ? v : null;
}

/**
 * The virtio serial a volume's disk carries (virtio-blk keeps 20 bytes): the node finds the disk
 * as /dev/disk/by-id/virtio-<serial>, or by /sys/block/<dev>/serial where udev does not run.
 */
export function serialFor(volumeId: string): string {
  return `vp-${idHash(volumeId)}`;
}

export const SERIAL_RE = /^vp-[0-9a-f]{16}$/;

const POOL_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}$/;

export function validatePoolName(name: string): string {
  if (!POOL_NAME_RE.test(name)) throw new Error(`--libvirt-pool ${JSON.stringify(name)} is not a plain libvirt pool name`);
  return name;
}

/**
 * Why LVM would refuse this LV name in this VG, or null: lvm2 takes a name only while
 * len(LV) + len(VG) + 3 < 128 (vg_validate: the "VG/LV" path and its terminator).
 */
export function lvmNameProblem(name: string, vg: string): string | null {
  return name.length + vg.length + 3 < 128 ? null : `the volume name ${name} (${name.length} characters) does not fit LVM's limit beside VG ${vg}: len(LV) + len(VG) + 3 must stay under 128; use a shorter VG name (docs/libvirt.md)`;
}
