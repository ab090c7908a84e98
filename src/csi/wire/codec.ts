/**
 * A proto3 codec for the CSI messages the CLI sends and reads, driven by the flattened descriptor the build
 * writes (scripts/proto-descriptor.mjs, csi-wire.json). It codes exactly as the driver's protobufjs path does
 * with proto-loader's options (keepCase; longs and enums as strings; defaults; oneofs): an object in, the
 * same bytes out; bytes in, the same object out, down to the order of its keys, which JSON output shows
 * (test/unit/wire-codec.test.ts compares the two on every CSI type). It exists because loading protobufjs
 * and building its reflection was half of a `vpool-csi client` call's start (bench/footprint.ts).
 */

export type ScalarKind = 'string' | 'bool' | 'int32' | 'int64' | 'uint32' | 'uint64' | 'double' | 'float' | 'bytes';

export interface FieldInfo {
  name: string;
  id: number;
  kind: ScalarKind | 'enum' | 'message';
  type?: string;
  repeated?: boolean;
  packed?: boolean;
  map?: boolean;
  oneof?: string;
}

export interface WireDescriptor {
  types: Record<string, FieldInfo[]>;
  enums: Record<string, Record<string, number>>;
  services: Record<string, Record<string, { request: string; response: string; responseStream?: boolean }>>;
}

const VARINT = 0;
const FIXED64 = 1;
const LENGTH = 2;
const FIXED32 = 5;

const wireType = (kind: FieldInfo['kind']): number => (kind === 'double' ? FIXED64 : kind === 'float' ? FIXED32 : kind === 'string' || kind === 'bytes' || kind === 'message' ? LENGTH : VARINT);

class Writer {
  private chunks: Buffer[] = [];
  private size = 0;
  push(b: Buffer): void {
    this.chunks.push(b);
    this.size += b.length;
  }
  varint(v: bigint | number): void {
    let n = BigInt.asUintN(64, BigInt(v));
    const out: number[] = [];
    while (n > 0x7fn) {
      out.push(Number(n & 0x7fn) | 0x80);
      n >>= 7n;
    }
    out.push(Number(n));
    this.push(Buffer.from(out));
  }
  tag(id: number, wire: number): void {
    this.varint((id << 3) | wire);
  }
  bytes(b: Buffer): void {
    this.varint(b.length);
    this.push(b);
  }
  finish(): Buffer {
    return Buffer.concat(this.chunks, this.size);
  }
}

class Reader {
  pos = 0;
  constructor(private readonly buf: Buffer, readonly end = buf.length) {}
  varint(): bigint {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (this.pos >= this.end) throw new RangeError('index out of range: a varint runs past the message');
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return BigInt.asUintN(64, result);
      shift += 7n;
      if (shift > 63n) throw new Error('invalid varint encoding');
    }
  }
  take(n: number): Buffer {
    if (this.pos + n > this.end) throw new RangeError(`index out of range: ${this.pos} + ${n} > ${this.end}`);
    const b = this.buf.subarray(this.pos, this.pos + n);
    this.pos += n;
    return b;
  }
  skip(wire: number): void {
    if (wire === VARINT) this.varint();
    else if (wire === FIXED64) this.take(8);
    else if (wire === LENGTH) this.take(Number(this.varint()));
    else if (wire === FIXED32) this.take(4);
    else if (wire === 3) {
      // A group (proto2's): skipped to its end, as protobufjs does.
      for (;;) {
        const t = Number(this.varint());
        if ((t & 7) === 4) return;
        this.skip(t & 7);
      }
    } else throw new Error(`invalid wire type ${wire}`);
  }
}

export class WireCodec {
  constructor(private readonly d: WireDescriptor) {}

  private fields(type: string): FieldInfo[] {
    const f = this.d.types[type];
    if (!f) throw new Error(`no message type ${type}`);
    return f;
  }

  // ---- object → bytes (protobufjs's fromObject then encode) ----

  encode(type: string, obj: object): Buffer {
    const w = new Writer();
    this.encodeInto(w, type, obj as Record<string, unknown>);
    return w.finish();
  }

