import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { IO_BURST_PARAMETERS, IO_LIMIT_PARAMETERS, ioLimitsOf, parseMutableParameters, withChanges, withoutMutable } from '../../src/pool/mutable-parameters.js';
import { parameterTagChanges } from '../../src/pool/lvm/tags.js';
import { PodCgroups } from '../../src/host/cgroup-io.js';
import { podOfTarget } from '../../src/driver/node/io-limits.js';

describe('mutable parameters (VolumeAttributesClass)', () => {
  it('reads I/O limits: whole counts, Kubernetes quantities as bytes, "unlimited" to lift', () => {
    assert.deepEqual(parseMutableParameters({ readIOPS: '500', writeBytesPerSecond: '20Mi', readBytesPerSecond: '1G', writeIOPS: 'unlimited' }, IO_LIMIT_PARAMETERS), {
      readIOPS: '500',
      writeBytesPerSecond: String(20 * 1024 * 1024),
      readBytesPerSecond: '1000000000',
      writeIOPS: null,
    });
    for (const [k, v] of [['readIOPS', '0'], ['readIOPS', '1'], ['readIOPS', '1.5'], ['readIOPS', '0500'], ['readIOPS', '1000000001'], ['readIOPS', ''], ['writeBytesPerSecond', '4095'], ['writeBytesPerSecond', '2Pi'], ['writeBytesPerSecond', 'fast'], ['writeBytesPerSecond', '-1Mi']]) {
      assert.throws(() => parseMutableParameters({ [k]: v }, IO_LIMIT_PARAMETERS), (e: Error) => e.message.includes(`${k}=${JSON.stringify(v)}`), `${k}=${v}`);
    }
  });

  it('names a key the pool cannot change, with why when another pool can', () => {
    assert.throws(() => parseMutableParameters({ iops: '5' }, IO_LIMIT_PARAMETERS), /"iops" is not a parameter this pool can change \(it can change: readIOPS, writeIOPS, readBytesPerSecond, writeBytesPerSecond\)/);
    assert.throws(() => parseMutableParameters({ writeIOPSBurst: '5' }, IO_LIMIT_PARAMETERS), /bursts are applied by QEMU/);
    assert.throws(() => parseMutableParameters({ readIOPS: '5' }, {}), /it can change: none/);
    assert.deepEqual(parseMutableParameters({ readIOPSBurst: '900' }, { ...IO_LIMIT_PARAMETERS, ...IO_BURST_PARAMETERS }), { readIOPSBurst: '900' });
  });

  it('changes only the keys named, and tells when nothing changes', () => {
    const rec = { fsType: 'ext4', readIOPS: '500', writeIOPS: '100' };
    assert.equal(withChanges(rec, { readIOPS: '500' }), rec, 'the same object: nothing to write');
    assert.equal(withChanges(rec, { readBytesPerSecond: null }), rec);
    assert.deepEqual(withChanges(rec, { readIOPS: '250', writeIOPS: null }), { fsType: 'ext4', readIOPS: '250' });
    assert.deepEqual(withoutMutable(rec, IO_LIMIT_PARAMETERS), { fsType: 'ext4' });
    assert.deepEqual(ioLimitsOf({ ...rec, readIOPSBurst: '900' }), { readIOPS: 500, writeIOPS: 100, readIOPSBurst: 900 });
  });

  it('lvm: one lvchange drops the old tags and adds the new', () => {
    assert.deepEqual(parameterTagChanges({ type: 'thin', readIOPS: '500' }, { type: 'thin', readIOPS: '250', writeIOPS: '9' }), ['--deltag', 'vpool.p.readIOPS=500', '--addtag', 'vpool.p.readIOPS=250', '--addtag', 'vpool.p.writeIOPS=9']);
    assert.deepEqual(parameterTagChanges({ a: '1' }, { a: '1' }), []);
  });
});

