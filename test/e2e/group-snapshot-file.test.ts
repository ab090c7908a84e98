import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFile, readdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { beforeEach, describe, it } from 'node:test';
import { blockCap, createVolume, mountCap, paths, stageAndPublish, unpublishAndUnstage } from '../helpers/csi.js';
import { codeOf, MiB, needsRoot, type Driver } from '../helpers/driver.js';
import { useOwnPool } from '../helpers/own-pool.js';
import { dependentWriter } from '../helpers/dependent-writer.js';
import { snapshotterCreateGroupSnapshot } from '../helpers/sidecars.js';

const execFileP = promisify(execFile);

type Staged = { id: string; p: { staging: string; target: string } };

async function stagedVolumes(d: Driver, prefix: string, n: number, cap = mountCap('ext4')): Promise<Staged[]> {
  const out: Staged[] = [];
  for (let i = 0; i < n; i++) {
    const vol = await createVolume(d, `${prefix}-${i}`, 64 * MiB, cap);
    const p = await paths(d, vol.volume_id);
    await stageAndPublish(d, vol.volume_id, p, cap);
    out.push({ id: vol.volume_id, p });
  }
  return out;
}

async function removeVolumes(d: Driver, vols: Staged[]): Promise<void> {
  for (const v of vols) {
    await unpublishAndUnstage(d, v.id, v.p);
    await d.client.deleteVolume({ volume_id: v.id });
  }
}

/** The numbers a restored member's log holds. */
async function logOf(d: Driver, snapshotId: string, name: string): Promise<number[]> {
  const cap = mountCap('ext4');
  const vol = await createVolume(d, name, 64 * MiB, cap, { source: { snapshot: snapshotId } });
  const p = await paths(d, vol.volume_id);
  await stageAndPublish(d, vol.volume_id, p, cap, true);
  try {
    const text = await readFile(path.join(p.target, 'log'), 'utf8').catch(() => '');
    return text.split('\n').filter(Boolean).map(Number);
  } finally {
    await unpublishAndUnstage(d, vol.volume_id, p);
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  }
}