  private encodeInto(w: Writer, type: string, obj: Record<string, unknown>): void {
    if (typeof obj !== 'object' || obj === null) throw new TypeError(`.${type}: object expected`);
    // protobufjs writes fields in the order of their numbers.
    const fields = [...this.fields(type)].sort((a, b) => a.id - b.id);
    for (const f of fields) {
      const v = obj[f.name];
      if (v === null || v === undefined) continue;
      if (f.map) {
        if (typeof v !== 'object') throw new TypeError(`.${type}.${f.name}: object expected`);
        for (const key of Object.keys(v as object)) {
          const entry = new Writer();
          entry.tag(1, LENGTH);
          entry.bytes(Buffer.from(key, 'utf8'));
          this.encodeValue(entry, 2, f, (v as Record<string, unknown>)[key], type);
          w.tag(f.id, LENGTH);
          w.bytes(entry.finish());
        }
      } else if (f.repeated) {
        if (!Array.isArray(v)) throw new TypeError(`.${type}.${f.name}: array expected`);
        if (!v.length) continue;
        if (f.packed && wireType(f.kind) !== LENGTH) {
          const inner = new Writer();
          for (const x of v) this.scalar(inner, f, x, type);
          w.tag(f.id, LENGTH);
          w.bytes(inner.finish());
        } else for (const x of v) this.encodeValue(w, f.id, f, x, type);
      } else this.encodeValue(w, f.id, f, v, type);
    }
  }

  private encodeValue(w: Writer, id: number, f: FieldInfo, v: unknown, type: string): void {
    if (f.kind === 'enum' && this.enumNumber(f, v) === undefined) return;
    if (f.kind === 'message') {
      if (typeof v !== 'object' || v === null) throw new TypeError(`.${type}.${f.name}: object expected`);
      const inner = new Writer();
      this.encodeInto(inner, f.type!, v as Record<string, unknown>);
      w.tag(id, LENGTH);
      w.bytes(inner.finish());
      return;
    }
    w.tag(id, wireType(f.kind));
    this.scalar(w, f, v, type);
  }

  /** An enum given by name or number, as protobufjs's fromObject takes it; an unknown name is left out, as there. */
  private enumNumber(f: FieldInfo, v: unknown): number | undefined {
    if (typeof v === 'number') return v;
    return this.d.enums[f.type!]![String(v)];
  }

  private scalar(w: Writer, f: FieldInfo, v: unknown, type: string): void {
    switch (f.kind) {
      case 'string':
        w.bytes(Buffer.from(String(v), 'utf8'));
        return;
      case 'bytes':
        w.bytes(typeof v === 'string' ? Buffer.from(v, 'base64') : Buffer.from(v as Uint8Array));
        return;
      case 'bool':
        w.varint(v ? 1 : 0);
        return;
      case 'int32':
        w.varint(BigInt(Number(v) | 0));
        return;
      case 'uint32':
        w.varint(Number(v) >>> 0);
        return;
      case 'enum':
        w.varint(BigInt(this.enumNumber(f, v)! | 0));
        return;
      case 'int64':
      case 'uint64': {
        const n = toBigInt(v);
        if (n === undefined) throw new TypeError(`.${type}.${f.name}: ${JSON.stringify(v)} is not a whole number`);
        w.varint(n);
        return;
      }
      case 'double': {
        const b = Buffer.alloc(8);
        b.writeDoubleLE(Number(v));
        w.push(b);
        return;
      }
      case 'float': {
        const b = Buffer.alloc(4);
        b.writeFloatLE(Number(v));
        w.push(b);
        return;
      }
      default:
        throw new Error(`.${type}.${f.name}: kind ${f.kind as string}`);
    }
  }

  // ---- bytes → object (protobufjs's decode then toObject) ----

  decode(type: string, buf: Buffer): Record<string, unknown> {
    return this.decodeFrom(new Reader(buf), type);
  }

