import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadCsi } from '../../src/csi/proto.js';
import { CONTROLLER_RPC_NEEDS, NODE_RPC_NEEDS, serviceCapabilities } from '../../src/csi/service-capabilities.js';
import { poolFeatures, SNAPSHOT_SERVICES_BY_KIND } from '../../src/driver/pool-state.js';
import { FilePool } from '../../src/pool/file/file-pool.js';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { tempDir } from '../helpers/driver.js';
import type { PoolBackend, ControllerAttacher } from '../../src/pool/backend.js';

describe('the capability table', () => {
  it('names the capability of every RPC of the Controller and Node services in the proto', () => {
    const csi = loadCsi().csi.v1;
    assert.deepEqual(Object.keys(CONTROLLER_RPC_NEEDS).sort(), Object.keys(csi.Controller.service).sort());
    assert.deepEqual(Object.keys(NODE_RPC_NEEDS).sort(), Object.keys(csi.Node.service).sort());
  });

  it('advertises by what the driver was started with', () => {
    const nodeLocal = serviceCapabilities(poolFeatures({ backend: { expansion: 'node' } as PoolBackend }), 'all');
    assert.ok(!nodeLocal.controller.includes('EXPAND_VOLUME') && !nodeLocal.controller.includes('PUBLISH_UNPUBLISH_VOLUME'));
    assert.ok(nodeLocal.node.includes('EXPAND_VOLUME') && nodeLocal.node.includes('STAGE_UNSTAGE_VOLUME'));
    const hypervisor = serviceCapabilities(poolFeatures({ backend: { expansion: 'controller' } as PoolBackend, controllerAttacher: {} as ControllerAttacher }), 'controller');
    for (const c of ['EXPAND_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME', 'PUBLISH_READONLY', 'LIST_VOLUMES_PUBLISHED_NODES'] as const) assert.ok(hypervisor.controller.includes(c), c);
    assert.deepEqual(serviceCapabilities(poolFeatures({}), 'resizer'), { controller: [], node: ['EXPAND_VOLUME'] });
    assert.ok(!nodeLocal.controller.includes('MODIFY_VOLUME'), 'ControllerModifyVolume is never advertised');
  });

  it('advertises the snapshot services of a pool before it opens as it will once it has (the sidecars ask once, at their start)', async () => {
    const dir = await tempDir('vpool-caps-');
    try {
      const file = await FilePool.open(path.join(dir, 'pool'), 0, { sweep: false });
      const opened = poolFeatures({ backendKind: 'file', backend: file });
      const before = poolFeatures({ backendKind: 'file' });
      assert.deepEqual([before.snapshotMetadata, before.groupSnapshots, before.modifiesVolumes], [opened.snapshotMetadata, opened.groupSnapshots, opened.modifiesVolumes]);
      assert.deepEqual([opened.snapshotMetadata, opened.groupSnapshots, opened.modifiesVolumes], [true, true, true]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
    // lvm serves both (where the node has device-mapper: test/vm/snapshot-backup-lvm.vm-test.ts); libvirt the metadata
    // (all allocated, no delta) but no groups yet;
    // nothing is advertised for a kind not in the table.
    // Every pool changes I/O limits on live volumes (MODIFY_VOLUME): lvm and file in the pods' cgroups, libvirt in QEMU.
    assert.deepEqual(SNAPSHOT_SERVICES_BY_KIND.lvm, { snapshotMetadata: true, groupSnapshots: true, modifiesVolumes: true });
    assert.deepEqual(SNAPSHOT_SERVICES_BY_KIND.libvirt, { snapshotMetadata: true, groupSnapshots: false, modifiesVolumes: true });
    assert.deepEqual(poolFeatures({ backendKind: 'something-else' }).snapshotMetadata, false);
  });
});
