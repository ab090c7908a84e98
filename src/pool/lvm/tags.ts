import type { ContentSource, SnapshotRecord, VolumeRecord } from '../backend.js';
import { invalid } from '../../errors.js';
import { tagsOf, tagValue, type LvRow } from './lvm-cli.js';

/**
 * Everything the driver must remember about an LV is kept on the LV itself, as LVM tags written by
 * the same lvcreate that makes it: the backend stays the only source of truth.
 */
export const POOL_TAG = 'vpool.pool';
export const THIN_POOL_TAG = 'vpool.thinpool';
/** On a PV: its tier (vpool-csi pool init|extend --tier), where a StorageClass's `tier` places volumes. */
export const TIER_TAG = 'vpool.tier';
const KIND = 'vpool.kind';
const NAME = 'vpool.name';
const CREATED = 'vpool.created';
const SOURCE = 'vpool.src';
const SOURCE_VOLUME = 'vpool.srcvol';
const SIZE = 'vpool.size';
const PARAM = 'vpool.p.';
/** A group snapshot's member: the group's ID, its name and how many members it has (all of them listed, or none). */
const GROUP = 'vpool.group';
const GROUP_NAME = 'vpool.gname';
const GROUP_SIZE = 'vpool.gsize';
/** Set while a clone or restore is still being filled; a retried CreateVolume finishes the job. */
export const INCOMPLETE_TAG = 'vpool.incomplete';

// LVM tags may hold [A-Za-z0-9_+.-/=!:&#]; CSI names and our parameter values are a subset.
const TAG_SAFE = /^[A-Za-z0-9_+.\-/=!:&#]{1,1024}$/;

function tag(key: string, value: string): string {
  const t = `${key}=${value}`;
  if (!TAG_SAFE.test(t)) throw invalid(`cannot store ${JSON.stringify(t)} as an LVM tag`);
  return t;
}

export function volumeTags(v: { name: string; createdAt: number; source?: ContentSource; parameters: Record<string, string> }): string[] {
  return [
    tag(KIND, 'vol'),
    tag(NAME, v.name),
    tag(CREATED, String(v.createdAt)),
    ...(v.source ? [tag(SOURCE, `${v.source.kind}:${v.source.id}`)] : []),
    ...Object.entries(v.parameters).map(([k, val]) => tag(`${PARAM}${k}`, val)),
  ];
}

/** lvchange arguments that turn one recorded parameter set into another (one metadata commit: both at once or neither). */
export function parameterTagChanges(from: Record<string, string>, to: Record<string, string>): string[] {
  const was = new Set(Object.entries(from).map(([k, v]) => tag(`${PARAM}${k}`, v)));
  const will = new Set(Object.entries(to).map(([k, v]) => tag(`${PARAM}${k}`, v)));
  return [...[...was].filter((t) => !will.has(t)).flatMap((t) => ['--deltag', t]), ...[...will].filter((t) => !was.has(t)).flatMap((t) => ['--addtag', t])];
}

export interface GroupTag {
  id: string;
  name: string;
  size: number;
}

export function snapshotTags(s: { name: string; createdAt: number; sourceVolumeId: string; sizeBytes: number; group?: GroupTag }): string[] {
  return [
    tag(KIND, 'snap'),
    tag(NAME, s.name),
    tag(CREATED, String(s.createdAt)),
    tag(SOURCE_VOLUME, s.sourceVolumeId),
    tag(SIZE, String(s.sizeBytes)),
    ...(s.group ? [tag(GROUP, s.group.id), tag(GROUP_NAME, s.group.name), tag(GROUP_SIZE, String(s.group.size))] : []),
  ];
}

/** The group snapshot a snapshot LV was cut with, or undefined. */
export function groupOfRow(row: LvRow): GroupTag | undefined {
  const tags = tagsOf(row.lv_tags);
  const id = tagValue(tags, GROUP);
  if (id === undefined) return undefined;
  return { id, name: tagValue(tags, GROUP_NAME) ?? id, size: Number(tagValue(tags, GROUP_SIZE) ?? 0) };
}

/**
 * The snapshot rows a caller may see: a group's members only once all of them exist (the last one
 * made is the group's commit point), so a cut a crash left half-made is never listed or restored.
 */
export function visibleSnapshotRows(rows: readonly LvRow[]): LvRow[] {
  const counts = new Map<string, number>();
  for (const r of rows) {
    const g = isSnapshotRow(r) ? groupOfRow(r) : undefined;
    if (g) counts.set(g.id, (counts.get(g.id) ?? 0) + 1);
  }
  return rows.filter((r) => {
    if (!isSnapshotRow(r)) return false;
    const g = groupOfRow(r);
    return !g || (g.size > 0 && counts.get(g.id) === g.size);
  });
}

export function isVolumeRow(row: LvRow): boolean {
  return tagValue(tagsOf(row.lv_tags), KIND) === 'vol';
}

export function isSnapshotRow(row: LvRow): boolean {
  return tagValue(tagsOf(row.lv_tags), KIND) === 'snap';
}

export function isIncomplete(row: LvRow): boolean {
  return tagsOf(row.lv_tags).includes(INCOMPLETE_TAG);
}

export function volumeFromRow(row: LvRow): VolumeRecord {
  const tags = tagsOf(row.lv_tags);
  const src = tagValue(tags, SOURCE);
  const parameters: Record<string, string> = {};
  for (const t of tags) if (t.startsWith(PARAM)) parameters[t.slice(PARAM.length, t.indexOf('='))] = t.slice(t.indexOf('=') + 1);
  let source: ContentSource | undefined;
  if (src) {
    const [kind, id] = [src.slice(0, src.indexOf(':')), src.slice(src.indexOf(':') + 1)];
    source = kind === 'snapshot' ? { kind: 'snapshot', id } : { kind: 'volume', id };
  }
  return {
    id: row.lv_name,
    name: tagValue(tags, NAME) ?? row.lv_name,
    capacityBytes: Number(row.lv_size),
    createdAt: Number(tagValue(tags, CREATED) ?? 0),
    ...(source ? { source } : {}),
    parameters,
  };
}

export function snapshotFromRow(row: LvRow): SnapshotRecord {
  const tags = tagsOf(row.lv_tags);
  return {
    id: row.lv_name,
    name: tagValue(tags, NAME) ?? row.lv_name,
    sourceVolumeId: tagValue(tags, SOURCE_VOLUME) ?? row.origin,
    sizeBytes: Number(tagValue(tags, SIZE) ?? row.lv_size),
    createdAt: Number(tagValue(tags, CREATED) ?? 0),
    readyToUse: true,
    ...(tagValue(tags, GROUP) !== undefined ? { groupId: tagValue(tags, GROUP) } : {}),
  };
}
