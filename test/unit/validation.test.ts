import assert from 'node:assert/strict';
import { status } from '@grpc/grpc-js';
import { describe, it } from 'node:test';
import { capabilityProblem, parseCapability } from '../../src/csi/capabilities.js';
import { HYPERVISOR_ACCESS, NODE_LOCAL_ACCESS } from '../../src/driver/access.js';
import { idFor, isId, parseId, validateName } from '../../src/ids.js';
import { paginate } from '../../src/csi/pagination.js';
import { parseVolumeParameters } from '../../src/driver/parameters.js';
import { chooseFilesystem } from '../../src/driver/filesystem-choice.js';
import { parseRange } from '../../src/csi/sizing.js';
import { chooseSize, fitsRange } from '../../src/driver/sizing.js';
import { DriverError } from '../../src/errors.js';
import { toStatus } from '../../src/csi/rpc.js';

const MiB = 1024 * 1024;
const code = (fn: () => unknown): string => {
  try {
    fn();
    return 'OK';
  } catch (err) {
    return err instanceof DriverError ? status[toStatus(err).code] : `not a DriverError: ${String(err)}`;
  }
};

describe('IDs and names', () => {
  it('derives the same safe ID from the same name, and different IDs from different names', () => {
    assert.equal(idFor('vol', 'pvc-1'), idFor('vol', 'pvc-1'));
    assert.notEqual(idFor('vol', 'pvc-1'), idFor('vol', 'PVC-1'));
    assert.notEqual(idFor('vol', 'x'), idFor('snap', 'x'));
    const long = idFor('vol', 'a'.repeat(128));
    assert.ok(long.length <= 128 && isId('vol', long));
    assert.match(idFor('vol', 'pvc-2f9e.A_b'), /^vol-pvc-2f9e-a-b-[0-9a-f]{16}$/);
  });
  it('refuses hostile names with INVALID_ARGUMENT', () => {
    for (const bad of ['', '..', 'a/b', '../etc', 'a\0b', 'x'.repeat(129), 'a;rm -rf /', '$(reboot)', '`id`', 'a b', '-rf', '.hidden']) {
      assert.equal(code(() => validateName('name', bad)), 'INVALID_ARGUMENT', JSON.stringify(bad));
    }
    assert.equal(validateName('name', 'pvc-0a1b.c_d'), 'pvc-0a1b.c_d');
    assert.equal(validateName('name', 'sanity-vol+1-EB742158'), 'sanity-vol+1-EB742158');
    assert.match(idFor('vol', 'sanity-vol+1-EB742158'), /^vol-sanity-vol-1-eb742158-[0-9a-f]{16}$/);
  });
  it('tells a foreign ID (null) from a hostile one (INVALID_ARGUMENT)', () => {
    assert.equal(parseId('vol', 'volume_id', 'reallyfakevolumeid'), null);
    assert.equal(parseId('vol', 'volume_id', idFor('snap', 'x')), null);
    const id = idFor('vol', 'x');
    assert.equal(parseId('vol', 'volume_id', id), id);
    for (const bad of ['', '../../etc/passwd', 'vol/../x', 'a\0', 'v'.repeat(129), 'x;y', 'x y', '..']) {
      assert.equal(code(() => parseId('vol', 'volume_id', bad)), 'INVALID_ARGUMENT', JSON.stringify(bad));
    }
  });
});

describe('sizing', () => {
  it('rounds up to 1 MiB within the range and uses the default without one', () => {
    assert.equal(chooseSize(parseRange({ required_bytes: '1', limit_bytes: '0' })), MiB);
    assert.equal(chooseSize(parseRange({ required_bytes: String(MiB + 1), limit_bytes: '0' })), 2 * MiB);
    assert.equal(chooseSize(parseRange(null)), 1024 * MiB);
    assert.equal(chooseSize(parseRange({ required_bytes: '0', limit_bytes: String(10 * MiB + 5) })), 10 * MiB);
    assert.equal(chooseSize(parseRange({ required_bytes: String(3 * MiB), limit_bytes: String(3 * MiB) })), 3 * MiB);
  });
  it('answers OUT_OF_RANGE when no aligned size fits, INVALID_ARGUMENT for nonsense', () => {
    assert.equal(code(() => chooseSize(parseRange({ required_bytes: String(MiB + 1), limit_bytes: String(MiB + 100) }))), 'OUT_OF_RANGE');
    assert.equal(code(() => chooseSize(parseRange({ required_bytes: '0', limit_bytes: '100' }))), 'OUT_OF_RANGE');
    assert.equal(code(() => parseRange({ required_bytes: '-1', limit_bytes: '0' })), 'INVALID_ARGUMENT');
    assert.equal(code(() => parseRange({ required_bytes: String(2n ** 63n - 1n), limit_bytes: '0' })), 'OUT_OF_RANGE');
    assert.equal(code(() => parseRange({ required_bytes: String(-(2n ** 63n)), limit_bytes: '0' })), 'INVALID_ARGUMENT');
    assert.equal(code(() => parseRange({ required_bytes: '10', limit_bytes: '5' })), 'INVALID_ARGUMENT');
    assert.equal(code(() => chooseSize(parseRange({ required_bytes: String(2 ** 51), limit_bytes: '0' }))), 'OUT_OF_RANGE');
  });
  it('accepts an existing size inside the range only', () => {
    assert.equal(fitsRange(10, { required: 5, limit: 0 }), true);
    assert.equal(fitsRange(10, { required: 5, limit: 9 }), false);
    assert.equal(fitsRange(4, { required: 5, limit: 0 }), false);
  });
});

