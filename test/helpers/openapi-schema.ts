/**
 * What the Kubernetes API server does with a CRD's structural openAPIV3Schema on every write, for
 * the fake API server: applies defaults, prunes unknown fields, and validates the keywords our CRD
 * uses (type, enum, pattern, minimum/maximum, min/max length and items, required, nullable,
 * additionalProperties as a map schema). CEL rules (x-kubernetes-validations) are not evaluated;
 * the CRD uses none. Returns the causes of rejection, like the field errors of a 422.
 */
export interface Schema {
  type?: 'object' | 'array' | 'string' | 'integer' | 'number' | 'boolean';
  description?: string;
  properties?: Record<string, Schema>;
  additionalProperties?: Schema | boolean;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  pattern?: string;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  nullable?: boolean;
  default?: unknown;
  format?: string;
  'x-kubernetes-preserve-unknown-fields'?: boolean;
  'x-kubernetes-int-or-string'?: boolean;
  'x-kubernetes-list-type'?: string;
  'x-kubernetes-list-map-keys'?: string[];
}

/** Structural: every node says its type (or is int-or-string / preserve-unknown-fields). */
export function structuralProblems(s: Schema, at = ''): string[] {
  const out: string[] = [];
  if (!s.type && !s['x-kubernetes-int-or-string'] && !s['x-kubernetes-preserve-unknown-fields']) out.push(`${at || '<root>'}: no type`);
  for (const [k, v] of Object.entries(s.properties ?? {})) out.push(...structuralProblems(v, `${at}.${k}`));
  if (s.items) out.push(...structuralProblems(s.items, `${at}[]`));
  if (typeof s.additionalProperties === 'object') out.push(...structuralProblems(s.additionalProperties, `${at}.*`));
  return out;
}

/** Defaults and prunes in place (returns the new value), then lists the violations. */
export function admit(schema: Schema, value: unknown, at = ''): { value: unknown; causes: string[] } {
  const causes: string[] = [];
  const v = walk(schema, value, at, causes);
  return { value: v, causes };
}

function walk(s: Schema, v: unknown, at: string, causes: string[]): unknown {
  const field = at || '<root>';
  if (v === null) {
    if (!s.nullable) causes.push(`${field}: Invalid value: null`);
    return v;
  }
  if (s['x-kubernetes-int-or-string']) {
    if (typeof v !== 'string' && !Number.isInteger(v)) causes.push(`${field}: must be an integer or a string`);
    return v;
  }
  switch (s.type) {
    case 'object': {
      if (typeof v !== 'object' || Array.isArray(v)) {
        causes.push(`${field}: Invalid value: must be an object`);
        return v;
      }
      const o = { ...(v as Record<string, unknown>) };
      for (const [k, sub] of Object.entries(s.properties ?? {})) if (o[k] === undefined && sub.default !== undefined) o[k] = structuredClone(sub.default);
      for (const r of s.required ?? []) if (o[r] === undefined) causes.push(`${at}.${r}: Required value`);
      for (const k of Object.keys(o)) {
        if (o[k] === undefined) {
          delete o[k];
          continue;
        }
        if (at === '' && k === 'metadata') continue; // ObjectMeta is the API server's own, never pruned by a CRD schema
        const sub = s.properties?.[k] ?? (typeof s.additionalProperties === 'object' ? s.additionalProperties : undefined);
        if (sub) o[k] = walk(sub, o[k], `${at}.${k}`, causes);
        else if (!s['x-kubernetes-preserve-unknown-fields'] && s.additionalProperties !== true) delete o[k]; // pruned, as the API server does
      }
      return o;
    }
    case 'array': {
      if (!Array.isArray(v)) {
        causes.push(`${field}: Invalid value: must be an array`);
        return v;
      }
      if (s.minItems !== undefined && v.length < s.minItems) causes.push(`${field}: must have at least ${s.minItems} items`);
      if (s.maxItems !== undefined && v.length > s.maxItems) causes.push(`${field}: must have at most ${s.maxItems} items`);
      return s.items ? v.map((x, i) => walk(s.items as Schema, x, `${at}[${i}]`, causes)) : v;
    }
    case 'string':
      if (typeof v !== 'string') causes.push(`${field}: Invalid value: must be a string`);
      else {
        if (s.pattern && !new RegExp(s.pattern, 'u').test(v)) causes.push(`${field}: Invalid value: ${JSON.stringify(v)}: should match '${s.pattern}'`);
        if (s.minLength !== undefined && v.length < s.minLength) causes.push(`${field}: too short`);
        if (s.maxLength !== undefined && v.length > s.maxLength) causes.push(`${field}: too long`);
      }
      break;
    case 'integer':
    case 'number':
      if (typeof v !== 'number' || (s.type === 'integer' && !Number.isInteger(v))) causes.push(`${field}: Invalid value: must be of type ${s.type}`);
      else {
        if (s.minimum !== undefined && v < s.minimum) causes.push(`${field}: Invalid value: ${v}: should be greater than or equal to ${s.minimum}`);
        if (s.maximum !== undefined && v > s.maximum) causes.push(`${field}: Invalid value: ${v}: should be less than or equal to ${s.maximum}`);
      }
      break;
    case 'boolean':
      if (typeof v !== 'boolean') causes.push(`${field}: Invalid value: must be a boolean`);
      break;
  }
  if (s.enum && !s.enum.includes(v)) causes.push(`${field}: Unsupported value: ${JSON.stringify(v)}: supported values: ${s.enum.map((e) => JSON.stringify(e)).join(', ')}`);
  return v;
}
