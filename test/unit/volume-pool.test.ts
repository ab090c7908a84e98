import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ListWatch, Watch } from '@kubernetes/client-node';
import { expandDeviceGlob } from '../../src/cluster/device-glob.js';
import type { Kube } from '../../src/cluster/kube.js';
import { statusOf } from '../../src/cluster/kube.js';
import { humanQuantity, poolSettings, selects, type VolumePool } from '../../src/cluster/volume-pool.js';
import { parseDuration } from '../../src/units.js';
import type { FakeApiServer, KObject } from '../helpers/fake-apiserver.js';
import { eventually, startFakeCluster } from '../helpers/kube.js';

const pool = (name: string, spec: Record<string, unknown>) => ({ apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name }, spec }) as unknown as VolumePool;
const api = { group: 'vpool.dev', version: 'v1alpha1', plural: 'volumepools' };

describe('VolumePool spec', () => {
  it('fills the defaults and refuses what could escape or make no sense, naming every problem', () => {
    const s = poolSettings(pool('fast', { backend: 'lvm', devices: ['/dev/loop1'], thinPool: {} }));
    assert.deepEqual(s, { backend: 'lvm', volumeGroup: 'fast', directory: '/var/lib/vpool-csi/pools/fast', devices: ['/dev/loop1'], tiers: new Map(), thinPool: { name: 'thin', size: { percent: 90 } }, overprovisionRatio: 1, reserveBytes: 0, wipe: false });
    const grouped = poolSettings(pool('t', { backend: 'lvm', devices: ['/dev/sdb'], deviceGroups: [{ tier: 'fast', devices: ['/dev/nvme0n1', '/dev/nvme1n1'] }, { tier: 'slow', devices: ['/dev/sdc'] }] }));
    assert.deepEqual(grouped.devices, ['/dev/sdb', '/dev/nvme0n1', '/dev/nvme1n1', '/dev/sdc']);
    assert.deepEqual([...grouped.tiers], [['/dev/nvme0n1', 'fast'], ['/dev/nvme1n1', 'fast'], ['/dev/sdc', 'slow']]);
    assert.throws(() => poolSettings(pool('t', { backend: 'lvm', deviceGroups: [{ tier: 'Fast!', devices: ['/dev/sdb'] }] })), /deviceGroups\[0\]\.tier/);
    assert.throws(() => poolSettings(pool('t', { backend: 'lvm', deviceGroups: [{ tier: 'a', devices: ['/dev/sdb'] }, { tier: 'b', devices: ['/dev/sdb'] }] })), /in tier a and tier b/);
    assert.throws(() => poolSettings(pool('t', { backend: 'lvm', devices: ['/dev/sdb'], deviceGroups: [{ tier: 'a', devices: ['/dev/sdb'] }] })), /name it once/);
    assert.throws(() => poolSettings(pool('t', { backend: 'lvm', deviceGroups: [{ tier: 'a', devices: ['/dev/../etc'] }] })), /not a device path/);
    assert.throws(() => poolSettings(pool('t', { backend: 'file', deviceGroups: [{ tier: 'a', devices: ['/dev/sdb'] }] })), /deviceGroups is for the lvm backend/);
    assert.throws(() => poolSettings(pool('t', { backend: 'file', deviceGroups: [{ tier: 'a', devices: [] }] })), /deviceGroups\[0\]\.devices: a list of device paths or globs, at least one.*deviceGroups is for the lvm backend/);
    assert.deepEqual(poolSettings(pool('x', { backend: 'lvm', thinPool: { size: '10Gi' }, reserve: '1Gi', overprovisionRatio: 2.5 })).thinPool?.size, { bytes: 10 * 1024 ** 3 });
    assert.throws(
      () => poolSettings(pool('x', { backend: 'lvm', devices: ['/dev/../etc/passwd', 'sda', '/dev/sd$(reboot)'], overprovisionRatio: 0.5, thinPool: { size: '150%' }, reserve: 'lots' })),
      (e: Error) => {
        for (const bit of ['"/dev/../etc/passwd"', '"sda"', '"/dev/sd$(reboot)"', 'overprovisionRatio must be a number ≥ 1', 'thinPool.size', 'not a byte quantity']) assert.ok(e.message.includes(bit), `${bit} in ${e.message}`);
        return true;
      },
    );
    assert.throws(() => poolSettings(pool('x', { backend: 'file', devices: ['/dev/sdb'] })), /spec.devices is for the lvm backend/);
    assert.throws(() => poolSettings(pool('x', { backend: 'file', directory: '/var/lib/../../etc' })), /spec.directory/);
    assert.throws(() => poolSettings(pool('x', { backend: 'zfs' })), /spec.backend must be lvm or file/);
    assert.throws(() => poolSettings(pool('x', { backend: 'lvm', volumeGroup: 'a/b' })), /invalid VG name/);
  });

  it('selects nodes as a Kubernetes label selector does', () => {
    const labels = { 'vpool.dev/pool': 'fast', zone: 'a' };
    assert.ok(selects(undefined, labels));
    assert.ok(selects({}, {}));
    assert.ok(selects({ matchLabels: { zone: 'a' } }, labels));
    assert.ok(!selects({ matchLabels: { zone: 'b' } }, labels));
    assert.ok(selects({ matchExpressions: [{ key: 'zone', operator: 'In', values: ['a', 'c'] }, { key: 'gpu', operator: 'DoesNotExist' }] }, labels));
    assert.ok(!selects({ matchExpressions: [{ key: 'zone', operator: 'NotIn', values: ['a'] }] }, labels));
    assert.ok(selects({ matchExpressions: [{ key: 'missing', operator: 'NotIn', values: ['a'] }] }, labels));
    assert.ok(!selects({ matchExpressions: [{ key: 'missing', operator: 'Exists' }] }, labels));
    assert.ok(!selects({ matchLabels: { zone: 'a' }, matchExpressions: [{ key: 'zone', operator: 'In', values: ['b'] }] }, labels));
  });

  it('expands device globs segment by segment, sorted, without crossing "/" or matching hidden names', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'vpool-glob-'));
    try {
      await mkdir(path.join(root, 'by-id'));
      for (const f of ['nvme-b', 'nvme-a', 'nvme-a-part1', 'ata-x', '.nvme-hidden']) await writeFile(path.join(root, 'by-id', f), '');
      assert.deepEqual(await expandDeviceGlob(`${root}/by-id/nvme-*`), [`${root}/by-id/nvme-a`, `${root}/by-id/nvme-a-part1`, `${root}/by-id/nvme-b`]);
      assert.deepEqual(await expandDeviceGlob(`${root}/by-id/nvme-?`), [`${root}/by-id/nvme-a`, `${root}/by-id/nvme-b`]);
      assert.deepEqual(await expandDeviceGlob(`${root}/by-id/nvme-[!a]`), [`${root}/by-id/nvme-b`]);
      assert.deepEqual(await expandDeviceGlob(`${root}/*/ata-*`), [`${root}/by-id/ata-x`]);
      assert.deepEqual(await expandDeviceGlob(`${root}/*`), [`${root}/by-id`], '"*" does not cross "/"');
      assert.deepEqual(await expandDeviceGlob(`${root}/nope/*`), []);
      assert.deepEqual(await expandDeviceGlob('/dev/no-such-disk'), ['/dev/no-such-disk'], 'a plain path is the caller\'s to judge');
    } finally {
      await rm(root, { recursive: true, force: true });
    }
  });

  it('reads durations and prints quantities', () => {
    assert.equal(parseDuration('90s'), 90_000);
    assert.equal(parseDuration('1h30m'), 5_400_000);
    assert.equal(parseDuration('0'), 0);
    assert.throws(() => parseDuration('10'), /not a duration/);
    assert.throws(() => parseDuration('-1h'), /not a duration/);
    assert.equal(humanQuantity(1536 * 1024 * 1024), '1.5Gi');
    assert.equal(humanQuantity(512), '512');
  });
});