describe('capabilities and parameters', () => {
  it('accepts single-node modes for mount and block, and multi-node read-only for block only', () => {
    for (const mode of ['SINGLE_NODE_WRITER', 'SINGLE_NODE_READER_ONLY', 'SINGLE_NODE_SINGLE_WRITER', 'SINGLE_NODE_MULTI_WRITER'] as const) {
      assert.equal(capabilityProblem({ mount: { fs_type: 'ext4', mount_flags: [], volume_mount_group: '' }, access_mode: { mode }, access_type: 'mount' }, NODE_LOCAL_ACCESS), null);
      assert.equal(capabilityProblem({ block: {}, access_mode: { mode }, access_type: 'block' }, NODE_LOCAL_ACCESS), null);
    }
    assert.equal(capabilityProblem({ block: {}, access_mode: { mode: 'MULTI_NODE_READER_ONLY' }, access_type: 'block' }, NODE_LOCAL_ACCESS), null);
    assert.match(capabilityProblem({ mount: { fs_type: '', mount_flags: [], volume_mount_group: '' }, access_mode: { mode: 'MULTI_NODE_READER_ONLY' }, access_type: 'mount' }, NODE_LOCAL_ACCESS) ?? '', /not supported/);
    for (const mode of ['MULTI_NODE_MULTI_WRITER', 'MULTI_NODE_SINGLE_WRITER', 'UNKNOWN'] as const) {
      assert.notEqual(capabilityProblem({ block: {}, access_mode: { mode }, access_type: 'block' }, NODE_LOCAL_ACCESS), null, mode);
    }
  });
  it('allows MULTI_NODE_MULTI_WRITER for raw block volumes in hypervisor mode only', () => {
    const block = { block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' as const }, access_type: 'block' as const };
    const mount = { mount: { fs_type: 'ext4', mount_flags: [], volume_mount_group: '' }, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' as const }, access_type: 'mount' as const };
    assert.equal(capabilityProblem(block, HYPERVISOR_ACCESS), null);
    assert.match(capabilityProblem(block, NODE_LOCAL_ACCESS) ?? '', /not supported/);
    assert.match(capabilityProblem(mount, HYPERVISOR_ACCESS) ?? '', /single-node filesystems.*corrupted.*block access/);
    assert.match(capabilityProblem(mount, NODE_LOCAL_ACCESS) ?? '', /single-node filesystems/);
    assert.equal(capabilityProblem({ ...block, access_mode: { mode: 'MULTI_NODE_SINGLE_WRITER' as const } }, HYPERVISOR_ACCESS) !== null, true);
  });
  it('refuses unknown filesystems and mount flags that could smuggle options', () => {
    const mount = (fs_type: string, mount_flags: string[]) => ({ mount: { fs_type, mount_flags, volume_mount_group: '' }, access_mode: { mode: 'SINGLE_NODE_WRITER' as const }, access_type: 'mount' as const });
    assert.match(capabilityProblem(mount('btrfs', []), NODE_LOCAL_ACCESS) ?? '', /btrfs/);
    assert.match(capabilityProblem(mount('ext4', ['noatime,suid']), NODE_LOCAL_ACCESS) ?? '', /characters/);
    assert.match(capabilityProblem(mount('ext4', ['bind']), NODE_LOCAL_ACCESS) ?? '', /not allowed/);
    assert.match(capabilityProblem(mount('ext4', ['x;reboot']), NODE_LOCAL_ACCESS) ?? '', /characters/);
    assert.deepEqual(parseCapability(mount('xfs', ['noatime']), NODE_LOCAL_ACCESS), { access: 'mount', mode: 'SINGLE_NODE_WRITER', readOnly: false, fsType: 'xfs', mountFlags: ['noatime'] });
    assert.equal(code(() => parseCapability(null, NODE_LOCAL_ACCESS)), 'INVALID_ARGUMENT');
  });
  it('names the unknown parameter, and accepts the provisioner\'s own keys', () => {
    assert.deepEqual(parseVolumeParameters({ fsType: 'xfs', 'csi.storage.k8s.io/pvc/name': 'data', 'csi.storage.k8s.io/pvc/namespace': 'apps' }, {}), { backend: {}, mutable: {}, fsType: 'xfs', pvcName: 'data', pvcNamespace: 'apps' });
    assert.throws(() => parseVolumeParameters({ thinPool: 'x' }, {}), /unknown parameter "thinPool" \(supported: csi\.storage\.k8s\.io\/fstype, fsType\)/);
    assert.throws(() => parseVolumeParameters({ fsType: 'ntfs' }, {}), /ntfs/);
    const spec = { type: (v: string) => (['thin', 'thick'].includes(v) ? null : 'use thin or thick') };
    assert.deepEqual(parseVolumeParameters({ type: 'thick' }, spec).backend, { type: 'thick' });
    assert.throws(() => parseVolumeParameters({ type: 'fat' }, spec), /type="fat": use thin or thick/);
    assert.throws(() => parseVolumeParameters({ toString: 'x' }, spec), /unknown parameter "toString"/);
  });
  // external-provisioner (pkg/controller/controller.go, Provision): a key equal to "fstype" in any case is
  // the legacy spelling; its value goes into the capability's fs_type AND the key is passed on as a
  // parameter (removePrefixedParameters strips only csi.storage.k8s.io/ keys); both spellings in one
  // class are refused there ("fstype specified in parameters with both ...").
  it("takes the class's filesystem in every spelling external-provisioner does, and refuses it given twice", () => {
    for (const key of ['fsType', 'fstype', 'FSType', 'FSTYPE', 'csi.storage.k8s.io/fstype']) assert.equal(parseVolumeParameters({ [key]: 'xfs' }, {}).fsType, 'xfs', key);
    assert.throws(() => parseVolumeParameters({ fsType: 'xfs', fstype: 'xfs' }, {}), /both/);
    assert.throws(() => parseVolumeParameters({ fsType: 'ext4', 'csi.storage.k8s.io/fstype': 'ext4' }, {}), /use csi\.storage\.k8s\.io\/fstype alone/);
    assert.throws(() => parseVolumeParameters({ FSTYPE: 'btrfs' }, {}), /FSTYPE="btrfs" is not supported/);
  });
  it("makes the capability's fs_type the volume's filesystem; a legacy class key must agree with it", () => {
    const mount = (fsType: '' | 'ext4' | 'xfs') => ({ access: 'mount' as const, mode: 'SINGLE_NODE_WRITER' as const, readOnly: false, fsType, mountFlags: [] });
    const block = { access: 'block' as const, mode: 'SINGLE_NODE_WRITER' as const, readOnly: false };
    assert.equal(chooseFilesystem([mount('xfs')], undefined), 'xfs');
    assert.equal(chooseFilesystem([mount('xfs')], 'xfs'), 'xfs');
    assert.equal(chooseFilesystem([mount('')], 'xfs'), 'xfs', 'the legacy key alone still works');
    assert.equal(chooseFilesystem([mount('')], undefined), undefined);
    assert.equal(chooseFilesystem([block], 'ext4'), 'ext4');
    assert.equal(code(() => chooseFilesystem([mount('ext4')], 'xfs')), 'INVALID_ARGUMENT');
    assert.throws(() => chooseFilesystem([mount('ext4')], 'xfs'), /fsType=xfs disagrees with the volume capability's fs_type ext4/);
    assert.throws(() => chooseFilesystem([mount('ext4'), mount('xfs')], undefined), /different filesystems/);
  });
});

describe('pagination', () => {
  const items = ['a1', 'a2', 'a3', 'a4', 'a5'];
  const valid = (k: string) => /^a[0-9]$/.test(k);
  it('pages by key and ends with an empty token', () => {
    const p1 = paginate(items, (x) => x, 2, '', valid);
    assert.deepEqual(p1, { page: ['a1', 'a2'], nextToken: 'a2' });
    const p2 = paginate(items, (x) => x, 2, p1.nextToken, valid);
    assert.deepEqual(p2, { page: ['a3', 'a4'], nextToken: 'a4' });
    assert.deepEqual(paginate(items, (x) => x, 2, p2.nextToken, valid), { page: ['a5'], nextToken: '' });
    assert.deepEqual(paginate(items, (x) => x, 0, '', valid).page.length, 5);
  });
  it('orders by code unit whatever order the backend lists in', () => {
    const ids = ['vol-pvc-second-f', 'vol-filler-8', 'vol-pvc-one-f'];
    const p1 = paginate(ids, (x) => x, 2, '', () => true);
    const p2 = paginate(ids, (x) => x, 2, p1.nextToken, () => true);
    assert.deepEqual([...p1.page, ...p2.page], ['vol-filler-8', 'vol-pvc-one-f', 'vol-pvc-second-f']);
  });
  it('keeps its place when the item behind the token is deleted', () => {
    assert.deepEqual(paginate(['a1', 'a3', 'a4'], (x) => x, 2, 'a2', valid).page, ['a3', 'a4']);
  });
  it('answers ABORTED for a token it never issued, INVALID_ARGUMENT for a negative max', () => {
    assert.equal(code(() => paginate(items, (x) => x, 1, 'invalid-token', valid)), 'ABORTED');
    assert.equal(code(() => paginate(items, (x) => x, -1, '', valid)), 'INVALID_ARGUMENT');
  });
});
