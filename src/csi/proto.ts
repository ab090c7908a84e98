import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import path from 'node:path';
import type { ProtoGrpcType } from '../../gen/csi.js';
import { PROJECT_ROOT } from '../project.js';

export { PROJECT_ROOT };
export const PROTO_PATH = path.join(PROJECT_ROOT, 'proto', 'csi.proto');

// These options are the ones the generated types in gen/ were made with (package.json "gen").
const LOADER_OPTIONS: protoLoader.Options = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

let cached: ProtoGrpcType | undefined;

export function loadCsi(): ProtoGrpcType {
  cached ??= grpc.loadPackageDefinition(protoLoader.loadSync(PROTO_PATH, LOADER_OPTIONS)) as unknown as ProtoGrpcType;
  return cached;
}
