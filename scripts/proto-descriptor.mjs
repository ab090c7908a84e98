#!/usr/bin/env node
// proto/csi.proto as protobufjs's JSON descriptor, beside the compiled code (dist/src/csi/csi-descriptor.json):
// the driver and the CLI load it with protobufjs/light instead of parsing the .proto at every start
// (measured: proto-loader and the parse cost 125 ms of a client call's start, the descriptor 60 ms).
// Field names as written in the .proto (keepCase), as the types in gen/ are.
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import protobuf from 'protobufjs';

const root = process.cwd();
const out = path.join(root, 'dist', 'src', 'csi', 'csi-descriptor.json');
const parsed = new protobuf.Root().loadSync(path.join(root, 'proto', 'csi.proto'), { keepCase: true });
mkdirSync(path.dirname(out), { recursive: true });
writeFileSync(out, JSON.stringify(parsed.toJSON({ keepComments: false })));

// The same types flattened for the CLI's own proto3 codec (src/csi/wire/codec.ts), every name resolved here
// by protobufjs: a `vpool-csi client` start reads this small file instead of loading protobufjs and
// building its reflection (bench/footprint.ts).
parsed.resolveAll();
const types = {};
const enums = {};
const services = {};
const SCALARS = new Set(['string', 'bool', 'int32', 'int64', 'uint32', 'uint64', 'double', 'float', 'bytes']);
const name = (t) => t.fullName.replace(/^\./, '');
(function walk(ns) {
  for (const x of ns.nestedArray) {
    if (x instanceof protobuf.Type) {
      types[name(x)] = x.fieldsArray.map((f) => {
        const kind = f.resolvedType instanceof protobuf.Enum ? 'enum' : f.resolvedType instanceof protobuf.Type ? 'message' : f.type;
        if (!['enum', 'message'].includes(kind) && !SCALARS.has(kind)) throw new Error(`${name(x)}.${f.name}: type ${f.type} is not one the CLI's codec knows`);
        if (f.map && f.keyType !== 'string') throw new Error(`${name(x)}.${f.name}: map keys of type ${f.keyType} are not ones the CLI's codec knows`);
        return { name: f.name, id: f.id, kind, ...(f.resolvedType ? { type: name(f.resolvedType) } : {}), ...(f.repeated ? { repeated: true, packed: !!f.packed } : {}), ...(f.map ? { map: true } : {}), ...(f.partOf ? { oneof: f.partOf.name } : {}) };
      });
    } else if (x instanceof protobuf.Enum) {
      enums[name(x)] = x.values;
    } else if (x instanceof protobuf.Service) {
      services[name(x)] = Object.fromEntries(x.methodsArray.map((m) => [m.name, { request: name(m.resolvedRequestType), response: name(m.resolvedResponseType), ...(m.responseStream ? { responseStream: true } : {}) }]));
    }
    if (x.nestedArray) walk(x);
  }
})(parsed);
writeFileSync(path.join(path.dirname(out), 'csi-wire.json'), JSON.stringify({ types, enums, services }));
