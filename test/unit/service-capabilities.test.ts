import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { loadCsi } from '../../src/csi/proto.js';
import { CONTROLLER_RPC_NEEDS, NODE_RPC_NEEDS, serviceCapabilities } from '../../src/csi/service-capabilities.js';
import { poolFeatures } from '../../src/driver/pool-state.js';
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
});
