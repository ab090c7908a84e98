import assert from 'node:assert/strict';
import { createHash, randomUUID } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, statfs, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { mountCap } from '../helpers/csi.js';
import { codeOf, MiB, needsRoot } from '../helpers/driver.js';
import { containerOf, flag, runContainer } from '../helpers/chart-process.js';
import { startFakeCluster } from '../helpers/kube.js';
import { dirPool, startLibvirt, URI, type TestPool } from '../helpers/libvirt.js';
import { render } from '../helpers/manifests.js';
import { resizerResize, resizerStartup } from '../helpers/sidecars.js';
import type { FakeApiServer } from '../helpers/fake-apiserver.js';

const DRIVER = 'vpool.csi.dev';

/** The socket the chart's csi-resizer is given, and the driver container beside it that serves it. */
function resizerPair(objects: Awaited<ReturnType<typeof render>>) {
  const resizer = containerOf(objects, 'Deployment', 'csi-resizer');
  const driver = containerOf(objects, 'Deployment', 'driver');
  const address = flag(resizer, 'csi-address');
  assert.equal(`unix://${address}`, flag(driver, 'endpoint'), 'the resizer talks to the driver container of its pod');
  return { resizer, driver };
}

// Expansion as a real cluster does it, with the processes and flags the chart renders:
// csi-resizer's start-up and resize (MODEL of external-resizer v2.0.0, test/helpers/sidecars.ts)
// against the controller Deployment's driver container, then the kubelet's NodeExpandVolume
// (MODEL of kubelet 1.32, pkg/volume/csi/expander.go: volume_path is the pod's publish path for a
// filesystem, staging_target_path the globalmount) against the node DaemonSet's driver container.
// Rendered with transfer.enabled=false: the transfer's listener needs the pod IP and its certificate from
// the transfer signer, which this model of the kubelet does not make (test/e2e/transfer*.test.ts run them).
describe('expansion through external-resizer with the chart as rendered', needsRoot(), () => {
  let dir: string;
  let fake: FakeApiServer;
  let kubeconfig: string;
  before(async () => {
    dir = await mkdtemp('/var/tmp/vpool-expand-');
    ({ fake, kubeconfig } = await startFakeCluster());
  });
  after(async () => {
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  });

  for (const backend of ['file', 'lvm'] as const) {
    it(`${backend}: the resizer starts as the trivial resizer and hands resizes to the node`, async () => {
      const objects = await render([`backend=${backend}`, 'metrics.enabled=false', 'transfer.enabled=false']);
      const { driver } = resizerPair(objects);
      const p = await runContainer(driver, { '/csi': path.join(dir, `ctrl-${backend}`) });
      try {
        const model = await resizerStartup(p.client);
        assert.equal(model.driverName, DRIVER);
        assert.equal(model.kind, 'trivial');
        assert.deepEqual(model.calls, ['Probe', 'GetPluginInfo', 'GetPluginCapabilities', 'ControllerGetCapabilities', 'NodeGetCapabilities', 'ControllerGetCapabilities']);
        // Nothing but the capability queries: this process has no pool to serve.
        assert.equal(await codeOf(p.client.createVolume({ name: 'x', volume_capabilities: [mountCap()] })), 'UNIMPLEMENTED');
        assert.equal(await codeOf(p.client.nodeGetInfo({})), 'UNIMPLEMENTED');
        const st = await stat(p.socket);
        assert.equal(st.mode & 0o777, 0o660);
      } finally {
        p.client.close();
        p.proc.kill('SIGTERM');
        assert.equal(await p.exited, 0);
      }
    });
  }

  it('the model fails as the real resizer does against a driver without CONTROLLER_SERVICE', async () => {
    // The shape the chart had before (a node-only answer on the resizer's socket): CrashLoopBackOff.
    const objects = await render(['backend=file', 'metrics.enabled=false', 'transfer.enabled=false']);
    const node = containerOf(objects, 'DaemonSet', 'driver');
    const p = await runContainer({ ...node, args: [...node.args!.filter((a) => !a.startsWith('--mode=') && !a.startsWith('--orphan')), '--mode=node'] }, {
      '/csi': path.join(dir, 'node-only'),
      '/var/lib/kubelet': path.join(dir, 'node-only-kubelet'),
      '/var/lib/vpool-csi/pool': path.join(dir, 'node-only-pool'),
    }, { NODE_NAME: 'node-a' });
    try {
      await assert.rejects(resizerStartup(p.client), /CSI driver does not support controller service/);
    } finally {
      p.client.close();
      p.proc.kill('SIGTERM');
      await p.exited;
    }
  });

  it('file: a published xfs volume grows online through the trivial resizer and the kubelet\'s NodeExpandVolume', async () => {
    const kubelet = path.join(dir, 'kubelet');
    const pool = path.join(dir, 'pool');
    await mkdir(kubelet, { recursive: true });
    const objects = await render(['backend=file', 'metrics.enabled=false', 'transfer.enabled=false', `kubeletDir=${kubelet}`, `file.poolDir=${pool}`]);
    const ctrl = await runContainer(resizerPair(objects).driver, { '/csi': path.join(dir, 'ctrl') });
    const node = await runContainer(containerOf(objects, 'DaemonSet', 'driver'), { '/csi': path.join(dir, 'plugin') }, { NODE_NAME: 'node-a', KUBECONFIG: kubeconfig });
    try {
      const model = await resizerStartup(ctrl.client);
      // What external-provisioner --node-deployment sends for a PVC of the chart's class.
      const cap = mountCap('xfs');
      const { volume } = await node.client.createVolume({
        name: 'pvc-grow', capacity_range: { required_bytes: String(300 * MiB) }, volume_capabilities: [cap], parameters: {},
        accessibility_requirements: { requisite: [{ segments: { 'topology.vpool.dev/node': 'node-a' } }], preferred: [{ segments: { 'topology.vpool.dev/node': 'node-a' } }] },
      });
      const id = volume!.volume_id;
      // The kubelet's layout (k8s-contracts.md).
      const staging = path.join(kubelet, 'plugins/kubernetes.io/csi', DRIVER, createHash('sha256').update(id).digest('hex'), 'globalmount');
      const target = path.join(kubelet, 'pods', randomUUID(), 'volumes/kubernetes.io~csi/pvc-grow/mount');
      await mkdir(staging, { recursive: true });
      await mkdir(path.dirname(target), { recursive: true });
      await node.client.nodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
      await node.client.nodePublishVolume({ volume_id: id, staging_target_path: staging, target_path: target, volume_capability: cap });
      await writeFile(path.join(target, 'data'), 'kept across growth');
      const before = (await statfs(target)).blocks * (await statfs(target)).bsize;

      const want = 600 * MiB;
      const resized = await resizerResize(ctrl.client, model, id, want, cap);
      assert.deepEqual(resized, { capacityBytes: want, nodeExpansionRequired: true });
      const grown = await node.client.nodeExpandVolume({ volume_id: id, volume_path: target, staging_target_path: staging, capacity_range: { required_bytes: String(want) }, volume_capability: cap });
      assert.ok(Number(grown.capacity_bytes) >= want);
      const fs = await statfs(target);
      assert.ok(fs.blocks * fs.bsize > before + 250 * MiB, `the filesystem grew online (${before} → ${fs.blocks * fs.bsize})`);
      assert.equal(await readFile(path.join(target, 'data'), 'utf8'), 'kept across growth');
      assert.equal((await node.client.controllerGetVolume({ volume_id: id })).volume?.capacity_bytes, String(want));

      await node.client.nodeUnpublishVolume({ volume_id: id, target_path: target });
      await node.client.nodeUnstageVolume({ volume_id: id, staging_target_path: staging });
      await node.client.deleteVolume({ volume_id: id });
    } finally {
      for (const p of [ctrl, node]) {
        p.client.close();
        p.proc.kill('SIGTERM');
        await p.exited;
      }
    }
  });
});

