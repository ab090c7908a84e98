// The CLI's own proto3 codec (src/csi/wire/codec.ts) against the driver's (protobufjs/light with proto-loader's
// options, src/csi/proto.ts), on every CSI message type: the same bytes for the same object, and the same
// object, keys in the same order, for the same bytes.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, it } from 'node:test';
import protobuf from 'protobufjs/light.js';
import { csiRoot, PROJECT_ROOT, TO_OBJECT } from '../../src/csi/proto.js';
import { WireCodec, type FieldInfo, type WireDescriptor } from '../../src/csi/wire/codec.js';

const descriptor = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'dist', 'src', 'csi', 'csi-wire.json'), 'utf8')) as WireDescriptor;
const codec = new WireCodec(descriptor);
const root = csiRoot();

function theirs(type: string) {
  return root.lookupType(type);
}
const theirBytes = (type: string, obj: object) => Buffer.from(theirs(type).encode(theirs(type).fromObject(obj)).finish());
const theirObject = (type: string, bytes: Buffer) => theirs(type).toObject(theirs(type).decode(bytes), TO_OBJECT);

/** Every field set (each oneof to its `variant`-th member), values at the edges of their kinds. */
function sample(type: string, variant: number, depth = 0): Record<string, unknown> {
  const fields = descriptor.types[type]!;
  const oneofs = [...new Set(fields.filter((f) => f.oneof).map((f) => f.oneof!))];
  const chosen = new Set(oneofs.map((o) => { const members = fields.filter((f) => f.oneof === o); return members[variant % members.length]!.name; }));
  const out: Record<string, unknown> = {};
  for (const f of fields) {
    if (f.oneof && !chosen.has(f.name)) continue;
    if (f.kind === 'message' && depth >= 4) continue;
    const one = (i: number) => value(f, i, variant, depth);
    out[f.name] = f.map ? { a: one(0), 'k/é 2': one(1) } : f.repeated ? [one(0), one(1)] : one(0);
  }
  return out;
}
function value(f: FieldInfo, i: number, variant: number, depth: number): unknown {
  switch (f.kind) {
    case 'string': return `${f.name}-${i}-é✓`;
    case 'bytes': return Buffer.from([0, 1, 255, i]);
    case 'bool': return true;
    case 'int32': return -7 - i;
    case 'uint32': return 4_000_000_000 + i;
    case 'int64': return i ? '-9007199254740993' : '9223372036854775807';
    case 'uint64': return i ? '18446744073709551615' : '0';
    case 'double': return 1.5 + i;
    case 'float': return 0.25 + i;
    case 'enum': { const names = Object.keys(descriptor.enums[f.type!]!); return names[(variant + i + 1) % names.length]; }
    case 'message': return sample(f.type!, variant + i, depth + 1);
  }
}

/** deepEqual, and the same key order at every level (JSON output shows it). */
function sameShape(a: unknown, b: unknown, at = '$'): void {
  assert.deepStrictEqual(a, b, at);
  if (a && typeof a === 'object' && !Buffer.isBuffer(a)) {
    assert.deepEqual(Object.keys(a), Object.keys(b as object), `key order at ${at}`);
    for (const k of Object.keys(a)) sameShape((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k], `${at}.${k}`);
  }
}

const types = Object.keys(descriptor.types);

describe('the CLI codec beside protobufjs (the driver\'s)', () => {
  it('covers every message type of the descriptor', () => {
    assert.ok(types.length > 100, `${types.length} types`);
    for (const t of types) assert.ok(theirs(t), t);
  });
  for (const type of types) {
    it(type, () => {
      const variants = Math.max(1, ...descriptor.types[type]!.filter((f) => f.oneof).map((f) => descriptor.types[type]!.filter((g) => g.oneof === f.oneof).length));
      for (const obj of [{}, ...Array.from({ length: variants }, (_, v) => sample(type, v))]) {
        const mine = codec.encode(type, obj);
        assert.deepEqual(mine, theirBytes(type, obj), 'the same bytes');
        sameShape(codec.decode(type, mine), theirObject(type, mine));
      }
    });
  }
  it('reads an enum number it does not know as the number, and skips unknown fields', () => {
    const w = protobuf.Writer.create();
    w.uint32((1 << 3) | 0).int32(42); // csi.v1.VolumeCapability.AccessMode.mode = 42
    w.uint32((9 << 3) | 2).string('from a newer driver');
    const bytes = Buffer.from(w.finish());
    sameShape(codec.decode('csi.v1.VolumeCapability.AccessMode', bytes), theirObject('csi.v1.VolumeCapability.AccessMode', bytes));
    assert.deepEqual(codec.decode('csi.v1.VolumeCapability.AccessMode', bytes), { mode: 42 });
  });
  it('codes packed repeated numbers as protobufjs does (no CSI field has one yet)', () => {
    const json = { nested: { t: { nested: { P: { fields: { n: { rule: 'repeated', type: 'int32', id: 1 }, e: { rule: 'repeated', type: 'E', id: 2 } } }, E: { values: { Z: 0, A: 1, B: 2 } } } } } };
    const r = protobuf.Root.fromJSON(json);
    r.resolveAll();
    const P = r.lookupType('t.P');
    const c = new WireCodec({ types: { 't.P': [{ name: 'n', id: 1, kind: 'int32', repeated: true, packed: true }, { name: 'e', id: 2, kind: 'enum', type: 't.E', repeated: true, packed: true }] }, enums: { 't.E': { Z: 0, A: 1, B: 2 } }, services: {} });
    const obj = { n: [1, -2, 300], e: ['B', 'A'] };
    const bytes = Buffer.from(P.encode(P.fromObject(obj)).finish());
    assert.deepEqual(c.encode('t.P', obj), bytes);
    assert.deepEqual(c.decode('t.P', bytes), P.toObject(P.decode(bytes), TO_OBJECT));
  });
  it('refuses what protobufjs refuses, and a truncated message', () => {
    assert.throws(() => codec.encode('csi.v1.CreateVolumeRequest', { capacity_range: 'big' }), /object expected/);
    assert.throws(() => codec.encode('csi.v1.CreateVolumeRequest', { volume_capabilities: {} }), /array expected/);
    assert.throws(() => codec.encode('csi.v1.CapacityRange', { required_bytes: '5Gi' }), /not a whole number/);
    const bytes = codec.encode('csi.v1.CreateVolumeRequest', { name: 'a-long-enough-name' });
    assert.throws(() => codec.decode('csi.v1.CreateVolumeRequest', bytes.subarray(0, bytes.length - 3)), /out of range/);
  });
});