describe('pod cgroups as the kubelet lays them out', () => {
  it('looks where the systemd and cgroupfs drivers put each QoS class, from a checked UID only', () => {
    assert.match(String(PodCgroups.detect('/nonexistent')), /\/nonexistent is no cgroup filesystem/);
    // The candidates are path arithmetic on the hierarchy: an instance for a v2 root, made without detecting one.
    const v2 = Object.create(PodCgroups.prototype, { hierarchy: { value: '/sys/fs/cgroup' }, parents: { value: ['kubepods.slice', 'kubepods'] } }) as PodCgroups;
    assert.deepEqual(v2.candidates('0a1b2c3d-0000-4000-8000-00000000000f'), [
      '/sys/fs/cgroup/kubepods.slice/kubepods-pod0a1b2c3d_0000_4000_8000_00000000000f.slice',
      '/sys/fs/cgroup/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_0000_4000_8000_00000000000f.slice',
      '/sys/fs/cgroup/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod0a1b2c3d_0000_4000_8000_00000000000f.slice',
      '/sys/fs/cgroup/kubepods/pod0a1b2c3d-0000-4000-8000-00000000000f',
      '/sys/fs/cgroup/kubepods/burstable/pod0a1b2c3d-0000-4000-8000-00000000000f',
      '/sys/fs/cgroup/kubepods/besteffort/pod0a1b2c3d-0000-4000-8000-00000000000f',
    ]);
    for (const bad of ['../../etc', '0A1B2C3D-0000-4000-8000-00000000000F', '0a1b2c3d-0000-4000-8000-00000000000f/..', '']) assert.throws(() => v2.candidates(bad), /not a pod UID/);
    for (const bad of ['/kubepods', '../x', 'a//b', 'a/./b', '']) assert.throws(() => PodCgroups.checkParents([bad]), /--kubepods-cgroup is a path under the cgroup root/);
  });

  it('finds the I/O controller: v2 at the root, else v1\'s blkio hierarchy; the kubelet\'s cgroups under it, or says where it looked', async () => {
    const { mkdtemp, mkdir, writeFile, rm } = await import('node:fs/promises');
    const root = await mkdtemp('/tmp/vpool-cg-');
    const found: PodCgroups[] = [];
    try {
      await mkdir(`${root}/blkio`);
      await writeFile(`${root}/blkio/blkio.throttle.read_iops_device`, '');
      assert.match(String(PodCgroups.detect(root)), new RegExp(`none of the kubelet's kubepods cgroups kubepods.slice, kubepods is under ${root}/blkio`));
      await mkdir(`${root}/blkio/kubepods.slice`);
      const v1 = PodCgroups.detect(root);
      assert.ok(typeof v1 === 'object' && v1.version === 1 && v1.hierarchy === `${root}/blkio`, 'v1: the blkio hierarchy');
      found.push(v1);
      await writeFile(`${root}/cgroup.controllers`, 'io memory');
      // v2, but the kubelet keeps its pods elsewhere (a wrong --kubepods-cgroup): said at start, not found pod by pod.
      assert.match(String(PodCgroups.detect(root)), /none of the kubelet's kubepods cgroups kubepods.slice, kubepods is under/);
      await mkdir(`${root}/kubepods`);
      const v2 = PodCgroups.detect(root);
      assert.ok(typeof v2 === 'object' && v2.version === 2 && v2.hierarchy === root, 'v2 with the kubelet\'s cgroups: the root');
      found.push(v2);
    } finally {
      for (const f of found) f.throttle.close();
      await rm(root, { recursive: true, force: true });
    }
  });

  it('finds the pod in the kubelet\'s publish paths, and nothing in other paths', () => {
    const uid = '0a1b2c3d-0000-4000-8000-00000000000f';
    assert.equal(podOfTarget(`/var/lib/kubelet/pods/${uid}/volumes/kubernetes.io~csi/pvc-1/mount`), uid);
    assert.equal(podOfTarget(`/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-1/${uid}`), uid);
    assert.equal(podOfTarget(`/var/lib/kubelet/pods/${uid}/volumes/kubernetes.io~csi/pvc-1/mount/sub`), null);
    assert.equal(podOfTarget('/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/staging/pvc-1'), null);
    assert.equal(podOfTarget('/mnt/anything'), null);
  });
});
