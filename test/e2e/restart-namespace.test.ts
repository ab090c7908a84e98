import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { idFor } from '../../src/ids.js';
import { loopsBackedBy } from '../../src/host/loop.js';
import { readMounts } from '../../src/host/mounts.js';
import { blockCap, mountCap } from '../helpers/csi.js';
import { BIN, codeOf, launchDriver, MiB, needsRoot, type Launched } from '../helpers/driver.js';
import { startFakeCluster } from '../helpers/kube.js';
import type { FakeApiServer } from '../helpers/fake-apiserver.js';

const execFileP = promisify(execFile);

// MODEL of a node-plugin restart in Kubernetes (k8s-contracts.md, "Node plugin restarts"): the old
// container had its own mount namespace with the pool at another path (here `unshare -m` and a
// bind of the pool at <dir>/ctr/volumes-elsewhere), and the kubelet directory shared with the host
// (Bidirectional propagation: a shared bind here). It attached, staged and published; it is killed;
// a new driver on the host, where the pool has its real path, must recognise every device, mount
// and bind as the volume's and finish the lifecycle. The kernel then prints each loop device's
// backing file as the old container saw it, which the test checks, so it exercises the real case.
describe('node-plugin restart into another mount namespace (the pool at another path)', needsRoot(), () => {
  let dir: string;
  let pool: string;
  let kubelet: string;
  let alias: string;
  let fake: FakeApiServer;
  let kubeconfig: string;
  const mounted: string[] = [];

  before(async () => {
    dir = await mkdtemp('/var/tmp/vpool-ns-');
    pool = path.join(dir, 'pool');
    kubelet = path.join(dir, 'kubelet');
    const ctr = path.join(dir, 'ctr');
    alias = path.join(ctr, 'volumes-elsewhere');
    for (const d of [pool, kubelet, alias]) await mkdir(d, { recursive: true });
    // The kubelet directory is shared (mounts made in the old container's namespace appear here);
    // the container's own tree is private (its view of the pool does not).
    await execFileP('mount', ['--bind', kubelet, kubelet]);
    await execFileP('mount', ['--make-shared', kubelet]);
    await execFileP('mount', ['--bind', ctr, ctr]);
    await execFileP('mount', ['--make-private', ctr]);
    mounted.push(ctr, kubelet);
    ({ fake, kubeconfig } = await startFakeCluster());
  });
  after(async () => {
    await fake.stop();
    for (const m of (await readMounts()).filter((x) => x.mountPoint.startsWith(dir + '/')).reverse()) await execFileP('umount', ['-l', m.mountPoint]).catch(() => undefined);
    // By inode: the kernel names these files by the old namespace's path.
    for (const f of await readdir(path.join(pool, 'volumes')).catch(() => [] as string[])) {
      for (const l of await loopsBackedBy(path.join(pool, 'volumes', f))) await execFileP('losetup', ['-d', l.device]).catch(() => undefined);
    }
    await rm(dir, { recursive: true, force: true });
  });

  const serveArgs = (socket: string, poolDir: string) => ['serve', '--endpoint', `unix://${socket}`, '--pool-dir', poolDir, '--allowed-root', kubelet, '--node-id', 'node-a'];
  const stop = async (d: Launched, signal: NodeJS.Signals) => {
    d.client.close();
    d.proc.kill(signal);
    await d.exited;
  };

  it('after the restart, stats, unpublish, unstage and delete work for mount and block; before unstage nothing deletes or reaps the volume', async () => {
    // The old container: its own mount namespace, the pool bound at another path.
    const old = await launchDriver(path.join(dir, 'old.sock'), serveArgs(path.join(dir, 'old.sock'), alias), {
      wrap: ['unshare', '--mount', '--propagation', 'unchanged', 'sh', '-c', 'mount --bind "$0" "$1" && shift && exec "$@"', pool, alias],
    });
    const fsCap = mountCap('ext4');
    const vols = {
      fs: { cap: fsCap, id: '', staging: path.join(kubelet, 'plugins/fs/globalmount'), target: path.join(kubelet, 'pods/p1/volumes/fs/mount') },
      block: { cap: blockCap(), id: '', staging: path.join(kubelet, 'plugins/block/staging'), target: path.join(kubelet, 'pods/p1/volumeDevices/block') },
    };
    for (const [name, v] of Object.entries(vols)) {
      v.id = (await old.client.createVolume({ name, capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [v.cap], parameters: {} })).volume!.volume_id;
      await mkdir(v.staging, { recursive: true });
      await mkdir(path.dirname(v.target), { recursive: true });
      await old.client.nodeStageVolume({ volume_id: v.id, staging_target_path: v.staging, volume_capability: v.cap });
      await old.client.nodePublishVolume({ volume_id: v.id, staging_target_path: v.staging, target_path: v.target, volume_capability: v.cap });
    }
    await writeFile(path.join(vols.fs.target, 'data'), 'written before the restart');
    await stop(old, 'SIGKILL');

    // The kernel names the backing files by the old container's path: a string match would fail here.
    for (const v of Object.values(vols)) {
      const image = path.join(pool, 'volumes', `${v.id}.img`);
      const loops = await loopsBackedBy(image);
      assert.equal(loops.length, 1, `${v.id} is attached once`);
      assert.notEqual(loops[0].backingFile, image, 'the loop device names the file by another path');
      assert.ok(!loops[0].backingFile.startsWith(pool + '/'), loops[0].backingFile);
    }

    const d = await launchDriver(path.join(dir, 'new.sock'), serveArgs(path.join(dir, 'new.sock'), pool));
    try {
      // Attached elsewhere: DeleteVolume refuses, and the reconciler (no PV names these volumes) reaps nothing.
      for (const v of Object.values(vols)) {
        assert.equal(await codeOf(d.client.deleteVolume({ volume_id: v.id })), 'FAILED_PRECONDITION');
        await stat(path.join(pool, 'volumes', `${v.id}.img`));
      }
      const { stdout } = await execFileP(BIN, ['reconcile', '--backend', 'file', '--pool-dir', pool, '--node-id', 'node-a', '--kubeconfig', kubeconfig, '--grace-period', '0', '--no-events']);
      const report = JSON.parse(stdout) as { volumes: Array<{ id: string; action: string }> };
      for (const v of Object.values(vols)) assert.match(report.volumes.find((o) => o.id === v.id)?.action ?? '', /^kept: .*attached/, JSON.stringify(report.volumes));
      for (const v of Object.values(vols)) await stat(path.join(pool, 'volumes', `${v.id}.img`));

      // What the kubelet calls after the restart.
      for (const v of Object.values(vols)) {
        const stats = await d.client.nodeGetVolumeStats({ volume_id: v.id, volume_path: v.target });
        assert.equal(stats.volume_condition?.abnormal, false, stats.volume_condition?.message);
      }
      assert.equal(await readFile(path.join(vols.fs.target, 'data'), 'utf8'), 'written before the restart');
      for (const v of Object.values(vols)) {
        await d.client.nodeUnpublishVolume({ volume_id: v.id, target_path: v.target });
        await d.client.nodeUnstageVolume({ volume_id: v.id, staging_target_path: v.staging });
        assert.deepEqual(await loopsBackedBy(path.join(pool, 'volumes', `${v.id}.img`)), [], 'unstage detached the device');
        await d.client.deleteVolume({ volume_id: v.id });
        await assert.rejects(stat(path.join(pool, 'volumes', `${v.id}.img`)), /ENOENT/);
      }
    } finally {
      await stop(d, 'SIGTERM');
    }
  });

  it('unstage refuses while another mount namespace still has the filesystem, then finishes once it is gone', async () => {
    const d = await launchDriver(path.join(dir, 'ns.sock'), serveArgs(path.join(dir, 'ns.sock'), pool));
    const cap = mountCap('ext4');
    const staging = path.join(kubelet, 'plugins/held/globalmount');
    await mkdir(staging, { recursive: true });
    const id = (await d.client.createVolume({ name: 'held', capacity_range: { required_bytes: String(32 * MiB) }, volume_capabilities: [cap], parameters: {} })).volume!.volume_id;
    assert.equal(id, idFor('vol', 'held'));
    await d.client.nodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
    // A process whose private mount namespace copied the staging mount (as a pod's does).
    const holder = spawn('unshare', ['--mount', '--propagation', 'private', 'sleep', '600'], { stdio: 'ignore' });
    try {
      await new Promise((r) => setTimeout(r, 300));
      const err = await d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: staging }).then(() => null, (e: Error) => e);
      assert.match(String(err?.message), /FAILED_PRECONDITION|still in use/);
      assert.match(String(err?.message), /mount namespace of pid|open exclusively/);
      assert.equal((await loopsBackedBy(path.join(pool, 'volumes', `${id}.img`))).length, 1, 'the device stays attached');
      assert.equal(await codeOf(d.client.deleteVolume({ volume_id: id })), 'FAILED_PRECONDITION');
    } finally {
      holder.kill('SIGKILL');
      await new Promise((r) => holder.once('exit', r));
    }
    await d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: staging });
    await d.client.deleteVolume({ volume_id: id });
    await stop(d, 'SIGTERM');
  });
});
