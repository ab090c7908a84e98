import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { paths, stageAndPublish, unpublishAndUnstage } from '../helpers/csi.js';
import { codeOf, MiB, needsRoot, useDriver, type Driver } from '../helpers/driver.js';
import { render } from '../helpers/manifests.js';
import { provisionerCreateVolume } from '../helpers/sidecars.js';

const execFileP = promisify(execFile);
const fsAt = async (target: string) => (await execFileP('findmnt', ['--noheadings', '--output', 'FSTYPE', '--mountpoint', target])).stdout.trim();

interface StorageClass {
  metadata: { name: string };
  provisioner: string;
  parameters?: Record<string, string>;
  mountOptions?: string[];
}

// The chart's StorageClasses as external-provisioner turns them into CreateVolume (a MODEL of it,
// test/helpers/sidecars.ts: none can run here), against the real driver and the real kernel: the
// filesystem the class names is the one the kubelet's NodeStageVolume gets mounted.
describe('StorageClasses through the provisioner: the filesystem the class names is the one mounted', needsRoot(), () => {
  let d: Driver;
  useDriver((x) => (d = x));

  const provisionAndMount = async (sc: StorageClass, uid: string, storage: number) => {
    const req = provisionerCreateVolume({ parameters: sc.parameters, mountOptions: sc.mountOptions, claim: { name: `data-${uid}`, namespace: 'apps', uid, accessModes: ['ReadWriteOnce'], storage } });
    const vol = (await d.client.createVolume(req)).volume!;
    const p = await paths(d, uid);
    // The kubelet stages with the PV's capability: the provisioner's fs_type and access mode.
    await stageAndPublish(d, vol.volume_id, p, req.volume_capabilities![0]);
    const mounted = await fsAt(p.target);
    await unpublishAndUnstage(d, vol.volume_id, p);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
    return { vol, mounted };
  };

  it("the chart's class (csi.storage.k8s.io/fstype): ext4, recorded in the volume context", async () => {
    const classes = (await render([])).filter((o) => o.kind === 'StorageClass') as unknown as StorageClass[];
    assert.ok(classes.length > 0);
    for (const [i, sc] of classes.entries()) {
      assert.equal(sc.parameters?.['csi.storage.k8s.io/fstype'], 'ext4', sc.metadata.name);
      const { vol, mounted } = await provisionAndMount(sc, `chart${i}`, 64 * MiB);
      assert.equal(mounted, 'ext4');
      assert.deepEqual(vol.volume_context, { fsType: 'ext4' });
    }
  });

  it('a class of the old spelling (fsType: xfs, as earlier charts and many users wrote it) still gets xfs', async () => {
    const { vol, mounted } = await provisionAndMount({ metadata: { name: 'legacy' }, provisioner: 'x', parameters: { fsType: 'xfs' } }, 'legacy', 320 * MiB);
    assert.equal(mounted, 'xfs');
    assert.deepEqual(vol.volume_context, { fsType: 'xfs' });
  });

  it('the standard key alone, xfs: the capability decides (the provisioner passes no fsType parameter)', async () => {
    const { vol, mounted } = await provisionAndMount({ metadata: { name: 'std' }, provisioner: 'x', parameters: { 'csi.storage.k8s.io/fstype': 'xfs' } }, 'std', 320 * MiB);
    assert.equal(mounted, 'xfs');
    assert.deepEqual(vol.volume_context, { fsType: 'xfs' });
  });

  it('a CO that sends a legacy fsType disagreeing with the capability, or both spellings, is refused and nothing is made', async () => {
    const req = provisionerCreateVolume({ parameters: { 'csi.storage.k8s.io/fstype': 'ext4' }, claim: { name: 'x', namespace: 'apps', uid: 'mismatch', accessModes: ['ReadWriteOnce'], storage: 64 * MiB } });
    await assert.rejects(d.client.createVolume({ ...req, parameters: { ...req.parameters, fsType: 'xfs' } }), /fsType=xfs disagrees with the volume capability's fs_type ext4/);
    assert.equal(await codeOf(d.client.createVolume({ ...req, parameters: { ...req.parameters, fsType: 'xfs' } })), 'INVALID_ARGUMENT');
    assert.equal(await codeOf(d.client.createVolume({ ...req, parameters: { fstype: 'ext4', 'csi.storage.k8s.io/fstype': 'ext4' } })), 'INVALID_ARGUMENT');
    assert.deepEqual((await d.client.listVolumes({})).entries, []);
  });
});
