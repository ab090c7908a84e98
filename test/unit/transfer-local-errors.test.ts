import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DriverError, unavailable } from '../../src/errors.js';
import { localWriteError } from '../../src/driver/transfer.js';

const sysError = (code: string) => Object.assign(new Error(`${code}: write`), { code });

// A restore that fails on the receiver's own disk is not the network's fault: the CO must not be told
// to retry it as UNAVAILABLE (an EIO, a full disk). src/csi/rpc.ts maps the kinds to gRPC codes.
describe("the receiver's own write failures", () => {
  it('no room (ENOSPC, EDQUOT) is exhausted (RESOURCE_EXHAUSTED), naming the errno', () => {
    for (const code of ['ENOSPC', 'EDQUOT']) {
      const e = localWriteError(sysError(code));
      assert.equal(e.kind, 'exhausted');
      assert.match(e.message, new RegExp(code));
    }
  });

  it('EIO and any other failure of the disk is internal (INTERNAL), not unavailable', () => {
    for (const code of ['EIO', 'EROFS']) assert.equal(localWriteError(sysError(code)).kind, 'internal');
    assert.equal(localWriteError(new Error('odd')).kind, 'internal');
  });

  it('a DriverError already carries its kind', () => {
    const e = unavailable('x');
    assert.equal(localWriteError(e), e);
    assert.ok(localWriteError(e) instanceof DriverError);
  });
});
