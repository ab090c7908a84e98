import assert from 'node:assert/strict';
import { execFile, execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import type { OrphanReport } from '../../src/cluster/orphans.js';
import { idFor } from '../../src/ids.js';
import { BIN, MiB, needsRoot } from '../helpers/driver.js';
import type { FakeApiServer } from '../helpers/fake-apiserver.js';
import { startFakeCluster } from '../helpers/kube.js';
import { forgetVg, loopDisks, poolCmd, uniqueVg, type LoopDisks } from '../helpers/lvm.js';

const execFileP = promisify(execFile);
const NOACT = ['--config', 'global{activation=0}'];

// The real `vpool-csi reconcile` on an lvm pool of this host (activation disabled: metadata only)
// against the FAKE API server: the LVs a receiver killed mid-restore leaves, when the claim is
// deleted instead of retried and no sweeping process reopens the pool.
describe('orphan reconciliation of unfinished volumes (lvm, a crashed restore whose claim was deleted)', needsRoot(), () => {
  let fake: FakeApiServer;
  let kubeconfig: string;
  let disks: LoopDisks;
  const vg = uniqueVg('vpu');
  const old = idFor('vol', 'pvc-crashed-long-ago');
  const young = idFor('vol', 'pvc-crashed-just-now');
  const complete = idFor('vol', 'pvc-complete');
  const reconcile = async (...args: string[]) => {
    const { stdout } = await execFileP(BIN, ['reconcile', '--backend', 'lvm', '--vg', vg, '--node-id', 'test-node', '--kubeconfig', kubeconfig, ...args]);
    return JSON.parse(stdout) as OrphanReport;
  };
  const lvNames = () => execFileSync('lvs', [...NOACT, '--noheadings', '-o', 'lv_name', vg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n').map((l) => l.trim()).filter(Boolean).sort();
  const free = () => Number(execFileSync('vgs', [...NOACT, '--noheadings', '--units', 'b', '--nosuffix', '-o', 'vg_free', vg], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim());
  /** An LV as createFilledLv makes it (vpool.incomplete until filled), created `ageMs` ago. */
  const lv = (id: string, ageMs: number, incomplete: boolean) =>
    execFileSync('lvcreate', [...NOACT, '-an', '-Zn', '-y', '-L', '64m', '-n', id, '--addtag', 'vpool.kind=vol', '--addtag', `vpool.name=${id}`, '--addtag', `vpool.created=${Date.now() - ageMs}`, ...(incomplete ? ['--addtag', 'vpool.incomplete'] : []), vg], { stdio: 'ignore' });

  before(async () => {
    ({ fake, kubeconfig } = await startFakeCluster());
    disks = await loopDisks(1, 512 * MiB);
    assert.equal((await poolCmd('init', '--vg', vg, disks.devices[0])).code, 0);
    lv(old, 3 * 3600_000, true);
    lv(young, 0, true);
    lv(complete, 3 * 3600_000, false);
    fake.create('persistentvolumes', { metadata: { name: 'pv-complete' }, spec: { csi: { driver: 'vpool.csi.dev', volumeHandle: complete } } });
  });
  after(async () => {
    await fake?.stop();
    await poolCmd('destroy', '--vg', vg, '--force');
    await forgetVg(vg, disks.devices);
    await disks.release();
  });

  it('reports them (not as volumes: no PV can name them), deletes nothing on a dry run, then deletes only those past the grace period', async () => {
    const dry = await reconcile('--dry-run');
    assert.deepEqual(dry.volumes, [], 'the complete volume has its PV; the unfinished ones are not volumes');
    assert.deepEqual(dry.unfinished.map((u) => [u.id, u.sizeBytes, u.action]).sort(), [[old, 64 * MiB, 'reported'], [young, 64 * MiB, 'reported']].sort());
    assert.ok(dry.unfinished.find((u) => u.id === old)!.ageSeconds >= 3 * 3600 - 60);
    assert.deepEqual(lvNames(), [complete, old, young].sort());
    const said = fake.list('events', 'default').filter((e) => e.reason === 'UnfinishedVolume').map((e) => String(e.message));
    assert.ok(said.some((m) => m.includes(old) && m.endsWith('not deleted (dry run)')), said.join('\n'));

    const before = free();
    const r = await reconcile('--grace-period', '1h');
    assert.deepEqual(Object.fromEntries(r.unfinished.map((u) => [u.id, u.action])), { [old]: 'deleted', [young]: 'kept: younger than the grace period' });
    assert.deepEqual(lvNames(), [complete, young].sort(), 'the old leftover is gone, the young one and the complete volume stay');
    assert.equal(free(), before + 64 * MiB, 'its space is back');
    const again = await reconcile('--grace-period', '0');
    assert.deepEqual(again.unfinished.map((u) => [u.id, u.action]), [[young, 'deleted']]);
    assert.deepEqual(lvNames(), [complete]);
  });
});
