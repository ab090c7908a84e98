import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import { status } from '@grpc/grpc-js';
import { toStatus } from '../../src/csi/rpc.js';
import { busy, conflict, DriverError, exhausted, internal, invalid, notFound, outOfRange, precondition, unavailable, unsupported, type ErrorKind } from '../../src/errors.js';
import { CommandError } from '../../src/exec.js';
import { PROJECT_ROOT } from '../../src/project.js';

describe('the error seam', () => {
  it('maps every kind to the CSI spec\'s code once, a failed command to INTERNAL or CANCELLED, anything else as unmapped', () => {
    const code = (e: unknown) => status[toStatus(e).code];
    assert.deepEqual(
      [invalid, notFound, conflict, outOfRange, exhausted, precondition, busy, unsupported, unavailable, internal].map((f) => code(f('x'))),
      ['INVALID_ARGUMENT', 'NOT_FOUND', 'ALREADY_EXISTS', 'OUT_OF_RANGE', 'RESOURCE_EXHAUSTED', 'FAILED_PRECONDITION', 'ABORTED', 'UNIMPLEMENTED', 'UNAVAILABLE', 'INTERNAL'],
    );
    assert.equal(code(new DriverError('cancelled' as ErrorKind, 'x')), 'CANCELLED');
    assert.equal(toStatus(notFound('volume v does not exist')).details, 'volume v does not exist');
    assert.deepEqual(toStatus(new CommandError('lvs', [], 5, 'boom', false)), { code: status.INTERNAL, details: 'lvs exited 5: boom', mapped: true });
    assert.equal(code(new CommandError('lvs', [], undefined, '', false, true)), 'CANCELLED');
    assert.deepEqual(toStatus(new Error('secret detail')), { code: status.INTERNAL, details: 'internal error (see the driver log)', mapped: false });
  });

  it('gRPC is spoken in src/csi/ alone', async () => {
    const offenders: string[] = [];
    const walk = async (dir: string): Promise<void> => {
      for (const e of await readdir(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory()) await walk(p);
        else if (p.endsWith('.ts') && !p.includes(`${path.sep}src${path.sep}csi${path.sep}`) && /@grpc\/|grpc\.status|\bstatus\.[A-Z_]{4,}\b/.test(await readFile(p, 'utf8'))) offenders.push(path.relative(PROJECT_ROOT, p));
      }
    };
    await walk(path.join(PROJECT_ROOT, 'src'));
    assert.deepEqual(offenders, []);
  });
});
