import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import * as coreV1 from 'kubernetes-models/v1';
import { PROJECT_ROOT } from '../../src/csi/proto.js';
import { modelOf, parseObjects, render, unknownFields } from '../helpers/manifests.js';

const DEPLOY = path.join(PROJECT_ROOT, 'deploy');

describe('deploy/', () => {
  for (const backend of ['file', 'lvm', 'libvirt']) {
    it(`deploy/${backend}/vpool-csi.yaml is the chart as it renders now (make deploy)`, async () => {
      const checkedIn = parseObjects(await readFile(path.join(DEPLOY, backend, 'vpool-csi.yaml'), 'utf8'));
      // Without the helm test hook: applied with kubectl, it would be a claim and a pod that stay.
      assert.deepEqual(checkedIn, await render([`backend=${backend}`], 'vpool-csi', [], ['--skip-tests']), `stale: run make deploy`);
      assert.ok(!checkedIn.some((o) => o.metadata.annotations?.['helm.sh/hook']), 'no hooks in deploy/');
    });
  }

  it('the examples are valid objects that use the chart\'s classes', async () => {
    const classesOf = async (sets: string[], files: string[] = []) => (await render(sets, 'vpool-csi', files)).filter((o) => o.kind === 'StorageClass').map((o) => o.metadata.name);
    const chartClasses = new Set([...(await classesOf(['backend=lvm'])), ...(await classesOf([], [path.join(PROJECT_ROOT, 'charts/vpool-csi/examples/values-libvirt-rbd.yaml')]))]);
    for (const file of ['pvc-filesystem.yaml', 'kubevirt-vm-block.yaml', 'kubevirt-vm-rwx.yaml', 'snapshot-and-restore.yaml', 'import-snapshot.yaml']) {
      const objects = parseObjects(await readFile(path.join(DEPLOY, 'examples', file), 'utf8'));
      assert.ok(objects.length >= 2, file);
      for (const o of objects) {
        const where = `${file}: ${o.kind}/${o.metadata.name}`;
        const model = modelOf(o);
        if (model) {
          const C = (coreV1 as Record<string, unknown>)[o.kind] as (new (x: unknown) => { validate(): void }) | undefined;
          if (C) assert.doesNotThrow(() => new C(o).validate(), where);
          assert.deepEqual(unknownFields(o, model, where), [], where);
        } else {
          assert.ok(['VolumeSnapshot', 'VolumeSnapshotContent', 'VirtualMachine'].includes(o.kind), where);
        }
        const sc = (o.spec as { storageClassName?: string } | undefined)?.storageClassName;
        if (sc) assert.ok(chartClasses.has(sc), `${where} uses a class the chart makes (${sc})`);
      }
    }
    // The imported content is what the driver takes up (src/cluster/snapshot-import.ts): this driver, a handle, no node label.
    const [imported, bound] = parseObjects(await readFile(path.join(DEPLOY, 'examples', 'import-snapshot.yaml'), 'utf8'));
    const spec = imported.spec as { driver: string; source: { snapshotHandle?: string; volumeHandle?: string }; volumeSnapshotRef: { name: string; namespace: string }; sourceVolumeMode: string };
    assert.equal(spec.driver, (await render([])).find((o) => o.kind === 'CSIDriver')!.metadata.name);
    assert.match(spec.source.snapshotHandle ?? '', /^snap-/);
    assert.equal(imported.metadata.labels?.['snapshot.storage.kubernetes.io/managed-by'], undefined);
    assert.deepEqual([spec.volumeSnapshotRef.name, spec.volumeSnapshotRef.namespace], [bound.metadata.name, bound.metadata.namespace]);
    assert.equal((bound.spec as { source: { volumeSnapshotContentName: string } }).source.volumeSnapshotContentName, imported.metadata.name);
    const vm = parseObjects(await readFile(path.join(DEPLOY, 'examples', 'kubevirt-vm-block.yaml'), 'utf8'));
    assert.equal((vm[0].spec as { volumeMode: string }).volumeMode, 'Block');
    // Live migration needs the disk in two VMs at once: a ReadWriteMany raw block claim, and the VM asking to migrate.
    const [claim, rwxVm] = parseObjects(await readFile(path.join(DEPLOY, 'examples', 'kubevirt-vm-rwx.yaml'), 'utf8'));
    assert.deepEqual([(claim.spec as { volumeMode: string }).volumeMode, (claim.spec as { accessModes: string[] }).accessModes], ['Block', ['ReadWriteMany']]);
    assert.equal((rwxVm.spec as { template: { spec: { evictionStrategy: string } } }).template.spec.evictionStrategy, 'LiveMigrate');
  });
});