describe('group snapshots of a file pool on XFS: filesystems frozen, images reflinked, one point in time', needsRoot(), () => {
  const pool = useOwnPool('xfs');
  let d: Driver;
  beforeEach(() => {
    d = pool.d;
  });

  it('advertises the GroupController service and its one capability', async () => {
    const plugin = await d.client.getPluginCapabilities({});
    assert.ok(plugin.capabilities.some((c) => c.service?.type === 'GROUP_CONTROLLER_SERVICE'));
    const caps = await d.client.groupControllerGetCapabilities({});
    assert.deepEqual(caps.capabilities.map((c) => c.rpc?.type), ['CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT']);
  });

  it('crash consistency: dependent writes across 3 members while groups are cut again and again; every group is a prefix of the writes', async (t) => {
    const vols = await stagedVolumes(d, 'cc', 3);
    const writer = dependentWriter(vols.map((v) => ({ kind: 'dir' as const, path: v.p.target })));
    const groups: string[] = [];
    try {
      for (let g = 0; g < 5; g++) {
        // Cut while the writer is going: after it has made progress since the last cut.
        await writer.waitFor(writer.done() + 50);
        const res = await d.client.createVolumeGroupSnapshot({ name: `cc-${g}`, source_volume_ids: vols.map((v) => v.id), parameters: {} });
        groups.push(res.group_snapshot!.group_snapshot_id);
      }
      const lastWritten = writer.done();
      writer.proc.kill('SIGTERM');
      await new Promise((r) => writer.proc.once('exit', r));
      const cuts: number[] = [];
      for (const [g, gid] of groups.entries()) {
        const group = (await d.client.getVolumeGroupSnapshot({ group_snapshot_id: gid, snapshot_ids: [] })).group_snapshot!;
        assert.equal(group.snapshots.length, 3);
        assert.ok(group.ready_to_use);
        const present = new Set<number>();
        let most = 0;
        for (const s of group.snapshots) {
          assert.equal(s.group_snapshot_id, gid);
          const member = vols.findIndex((v) => v.id === s.source_volume_id);
          const log = await logOf(d, s.snapshot_id, `cc-${g}-r${member}`);
          for (const n of log) {
            assert.equal(n % 3, member, `write ${n} is in member ${member}'s log`);
            present.add(n);
            most = Math.max(most, n);
          }
        }
        const missing = [];
        for (let n = 1; n <= most; n++) if (!present.has(n)) missing.push(n);
        assert.deepEqual(missing, [], `group ${g} holds write ${most} but not every write before it: not one point in time`);
        cuts.push(most);
      }
      t.diagnostic(`group cuts at writes ${cuts.join(', ')} of ${lastWritten} written`);
      // The cuts follow the writes: later groups hold more (the writer never stopped).
      for (let i = 1; i < cuts.length; i++) assert.ok(cuts[i]! > cuts[i - 1]!, 'each group cut later than the one before');
    } finally {
      if (writer.proc.exitCode === null) writer.proc.kill('SIGKILL');
      for (const gid of groups) await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: gid, snapshot_ids: [] });
      await removeVolumes(d, vols);
    }
  });

  it('the spec\'s answers: idempotent create, ALREADY_EXISTS for other volumes, members deleted only with their group, snapshot_ids checked, a restore from a member, delete twice OK', async () => {
    const vols = await stagedVolumes(d, 'spec', 2);
    const other = await stagedVolumes(d, 'spec-other', 1);
    try {
      const ids = vols.map((v) => v.id);
      const one = (await d.client.createVolumeGroupSnapshot({ name: 'g1', source_volume_ids: ids, parameters: {} })).group_snapshot!;
      // As csi-snapshotter v8.3.0 asks with --extra-create-metadata (MODEL): its own keys in the parameters are no pool's.
      const viaSidecar = snapshotterCreateGroupSnapshot({ uid: '0f5e4c7a-51a4-4c52-a4a2-2d6f1c3c9b10', name: 'db', namespace: 'apps', contentName: 'groupsnapcontent-0f5e4c7a', volumeHandles: ids });
      const sidecarGroup = (await d.client.createVolumeGroupSnapshot(viaSidecar)).group_snapshot!;
      assert.equal(sidecarGroup.snapshots.length, 2);
      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: sidecarGroup.group_snapshot_id, snapshot_ids: [] });
      const again = (await d.client.createVolumeGroupSnapshot({ name: 'g1', source_volume_ids: [...ids].reverse(), parameters: {} })).group_snapshot!;
      assert.equal(again.group_snapshot_id, one.group_snapshot_id);
      assert.deepEqual(again.snapshots.map((s) => s.snapshot_id).sort(), one.snapshots.map((s) => s.snapshot_id).sort());
      const members = one.snapshots.map((s) => s.snapshot_id);
      const listed = (await d.client.listSnapshots({})).entries.map((e) => e.snapshot!);
      for (const m of members) assert.equal(listed.find((s) => s.snapshot_id === m)?.group_snapshot_id, one.group_snapshot_id, 'ListSnapshots shows each member with its group');

      const codes = {
        otherVolumes: await codeOf(d.client.createVolumeGroupSnapshot({ name: 'g1', source_volume_ids: [ids[0]!, other[0]!.id], parameters: {} })),
        noVolumes: await codeOf(d.client.createVolumeGroupSnapshot({ name: 'g2', source_volume_ids: [], parameters: {} })),
        twice: await codeOf(d.client.createVolumeGroupSnapshot({ name: 'g3', source_volume_ids: [ids[0]!, ids[0]!], parameters: {} })),
        badName: await codeOf(d.client.createVolumeGroupSnapshot({ name: '../g', source_volume_ids: ids, parameters: {} })),
        unknownParameter: await codeOf(d.client.createVolumeGroupSnapshot({ name: 'g4', source_volume_ids: ids, parameters: { fast: 'yes' } })),
        notInPool: await codeOf(d.client.createVolumeGroupSnapshot({ name: 'g5', source_volume_ids: [ids[0]!, 'vol-elsewhere-0123456789abcdef'], parameters: {} })),
        memberAlone: await codeOf(d.client.deleteSnapshot({ snapshot_id: members[0]! })),
        getMismatch: await codeOf(d.client.getVolumeGroupSnapshot({ group_snapshot_id: one.group_snapshot_id, snapshot_ids: [members[0]!] })),
        getUnknown: await codeOf(d.client.getVolumeGroupSnapshot({ group_snapshot_id: 'group-nope-0123456789abcdef', snapshot_ids: [] })),
        deleteMismatch: await codeOf(d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: one.group_snapshot_id, snapshot_ids: [members[0]!] })),
      };
      assert.deepEqual(codes, {
        otherVolumes: 'ALREADY_EXISTS',
        noVolumes: 'INVALID_ARGUMENT',
        twice: 'INVALID_ARGUMENT',
        badName: 'INVALID_ARGUMENT',
        unknownParameter: 'INVALID_ARGUMENT',
        notInPool: 'FAILED_PRECONDITION',
        memberAlone: 'INVALID_ARGUMENT',
        getMismatch: 'INVALID_ARGUMENT',
        getUnknown: 'NOT_FOUND',
        deleteMismatch: 'INVALID_ARGUMENT',
      });
      // A member restores like any snapshot.
      assert.deepEqual(await logOf(d, members[0]!, 'spec-restore'), []);

      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: one.group_snapshot_id, snapshot_ids: members });
      for (const m of members) assert.equal(await codeOf(d.client.getSnapshot({ snapshot_id: m })), 'NOT_FOUND');
      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: one.group_snapshot_id, snapshot_ids: members });
      assert.deepEqual(await readdir(path.join(d.poolDir, 'groups')).then((f) => f.filter((x) => x.endsWith('.json'))), []);
    } finally {
      await removeVolumes(d, [...vols, ...other]);
    }
  });

  it('calls cancelled at every point of the cut (deadlines of 1 to 60 ms) never leave a filesystem frozen, nor a group or member behind', async () => {
    const vols = await stagedVolumes(d, 'cancel', 2);
    try {
      let cut = 0;
      for (let ms = 1; ms <= 60; ms += 3) {
        const name = `cancel-${ms}`;
        const first = await d.client.createVolumeGroupSnapshot({ name, source_volume_ids: vols.map((v) => v.id), parameters: {} }, { deadline: Date.now() + ms }).then(
          () => true,
          () => false,
        );
        if (first) cut++;
        // The retry queues behind the first call on the group's lock (if that one is still at work after its deadline),
        // and returns only once its own cut, if it makes one, is thawed: then nothing of this name is running.
        const g = (await d.client.createVolumeGroupSnapshot({ name, source_volume_ids: vols.map((v) => v.id), parameters: {} })).group_snapshot!;
        assert.deepEqual((await readdir(path.join(d.poolDir, '.tmp'))).filter((f) => f.startsWith('freeze-')), [], `no freeze mark left after a call with a ${ms} ms deadline`);
        for (const v of vols) {
          // An unfreeze that succeeds means it was frozen: the failure this test looks for.
          const wasFrozen = await execFileP('fsfreeze', ['--unfreeze', v.p.staging]).then(() => true, () => false);
          assert.equal(wasFrozen, false, `${v.p.staging} was left frozen by a call with a ${ms} ms deadline`);
        }
        await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: g.group_snapshot_id, snapshot_ids: [] });
      }
      assert.deepEqual((await d.client.listSnapshots({})).entries, []);
      assert.ok(cut < 20, 'some calls were cut short by their deadline');
    } finally {
      await removeVolumes(d, vols);
    }
  });

  it('a member attached as a raw block device (nothing to freeze) is refused with the reason, and nothing is left', async () => {
    const fsVol = await stagedVolumes(d, 'rawmix-fs', 1);
    const raw = await stagedVolumes(d, 'rawmix-raw', 1, blockCap());
    try {
      const err = await d.client.createVolumeGroupSnapshot({ name: 'rawmix', source_volume_ids: [fsVol[0]!.id, raw[0]!.id], parameters: {} }).then(() => null, (e: Error & { code?: number }) => e);
      assert.equal(err?.code, 9, String(err));
      assert.match(err!.message, /attached as \/dev\/loop\d+ with no filesystem mounted from it here \(used as a raw block device/);
      assert.deepEqual((await d.client.listSnapshots({})).entries, []);
      // The filesystem member was never frozen: it takes a write at once.
      await writeFile(path.join(fsVol[0]!.p.target, 'after'), 'x');
    } finally {
      await removeVolumes(d, [...fsVol, ...raw]);
    }
  });

  it('a restart after a crash while frozen thaws what the freeze mark names, and removes members whose group was never committed', async () => {
    const vols = await stagedVolumes(d, 'crash', 2);
    try {
      // A group whose commit point is undone, as if the driver died between its members and its record.
      const g = (await d.client.createVolumeGroupSnapshot({ name: 'crash', source_volume_ids: vols.map((v) => v.id), parameters: {} })).group_snapshot!;
      await rm(path.join(d.poolDir, 'groups', `${g.group_snapshot_id}.json`));
      // And a filesystem left frozen, named by a freeze mark, as if it died between freeze and thaw.
      const staging = vols[0]!.p.staging;
      await execFileP('fsfreeze', ['--freeze', staging]);
      await writeFile(path.join(d.poolDir, '.tmp', `freeze-${g.group_snapshot_id}.json`), JSON.stringify([staging]));
      await d.stop();
      d = pool.d = await d.restart();
      // Thawed: a write completes (on a frozen filesystem it would wait until thawed).
      await writeFile(path.join(vols[0]!.p.target, 'thawed'), 'x');
      assert.ok(d.logs.some((l) => l.includes('a group snapshot was cut short while its filesystems were frozen; thawed') && l.includes(staging)));
      assert.deepEqual((await d.client.listSnapshots({})).entries, []);
      assert.deepEqual((await readdir(path.join(d.poolDir, 'snapshots'))).filter((f) => f !== '.changes'), [], 'the members are gone');
    } finally {
      await execFileP('fsfreeze', ['--unfreeze', vols[0]!.p.staging]).catch(() => undefined);
      await removeVolumes(d, vols);
    }
  });
});

