import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CommandError } from '../../src/exec.js';
import { parseLvAttr } from '../../src/pool/lvm/lv-attr.js';
import { lvmFailure } from '../../src/pool/lvm/lvm-errors.js';
import { pvReadTimeoutMs } from '../../src/pool/lvm/lvm-cli.js';

describe('lvm output, typed', () => {
  it('reads lv_attr into named fields (lvs(8)): thin volumes, pools, open, health', () => {
    assert.deepEqual(parseLvAttr('Vwi-aotz--'), { volumeType: 'V', permissions: 'writable', state: 'active', open: true, health: null });
    assert.deepEqual(parseLvAttr('-wi-------'), { volumeType: '-', permissions: 'writable', state: 'inactive', open: false, health: null });
    assert.equal(parseLvAttr('twi-aotzD-').health, 'D', 'a thin pool out of data space');
    assert.equal(parseLvAttr('-wi-a---X-').health, null, 'X is unknown, not unhealthy');
    assert.equal(parseLvAttr('-ri-s-----').state, 'suspended');
    assert.equal(parseLvAttr('-ri-s-----').permissions, 'read-only');
    assert.equal(parseLvAttr(undefined).state, 'inactive');
  });

  it('classifies lvm failures in one place, by what lvm says (it exits 5 for nearly all of them)', () => {
    const failed = (stderr: string) => new CommandError('lvcreate', [], 5, stderr, false);
    assert.equal(lvmFailure(failed('  Volume group "vg" has insufficient free space (3 extents): 25 required.')), 'no-space');
    assert.equal(lvmFailure(failed('  Thin pool capacity 1.00 GiB would exceed ... ')), 'no-space');
    assert.equal(lvmFailure(failed('  Failed to find logical volume "vg/vol-x"')), 'not-found');
    assert.equal(lvmFailure(failed('  Logical volume vg/vol-x contains a filesystem in use.')), 'other');
    assert.equal(lvmFailure(failed("  Can't create snapshot without using device-mapper kernel driver.")), 'no-device-mapper');
    assert.equal(lvmFailure(new CommandError('lvremove', [], undefined, 'Failed to find logical volume', false, true)), 'other', 'a cancelled command is not an answer');
    assert.equal(lvmFailure(new Error('x')), 'other');
  });
});

describe('the PV header read deadline', () => {
  it('is 2 s unless $VPOOL_PV_READ_TIMEOUT_MS says otherwise; a value out of range or not a whole number is refused', () => {
    assert.equal(pvReadTimeoutMs({}), 2_000);
    assert.equal(pvReadTimeoutMs({ VPOOL_PV_READ_TIMEOUT_MS: '' }), 2_000);
    assert.equal(pvReadTimeoutMs({ VPOOL_PV_READ_TIMEOUT_MS: '30000' }), 30_000);
    for (const bad of ['99', '600001', '1.5', '2s', '-1', 'abc']) assert.throws(() => pvReadTimeoutMs({ VPOOL_PV_READ_TIMEOUT_MS: bad }), /VPOOL_PV_READ_TIMEOUT_MS must be a whole number of milliseconds from 100 to 600000/);
  });
});
