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
