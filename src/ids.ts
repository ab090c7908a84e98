import { createHash } from 'node:crypto';
import { invalid } from './errors.js';

/**
 * Volume and snapshot IDs are derived from the CSI name alone, so a retried CreateVolume lands on
 * the volume it made before, and the result is always a safe file or LV name:
 *   vol-<slug of the name, ≤48>-<16 hex of sha256(kind, name)>
 * The slug is for people reading `ls` or `lvs`; the hash makes it unique.
 */
export type IdKind = 'vol' | 'snap' | 'group';

const MAX_BYTES = 128;
const ID_RE = { vol: /^vol-[a-z0-9-]{0,48}-[0-9a-f]{16}$/, snap: /^snap-[a-z0-9-]{0,48}-[0-9a-f]{16}$/, group: /^group-[a-z0-9-]{0,48}-[0-9a-f]{16}$/ };
// Characters a CO-supplied ID may carry at all; anything else is hostile, not merely unknown.
const PLAUSIBLE_ID = /^[A-Za-z0-9._:-]+$/;
// '+' is there because COs use it (csi-sanity does); it is safe in LVM tags and in JSON, and IDs never carry it.
const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._+-]*$/;

function slug(name: string): string {
  return name.toLowerCase().replace(/[^a-z0-9]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 48).replace(/-+$/, '');
}

export function idFor(kind: IdKind, name: string): string {
  const hash = createHash('sha256').update(`${kind}\0${name}`).digest('hex').slice(0, 16);
  return `${kind}-${slug(name)}-${hash}`;
}

/**
 * A group snapshot member's ID: `snap--<16 hex>`, the hash of its name with no slug. Members are
 * named from two IDs, whose slug would only repeat them, and names on the pool carry the group too:
 * in a libvirt `logical` pool a member's volume name must leave room for the VG's name within
 * LVM's 127 characters.
 */
export function memberIdFor(name: string): string {
  return `snap--${createHash('sha256').update(`snap\0${name}`).digest('hex').slice(0, 16)}`;
}

/** A CSI name (CreateVolume/CreateSnapshot): required, ≤128 bytes, no path or shell characters. */
export function validateName(field: string, name: string): string {
  if (!name) throw invalid(`${field} is required`);
  if (Buffer.byteLength(name) > MAX_BYTES) throw invalid(`${field} is longer than ${MAX_BYTES} bytes`);
  if (!NAME_RE.test(name) || name.includes('..')) {
    throw invalid(`${field} ${JSON.stringify(name)} may hold only letters, digits, '.', '_', '+' and '-', must start with a letter or digit and must not contain '..'`);
  }
  return name;
}

/**
 * Checks an ID from the CO. Returns it when it is one of ours, null when it is well-formed but
 * cannot be ours (the caller answers NOT_FOUND, or OK for deletes), and throws INVALID_ARGUMENT
 * for an ID that no driver could have issued (empty, too long, path or control characters).
 */
export function parseId(kind: IdKind, field: string, id: string): string | null {
  if (!id) throw invalid(`${field} is required`);
  if (Buffer.byteLength(id) > MAX_BYTES) throw invalid(`${field} is longer than ${MAX_BYTES} bytes`);
  if (!PLAUSIBLE_ID.test(id) || id.includes('..')) throw invalid(`${field} ${JSON.stringify(id)} contains characters no volume or snapshot ID has`);
  return ID_RE[kind].test(id) ? id : null;
}

// A node ID in hypervisor mode: the domain's UUID (what the guest reads from its DMI) or a plain domain name.
const NODE_ID_RE = /^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|[A-Za-z0-9][A-Za-z0-9._-]{0,63})$/i;

export function isNodeId(id: string): boolean {
  return NODE_ID_RE.test(id);
}

export function isId(kind: IdKind, id: string): boolean {
  return ID_RE[kind].test(id);
}