describe('group snapshots of a file pool on ext4 (no reflink)', needsRoot(), () => {
  const pool = useOwnPool('ext4');
  let d: Driver;
  beforeEach(() => {
    d = pool.d;
  });

  it('attached members are refused (a frozen copy would hold the workload for the whole copy); detached members are cut', async () => {
    const vols = await stagedVolumes(d, 'ext', 2);
    try {
      const err = await d.client.createVolumeGroupSnapshot({ name: 'ext', source_volume_ids: vols.map((v) => v.id), parameters: {} }).then(() => null, (e: Error & { code?: number }) => e);
      assert.equal(err?.code, 9, String(err));
      assert.match(err!.message, /2 of the volumes are attached and the pool's filesystem cannot reflink/);
      for (const v of vols) await writeFile(path.join(v.p.target, 'log'), '1\n');
      for (const v of vols) await unpublishAndUnstage(d, v.id, v.p);
      const g = (await d.client.createVolumeGroupSnapshot({ name: 'ext', source_volume_ids: vols.map((v) => v.id), parameters: {} })).group_snapshot!;
      assert.equal(g.snapshots.length, 2);
      assert.deepEqual(await logOf(d, g.snapshots[0]!.snapshot_id, 'ext-restore'), [1]);
      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: g.group_snapshot_id, snapshot_ids: [] });
      for (const v of vols) await stageAndPublish(d, v.id, v.p, mountCap('ext4'));
    } finally {
      await removeVolumes(d, vols);
    }
  });
});
