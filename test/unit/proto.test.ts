import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { it } from 'node:test';
import { PROJECT_ROOT, PROTO_PATH } from '../../src/csi/proto.js';

const checker = path.join(PROJECT_ROOT, '..', 'shared', 'csi-spec', 'check-proto.mjs');

it('proto/csi.proto is wire-compatible with CSI v1.12.0', { skip: existsSync(checker) ? false : '../shared is absent' }, () => {
  const out = execFileSync(process.execPath, [checker, PROTO_PATH], { cwd: PROJECT_ROOT, encoding: 'utf8' });
  assert.match(out, /^wire-compatible with CSI v1\.12\.0/m);
});
