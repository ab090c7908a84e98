import * as grpc from '@grpc/grpc-js';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import protobuf from 'protobufjs/light.js';
import type { ProtoGrpcType } from '../../gen/csi.js';
import { PROJECT_ROOT } from '../project.js';

export { PROJECT_ROOT };
export const PROTO_PATH = path.join(PROJECT_ROOT, 'proto', 'csi.proto');

/**
 * The CSI services from the descriptor the build writes beside this module (scripts/proto-descriptor.mjs),
 * coded by protobufjs/light as @grpc/proto-loader would code them with the options the types in gen/
 * were made with (keepCase, longs and enums as strings, defaults, oneofs): a message is fromObject'ed
 * and encoded; a received one decoded and toObject'ed. Not parsing the .proto at each start is most of
 * what a `vpool-csi client` call's start costs less (bench/footprint.ts).
 */
const DESCRIPTOR = path.join(PROJECT_ROOT, 'dist', 'src', 'csi', 'csi-descriptor.json');
export const TO_OBJECT: protobuf.IConversionOptions = { longs: String, enums: String, defaults: true, oneofs: true };

let cached: ProtoGrpcType | undefined;

function serviceDefinition(root: protobuf.Root, service: protobuf.Service, pkg: string): grpc.ServiceDefinition {
  const def: Record<string, grpc.MethodDefinition<object, object>> = {};
  for (const m of service.methodsArray) {
    const req = root.lookupType(m.resolvedRequestType?.fullName ?? m.requestType);
    const res = root.lookupType(m.resolvedResponseType?.fullName ?? m.responseType);
    def[m.name] = {
      path: `/${pkg}.${service.name}/${m.name}`,
      requestStream: !!m.requestStream,
      responseStream: !!m.responseStream,
      requestSerialize: (v: object) => Buffer.from(req.encode(req.fromObject(v)).finish()),
      requestDeserialize: (b: Buffer) => req.toObject(req.decode(b), TO_OBJECT),
      responseSerialize: (v: object) => Buffer.from(res.encode(res.fromObject(v)).finish()),
      responseDeserialize: (b: Buffer) => res.toObject(res.decode(b), TO_OBJECT),
      originalName: m.name.charAt(0).toLowerCase() + m.name.slice(1),
    } as grpc.MethodDefinition<object, object>;
  }
  return def;
}

/** The CSI types as the driver codes them (and the CLI's own codec is compared with: test/unit/wire-codec.test.ts). */
export function csiRoot(): protobuf.Root {
  const root = protobuf.Root.fromJSON(JSON.parse(readFileSync(DESCRIPTOR, 'utf8')) as protobuf.INamespace);
  root.resolveAll();
  return root;
}

export function loadCsi(): ProtoGrpcType {
  if (cached) return cached;
  const root = csiRoot();
  const v1 = root.lookup('csi.v1') as protobuf.Namespace;
  const services: Record<string, grpc.ServiceClientConstructor> = {};
  for (const s of v1.nestedArray) if (s instanceof protobuf.Service) services[s.name] = grpc.makeGenericClientConstructor(serviceDefinition(root, s, 'csi.v1'), s.name);
  cached = { csi: { v1: services } } as unknown as ProtoGrpcType;
  return cached;
}
