/**
 * A CSI response as proto3's JSON mapping writes it, for `-o json` and `-o yaml`: lowerCamelCase field
 * names (volumeId, capacityBytes), a Timestamp as RFC 3339, a wrapper (Int64Value) as its value, 64-bit
 * integers as strings, enums by name, unset messages left out. Scalars at their default are kept, so a
 * script reading .readyToUse always finds it. The grpc-js objects carry proto-loader's virtual oneof
 * fields (`type: 'snapshot'` beside `snapshot: {...}`): those are not fields, and are dropped.
 */
const MAPS = new Set(['volume_context', 'segments', 'publish_context', 'parameters', 'secrets', 'mutable_parameters', 'manifest']);

export function protoJson(value: unknown): unknown {
  return convert(value);
}

function convert(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(convert);
  if (value === null || typeof value !== 'object') return value;
  const o = value as Record<string, unknown>;
  const keys = Object.keys(o);
  if (keys.length === 2 && 'seconds' in o && 'nanos' in o) return rfc3339(Number(o.seconds), Number(o.nanos));
  if (keys.length === 1 && keys[0] === 'value') return o.value;
  const out: Record<string, unknown> = {};
  for (const k of keys) {
    const v = o[k];
    if (v === null || v === undefined) continue;
    if (typeof v === 'string' && o[v] !== null && typeof o[v] === 'object' && !Array.isArray(o[v])) continue; // a oneof's virtual field
    out[camel(k)] = MAPS.has(k) ? { ...(v as object) } : convert(v);
  }
  return out;
}

function camel(name: string): string {
  return name.replace(/_([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** proto3 JSON's Timestamp: UTC, "Z", and 0, 3, 6 or 9 fractional digits. */
export function rfc3339(seconds: number, nanos: number): string {
  const base = new Date(seconds * 1000).toISOString().slice(0, 19);
  if (!nanos) return `${base}Z`;
  const frac = String(nanos).padStart(9, '0');
  const digits = frac.endsWith('000000') ? 3 : frac.endsWith('000') ? 6 : 9;
  return `${base}.${frac.slice(0, digits)}Z`;
}