// libvirt volumes grow on the controller: the same resizer model must find EXPAND_VOLUME there and
// call ControllerExpandVolume on the controller Deployment's driver, against a real libvirtd.
describe('libvirt: the resizer expands through the controller the chart renders', needsRoot(), () => {
  let pool: TestPool;
  let dir: string;
  before(async () => {
    await startLibvirt();
    pool = await dirPool('vpool-rsz');
    dir = await mkdtemp('/var/tmp/vpool-rsz-');
  });
  after(async () => {
    await pool.remove();
    await rm(dir, { recursive: true, force: true });
  });

  it('controller resizer: ControllerExpandVolume grows the libvirt volume and asks the node to follow', async () => {
    const objects = await render(['backend=libvirt', 'metrics.enabled=false', `libvirt.uri=${URI}`, `libvirt.pool=${pool.name}`, 'libvirt.hypervisor=hv-test']);
    const p = await runContainer(resizerPair(objects).driver, { '/csi': path.join(dir, 'csi') }, { HOME: dir });
    try {
      const model = await resizerStartup(p.client);
      assert.equal(model.kind, 'controller');
      const cap = mountCap('ext4');
      const { volume } = await p.client.createVolume({ name: 'grow-me', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [cap], parameters: {} });
      const res = await resizerResize(p.client, model, volume!.volume_id, 96 * MiB, cap);
      assert.ok(res.capacityBytes >= 96 * MiB);
      assert.equal(res.nodeExpansionRequired, true);
      assert.equal((await p.client.controllerGetVolume({ volume_id: volume!.volume_id })).volume?.capacity_bytes, String(res.capacityBytes));
      await p.client.deleteVolume({ volume_id: volume!.volume_id });
      assert.deepEqual(await pool.volumes(), []);
    } finally {
      p.client.close();
      p.proc.kill('SIGTERM');
      await p.exited;
    }
  });
});
