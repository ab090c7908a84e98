import assert from 'node:assert/strict';
import { stat } from 'node:fs/promises';
import { it } from 'node:test';
import { codeOf, finish, needsRoot, startDriver } from '../helpers/driver.js';

// Beside node-local pools, external-resizer runs in a Deployment with a driver that serves Identity
// alone: no CONTROLLER_SERVICE, so the resizer only marks PVCs for node-side expansion.
it('--mode identity serves Identity alone, on a socket owned by --socket-group', needsRoot(), async () => {
  const d = await startDriver({ args: ['--mode', 'identity', '--socket-group', '65532'] });
  try {
    assert.equal((await d.client.getPluginInfo({})).name, 'vpool.csi.dev');
    const caps = (await d.client.getPluginCapabilities({})).capabilities.map((c) => c.service?.type ?? c.volume_expansion?.type);
    assert.deepEqual(caps, ['VOLUME_ACCESSIBILITY_CONSTRAINTS', 'ONLINE', 'OFFLINE']);
    assert.deepEqual(await d.client.probe({}), { ready: { value: true } });
    assert.equal(await codeOf(d.client.controllerGetCapabilities({})), 'UNIMPLEMENTED');
    assert.equal(await codeOf(d.client.nodeGetInfo({})), 'UNIMPLEMENTED');
    const st = await stat(d.socket);
    assert.equal(st.gid, 65532);
    assert.equal(st.mode & 0o777, 0o660);
  } finally {
    assert.deepEqual(await finish(d), []);
  }
});