describe('the FAKE API server keeps the API semantics the driver relies on', () => {
  let fake: FakeApiServer;
  let kube: Kube;
  before(async () => ({ fake, kube } = await startFakeCluster()));
  after(async () => fake.stop());

  const code = async (p: Promise<unknown>) => p.then(() => 200, (e: unknown) => statusOf(e));

  it('the chart\'s CRD schema: defaults, pruning, and 422 for "..", ratios below 1 and unknown backends', async () => {
    const made = (await kube.custom.createClusterCustomObject({ ...api, body: { ...pool('ok', { backend: 'lvm', devices: ['/dev/disk/by-id/nvme-*', '/dev/loop7'], thinPool: {}, typo: 1 }), status: { ready: 'forged' } } })) as KObject & VolumePool;
    assert.deepEqual(made.spec, { backend: 'lvm', devices: ['/dev/disk/by-id/nvme-*', '/dev/loop7'], thinPool: { name: 'thin', size: '90%' }, overprovisionRatio: 1, reserve: '0', wipe: false });
    assert.equal(made.status, undefined, 'status is not written by a create');
    assert.equal(made.metadata.generation, 1);
    for (const spec of [
      { backend: 'lvm', devices: ['/dev/../etc/shadow'] },
      { backend: 'lvm', devices: ['/dev/disk/..'] },
      { backend: 'lvm', devices: ['sdb'] },
      { backend: 'lvm', devices: ['/dev/sdb;reboot'] },
      { backend: 'lvm', overprovisionRatio: 0.5 },
      { backend: 'zfs' },
      { backend: 'lvm', thinPool: { size: '101%' } },
      { backend: 'lvm', volumeGroup: '../vg' },
      { devices: ['/dev/sdb'] },
    ]) {
      const err = await kube.custom.createClusterCustomObject({ ...api, body: pool('bad', spec) }).then(() => null, (e: unknown) => e);
      assert.equal(statusOf(err), 422, JSON.stringify(spec));
    }
    assert.equal(fake.get('volumepools', 'bad'), undefined, 'nothing was stored');
  });

  it('resourceVersion, 409 on a stale write or a second create, status only through /status, generation on spec changes', async () => {
    const first = (await kube.custom.getClusterCustomObject({ ...api, name: 'ok' })) as VolumePool;
    assert.equal(await code(kube.custom.createClusterCustomObject({ ...api, body: pool('ok', { backend: 'file' }) })), 409);
    const statusWrite = (await kube.custom.replaceClusterCustomObjectStatus({ ...api, name: 'ok', body: { ...first, status: { ready: '0/1' } } })) as VolumePool;
    assert.equal(statusWrite.metadata.generation, 1, 'a status write is not a new generation');
    assert.ok(Number(statusWrite.metadata.resourceVersion) > Number(first.metadata.resourceVersion));
    assert.equal(await code(kube.custom.replaceClusterCustomObjectStatus({ ...api, name: 'ok', body: { ...first, status: { ready: '9/9' } } })), 409, 'stale resourceVersion');
    const specWrite = (await kube.custom.replaceClusterCustomObject({ ...api, name: 'ok', body: { ...statusWrite, spec: { ...statusWrite.spec, reserve: '1Gi' }, status: { ready: 'forged' } } })) as VolumePool;
    assert.equal(specWrite.metadata.generation, 2);
    assert.equal(specWrite.status?.ready, '0/1', 'the main resource does not write status');
  });

  it('watch streams changes after a resourceVersion; a compacted one is 410 Gone and an informer lists again', async () => {
    const seen: string[] = [];
    let lists = 0;
    const informer = new ListWatch<VolumePool>('/apis/vpool.dev/v1alpha1/volumepools', new Watch(kube.config), () => {
      lists++;
      return kube.custom.listClusterCustomObject(api);
    }, false);
    informer.on('add', (o) => seen.push(`add ${o.metadata.name}`));
    informer.on('update', (o) => seen.push(`update ${o.metadata.name} ${o.spec.reserve}`));
    informer.on('delete', (o) => seen.push(`delete ${o.metadata.name}`));
    await informer.start();
    try {
      fake.create('volumepools', pool('w1', { backend: 'file' }) as unknown as KObject);
      fake.update('volumepools', 'w1', (o) => void ((o.spec as { reserve: string }).reserve = '2Gi'));
      await eventually('watch events', () => seen.includes('update w1 2Gi'));
      assert.equal(lists, 1, 'changes came by the watch, not by listing again');
      // In one tick: the watch drops, a change happens while nobody watches, and history is compacted past it.
      fake.closeWatches();
      fake.delete('volumepools', 'w1');
      fake.compact();
      await eventually('relist after 410', () => seen.includes('delete w1'));
      assert.equal(lists, 2, 'the informer listed again after the 410');
      assert.ok(fake.requests.some((r) => r.includes('watch=true') && r.includes('resourceVersion=')));
    } finally {
      await informer.stop();
    }
  });
});