  private decodeFrom(r: Reader, type: string): Record<string, unknown> {
    const fields = this.fields(type);
    const byId = new Map(fields.map((f) => [f.id, f]));
    const got = new Map<string, unknown>();
    while (r.pos < r.end) {
      const raw = r.varint();
      if (raw > 0xffffffffn) throw new Error(`invalid tag ${raw}`);
      const tag = Number(raw);
      const id = tag >>> 3;
      const wire = tag & 7;
      const f = byId.get(id);
      if (!f) {
        r.skip(wire);
        continue;
      }
      if (f.map) {
        const entry = new Reader(r.take(Number(r.varint())));
        let key = '';
        let value: unknown;
        while (entry.pos < entry.end) {
          const t = Number(entry.varint());
          if (t >>> 3 === 1) key = entry.take(Number(entry.varint())).toString('utf8');
          else if (t >>> 3 === 2) value = this.readValue(entry, f, t & 7);
          else entry.skip(t & 7);
        }
        const m = (got.get(f.name) as Record<string, unknown> | undefined) ?? {};
        m[key] = value ?? this.defaultOf(f);
        got.set(f.name, m);
      } else if (f.repeated) {
        const list = (got.get(f.name) as unknown[] | undefined) ?? [];
        if (wire === LENGTH && wireType(f.kind) !== LENGTH) {
          const packed = new Reader(r.take(Number(r.varint())));
          while (packed.pos < packed.end) list.push(this.readValue(packed, f, wireType(f.kind)));
        } else list.push(this.readValue(r, f, wire));
        got.set(f.name, list);
      } else {
        // A oneof keeps its last member set.
        if (f.oneof) for (const other of fields) if (other.oneof === f.oneof && other !== f) got.delete(other.name);
        got.set(f.name, this.readValue(r, f, wire));
      }
    }
    // Keys in protobufjs's toObject order: the defaults of repeated fields, maps, then the other fields
    // outside any oneof; then a oneof's member that is set, with the oneof's name after it.
    const out: Record<string, unknown> = {};
    for (const f of fields) if (f.repeated && !f.oneof) out[f.name] = [];
    for (const f of fields) if (f.map && !f.oneof) out[f.name] = {};
    for (const f of fields) if (!f.repeated && !f.map && !f.oneof) out[f.name] = this.defaultOf(f);
    for (const f of fields) {
      if (!got.has(f.name)) continue;
      out[f.name] = got.get(f.name);
      if (f.oneof) out[f.oneof] = f.name;
    }
    return out;
  }

  private readValue(r: Reader, f: FieldInfo, wire: number): unknown {
    if (wire !== wireType(f.kind)) throw new Error(`field ${f.name}: wire type ${wire}, ${wireType(f.kind)} expected`);
    switch (f.kind) {
      case 'message':
        return this.decodeFrom(new Reader(r.take(Number(r.varint()))), f.type!);
      case 'string':
        return r.take(Number(r.varint())).toString('utf8');
      case 'bytes':
        return Buffer.from(r.take(Number(r.varint())));
      case 'bool':
        return r.varint() !== 0n;
      case 'int32':
        return Number(BigInt.asIntN(32, r.varint()));
      case 'uint32':
        return Number(BigInt.asUintN(32, r.varint()));
      case 'int64':
        return BigInt.asIntN(64, r.varint()).toString();
      case 'uint64':
        return r.varint().toString();
      case 'enum': {
        const n = Number(BigInt.asIntN(32, r.varint()));
        return this.enumName(f, n) ?? n;
      }
      case 'double':
        return r.take(8).readDoubleLE(0);
      case 'float':
        return r.take(4).readFloatLE(0);
    }
  }

  private enumName(f: FieldInfo, n: number): string | undefined {
    const values = this.d.enums[f.type!]!;
    return Object.keys(values).find((k) => values[k] === n);
  }

  private defaultOf(f: FieldInfo): unknown {
    switch (f.kind) {
      case 'message':
        return null;
      case 'string':
        return '';
      case 'bytes':
        return Buffer.alloc(0);
      case 'bool':
        return false;
      case 'int64':
      case 'uint64':
        return '0';
      case 'enum':
        // protobufjs's default for an enum is its first value, named.
        return Object.keys(this.d.enums[f.type!]!)[0];
      default:
        return 0;
    }
  }
}

function toBigInt(v: unknown): bigint | undefined {
  if (typeof v === 'bigint') return v;
  if (typeof v === 'number') return Number.isFinite(v) ? BigInt(Math.trunc(v)) : undefined;
  if (typeof v === 'string' && /^\s*-?[0-9]+\s*$/.test(v)) return BigInt(v.trim());
  if (typeof v === 'object' && v !== null && 'low' in v && 'high' in v) {
    const l = v as { low: number; high: number; unsigned?: boolean };
    return (BigInt(l.high >>> 0) << 32n) | BigInt(l.low >>> 0);
  }
  return undefined;
}
