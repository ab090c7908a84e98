import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { idFor, memberIdFor } from '../../src/ids.js';
import { blockCap } from '../helpers/csi.js';
import { readAt, writeAt } from '../helpers/data.js';
import { missingBelowMost, recordsOn } from '../helpers/dependent-writer.js';
import { codeOf, MiB, needsRoot, pattern, startDriver, type Driver } from '../helpers/driver.js';
import { snapshotterCreateGroupSnapshot } from '../helpers/sidecars.js';
import { dirPool, finishHypervisorSuite, guestDisk, pollUntil, startLibvirt, testDomain, URI, virsh, type TestDomain, type TestPool } from '../helpers/libvirt.js';

const SIZE = 16 * MiB;

// Group snapshots of a libvirt pool, for real: a TCG domain under a real libvirtd whose guest writes
// dependent writes across three hot-plugged disks (test/libvirt/idle-guest.sh, vpwriter=3) while
// groups are cut by one backup job over all three.
describe('libvirt group snapshots: one backup job over the disks of one running domain', needsRoot(), () => {
  let pool: TestPool;
  let d: Driver;
  let writerDom: TestDomain;
  let otherDom: TestDomain;
  let stoppedDom: TestDomain;
  const create = async (name: string, bytes = SIZE) =>
    (await d.client.createVolume({ name, capacity_range: { required_bytes: String(bytes) }, volume_capabilities: [blockCap()], parameters: {} })).volume!;
  const publish = (volume_id: string, node_id: string) =>
    d.client.controllerPublishVolume({ volume_id, node_id, volume_capability: blockCap(), readonly: false, secrets: {}, volume_context: {} });
  /** How a call failed (its gRPC code and message), or null when it did not. */
  const failure = (p: Promise<unknown>) => p.then(() => null, (e: { code: number; details: string }) => e);
  const fileOf = async (id: string) => path.join(pool.dir, (await pool.volumes()).find((n) => n.startsWith(`${id}.`))!);
  /** The highest "GUEST WROTE n" the writer printed. */
  const written = async () => Math.max(0, ...[...(await writerDom.console()).matchAll(/^GUEST WROTE (\d+)$/gm)].map((m) => Number(m[1])));
  const writesReach = (n: number) =>
    pollUntil(async () => ((await written()) >= n ? true : undefined), 120_000, async () => `the guest's writer did not reach write ${n}:\n${(await writerDom.console()).slice(-2000)}`);

  before(async () => {
    await startLibvirt();
    pool = await dirPool('vpool-gs');
    const tag = path.basename(pool.dir).slice(-6);
    writerDom = await testDomain(`vpool-gsw-${tag}`, `${pool.dir}-dom`, true, { writer: 3 });
    otherDom = await testDomain(`vpool-gso-${tag}`, `${pool.dir}-dom`, true);
    stoppedDom = await testDomain(`vpool-gss-${tag}`, `${pool.dir}-dom`, false);
    d = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'hv-test', '--attach-timeout', '20'] });
  });
  after(() => finishHypervisorSuite(d, pool, [writerDom, otherDom, stoppedDom]));

  it('advertises the GroupController service on the libvirt pool', async () => {
    const caps = await d.client.groupControllerGetCapabilities({});
    assert.deepEqual(caps.capabilities.map((c) => c.rpc?.type), ['CREATE_DELETE_GET_VOLUME_GROUP_SNAPSHOT']);
  });

  it('crash consistency: the guest writes dependent writes across 3 disks while groups are cut again and again; every group is a prefix of the writes', async (t) => {
    const vols = [await create('cc-0'), await create('cc-1'), await create('cc-2')];
    // A fourth member no domain has: copied by libvirt beside the job, as it stands.
    const still = await create('cc-still');
    const stillData = pattern('still', MiB);
    await writeAt(await fileOf(still.volume_id), 2 * MiB, stillData);
    const groups: string[] = [];
    try {
      for (const v of vols) await publish(v.volume_id, writerDom.uuid);
      await writerDom.waitDisks((l) => vols.every((v) => guestDisk(l, `vp-${v.volume_id.slice(-16)}`) !== null));
      await pollUntil(async () => ((await writerDom.console()).includes('GUEST WRITER ON') ? true : undefined), 60_000, async () => `the guest's writer never started:\n${await writerDom.console()}`);
      for (let g = 0; g < 4; g++) {
        // Cut while the guest is writing: after it has made progress since the last cut.
        await writesReach((await written()) + 40);
        const res = await d.client.createVolumeGroupSnapshot({ name: `cc-${g}`, source_volume_ids: [...vols, still].map((v) => v.volume_id), parameters: {} });
        groups.push(res.group_snapshot!.group_snapshot_id);
      }
      const lastWritten = await written();
      assert.ok(d.logs.some((l) => l.includes('copying a running disk with a backup job') && /vd[b-z],vd[b-z],vd[b-z]/.test(l)), 'one backup job over the three disks');
      const console = await writerDom.console();
      assert.doesNotMatch(console, /GUEST WRITER (FAILED|FULL)/, 'the writer went on through every cut');

      const cuts: number[] = [];
      for (const [g, gid] of groups.entries()) {
        const group = (await d.client.getVolumeGroupSnapshot({ group_snapshot_id: gid, snapshot_ids: [] })).group_snapshot!;
        assert.equal(group.snapshots.length, 4);
        assert.ok(group.ready_to_use);
        const members: number[][] = [];
        for (const s of group.snapshots) {
          assert.equal(s.group_snapshot_id, gid);
          if (s.source_volume_id === still.volume_id) {
            assert.ok((await readAt(await fileOf(s.snapshot_id), 2 * MiB, MiB)).equals(stillData), 'the detached member as it stood');
            continue;
          }
          const records = await recordsOn(await fileOf(s.snapshot_id), SIZE);
          // Each disk holds one residue class of the writes, in order: the writer's own records.
          assert.ok(records.every((n, i) => n % 3 === records[0]! % 3 && (i === 0 || n === records[i - 1]! + 3)), `member ${s.snapshot_id} holds the writer's records in order`);
          members.push(records);
        }
        const { most, missing } = missingBelowMost(members);
        assert.deepEqual(missing, [], `group ${g} holds write ${most} but not every write before it: not one point in time`);
        assert.ok(most > 0, `group ${g} holds writes`);
        cuts.push(most);
      }
      t.diagnostic(`group cuts at writes ${cuts.join(', ')}; the guest had reported ${lastWritten} writes done (it reports every 20th)`);
      for (let i = 1; i < cuts.length; i++) assert.ok(cuts[i]! > cuts[i - 1]!, 'each group cut later than the one before (the guest never stopped)');

      // A domain runs one backup job at a time: snapshots of two of its disks at once take turns, and both are made.
      const both = await Promise.all(vols.slice(0, 2).map((v, i) => d.client.createSnapshot({ name: `turns-${i}`, source_volume_id: v.volume_id, parameters: {}, secrets: {} })));
      for (const r of both) {
        assert.ok(r.snapshot?.ready_to_use);
        await d.client.deleteSnapshot({ snapshot_id: r.snapshot!.snapshot_id });
      }
    } finally {
      for (const gid of groups) await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: gid, snapshot_ids: [] });
      for (const v of vols) await d.client.controllerUnpublishVolume({ volume_id: v.volume_id, node_id: writerDom.uuid, secrets: {} });
      for (const v of [...vols, still]) await d.client.deleteVolume({ volume_id: v.volume_id });
    }
  });

  it('the spec\'s answers: idempotent create, ALREADY_EXISTS for other volumes, members deleted only with their group, a restore from a member, delete twice OK', async () => {
    const vols = [await create('spec-0'), await create('spec-1')];
    const other = await create('spec-other');
    try {
      const data = vols.map((v, i) => pattern(`member-${i}`, MiB));
      for (const [i, v] of vols.entries()) await writeAt(await fileOf(v.volume_id), 3 * MiB, data[i]!);
      const ids = vols.map((v) => v.volume_id);
      // As the chart's csi-snapshotter asks (MODEL of v8.3.0 with --extra-create-metadata): its own keys in the parameters.
      const asked = snapshotterCreateGroupSnapshot({ uid: '6f1c3c9b-0f5e-4c7a-a4a2-2d6f1c3c9b10', name: 'db', namespace: 'apps', contentName: 'groupsnapcontent-6f1c3c9b', volumeHandles: ids });
      const one = (await d.client.createVolumeGroupSnapshot(asked)).group_snapshot!;
      // The sidecar asks again to see a dynamic group ready: the same group.
      const again = (await d.client.createVolumeGroupSnapshot({ ...asked, source_volume_ids: [...ids].reverse() })).group_snapshot!;
      assert.equal(again.group_snapshot_id, one.group_snapshot_id);
      assert.deepEqual(again.snapshots.map((s) => s.snapshot_id).sort(), one.snapshots.map((s) => s.snapshot_id).sort());
      const members = one.snapshots.map((s) => s.snapshot_id);
      const listed = (await d.client.listSnapshots({})).entries.map((e) => e.snapshot!);
      for (const m of members) assert.equal(listed.find((s) => s.snapshot_id === m)?.group_snapshot_id, one.group_snapshot_id, 'ListSnapshots shows each member with its group');
      assert.equal((await d.client.getVolumeGroupSnapshot({ group_snapshot_id: one.group_snapshot_id, snapshot_ids: members })).group_snapshot?.ready_to_use, true);

      const codes = {
        otherVolumes: await codeOf(d.client.createVolumeGroupSnapshot({ ...asked, source_volume_ids: [ids[0]!, other.volume_id] })),
        unknownParameter: await codeOf(d.client.createVolumeGroupSnapshot({ ...asked, name: 'g6', parameters: { ...asked.parameters, fast: 'yes' } })),
        notInPool: await codeOf(d.client.createVolumeGroupSnapshot({ name: 'g5', source_volume_ids: [ids[0]!, 'vol-elsewhere-0123456789abcdef'], parameters: {} })),
        memberAlone: await codeOf(d.client.deleteSnapshot({ snapshot_id: members[0]! })),
        getMismatch: await codeOf(d.client.getVolumeGroupSnapshot({ group_snapshot_id: one.group_snapshot_id, snapshot_ids: [members[0]!] })),
        getUnknown: await codeOf(d.client.getVolumeGroupSnapshot({ group_snapshot_id: 'group-nope-0123456789abcdef', snapshot_ids: [] })),
      };
      assert.deepEqual(codes, { otherVolumes: 'ALREADY_EXISTS', unknownParameter: 'INVALID_ARGUMENT', notInPool: 'FAILED_PRECONDITION', memberAlone: 'INVALID_ARGUMENT', getMismatch: 'INVALID_ARGUMENT', getUnknown: 'NOT_FOUND' });

      // A member restores like any snapshot.
      const member0 = one.snapshots.find((s) => s.source_volume_id === ids[0])!;
      const restored = (await d.client.createVolume({ name: 'spec-restore', volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { snapshot: { snapshot_id: member0.snapshot_id } } })).volume!;
      assert.ok((await readAt(await fileOf(restored.volume_id), 3 * MiB, MiB)).equals(data[0]!), 'the restore holds the member\'s data');
      await d.client.deleteVolume({ volume_id: restored.volume_id });

      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: one.group_snapshot_id, snapshot_ids: members });
      for (const m of members) assert.equal(await codeOf(d.client.getSnapshot({ snapshot_id: m })), 'NOT_FOUND');
      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: one.group_snapshot_id, snapshot_ids: members });
      assert.deepEqual((await pool.volumes()).filter((n) => n.startsWith('group-') || n.startsWith('snap-')), [], 'no record, member or marker left');
    } finally {
      for (const v of [...vols, other]) await d.client.deleteVolume({ volume_id: v.volume_id });
    }
  });

  it('members written by two running domains are refused with the reason (two jobs would be two instants); nothing is left', async () => {
    const a = await create('two-a');
    const b = await create('two-b');
    try {
      await publish(a.volume_id, writerDom.uuid);
      await publish(b.volume_id, otherDom.uuid);
      const before = await pool.volumes();
      const err = await failure(d.client.createVolumeGroupSnapshot({ name: 'two', source_volume_ids: [a.volume_id, b.volume_id], parameters: {} }));
      assert.equal(err?.code, 9, 'FAILED_PRECONDITION');
      assert.match(err!.details, new RegExp(`written by 2 running domains .*${writerDom.name}|written by 2 running domains .*${otherDom.name}`));
      assert.deepEqual(await pool.volumes(), before, 'no member, record or marker made');
    } finally {
      await d.client.controllerUnpublishVolume({ volume_id: a.volume_id, node_id: writerDom.uuid, secrets: {} });
      await d.client.controllerUnpublishVolume({ volume_id: b.volume_id, node_id: otherDom.uuid, secrets: {} });
      await d.client.deleteVolume({ volume_id: a.volume_id });
      await d.client.deleteVolume({ volume_id: b.volume_id });
    }
  });

  it('a call past its deadline mid-cut: the cut and its backup job run to their end and the retry gets the group; a disk read-write in two running domains is refused; a young dated marker of a snapshot is ABORTED', async () => {
    // Large enough that its backup job outlasts the first call's 300 ms.
    const a = await create('late-a', 512 * MiB);
    const b = await create('late-b');
    const shared = await create('shared');
    try {
      await publish(a.volume_id, writerDom.uuid);
      await publish(b.volume_id, writerDom.uuid);
      const data = pattern('late', MiB);
      await writeAt(await fileOf(a.volume_id), 4 * MiB, data);
      for (let at = 8; at < 512; at += 8) await writeAt(await fileOf(a.volume_id), at * MiB, pattern(`fill-${at}`, 8 * MiB));
      // How long a cut of these two takes here, so that the next call's deadline falls in the middle of one.
      // (Twice: the first reads the disk cold, and the call timed below finds it warm.)
      let took = 0;
      for (const name of ['late-probe-1', 'late-probe-2']) {
        const t0 = performance.now();
        const probe = (await d.client.createVolumeGroupSnapshot({ name, source_volume_ids: [a.volume_id, b.volume_id], parameters: {} })).group_snapshot!;
        took = performance.now() - t0;
        await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: probe.group_snapshot_id, snapshot_ids: [] });
      }
      const jobs = () => d.logs.filter((l) => l.includes('copying a running disk with a backup job') && /"snapshot":"group-late-[0-9a-f]{16}"/.test(l)).length;
      const late = await d.client.createVolumeGroupSnapshot({ name: 'late', source_volume_ids: [a.volume_id, b.volume_id], parameters: {} }, { deadline: Date.now() + took / 2 }).then(
        () => 'OK',
        (e: { code: number }) => e.code,
      );
      assert.equal(late, 4, `DEADLINE_EXCEEDED: the call gave up ${Math.round(took / 2)} ms in, half way through a cut that takes ${Math.round(took)} ms`);

      // The retry queues behind the cut still at work on the group's lock, and returns the group it made.
      const g = (await d.client.createVolumeGroupSnapshot({ name: 'late', source_volume_ids: [a.volume_id, b.volume_id], parameters: {} })).group_snapshot!;
      assert.ok(g.ready_to_use);
      assert.equal(g.snapshots.length, 2);
      const memberA = g.snapshots.find((m) => m.source_volume_id === a.volume_id)!;
      assert.ok((await readAt(await fileOf(memberA.snapshot_id), 4 * MiB, MiB)).equals(data), 'the member holds the disk\'s data: the job ran to its end');
      assert.ok(!d.logs.some((l) => l.includes('aborted a backup job')), 'no job was aborted');
      assert.equal(jobs(), 1, 'one backup job for both calls: the retry took the cut the first call began');
      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: g.group_snapshot_id, snapshot_ids: [] });

      // A shared disk read-write in two running node VMs (a live migration): one job would catch one QEMU's writes only.
      const multi = blockCap('MULTI_NODE_MULTI_WRITER');
      for (const dom of [writerDom, otherDom]) await d.client.controllerPublishVolume({ volume_id: shared.volume_id, node_id: dom.uuid, volume_capability: multi, readonly: false, secrets: {}, volume_context: {} });
      const before = await pool.volumes();
      const single = await failure(d.client.createSnapshot({ name: 'shared-snap', source_volume_id: shared.volume_id, parameters: {}, secrets: {} }));
      assert.equal(single?.code, 9);
      assert.match(single!.details, /written by 2 running domains/);
      assert.equal(await codeOf(d.client.createVolumeGroupSnapshot({ name: 'shared-group', source_volume_ids: [shared.volume_id, a.volume_id], parameters: {} })), 'FAILED_PRECONDITION');
      assert.deepEqual(await pool.volumes(), before, 'nothing made');

      // Another process's copy of a running disk under way (a dated marker, minutes old): a retry here waits its turn.
      const dated = `${idFor('snap', 'copied-elsewhere')}.t${(Date.now() - 5 * 60_000).toString(36)}.incomplete`;
      await virsh('vol-create-as', pool.name, dated, '0', '--allocation', '0');
      assert.equal(await codeOf(d.client.createSnapshot({ name: 'copied-elsewhere', source_volume_id: a.volume_id, parameters: {}, secrets: {} })), 'ABORTED');
      assert.ok((await pool.volumes()).includes(dated), 'the marker is left to its process');
      await virsh('vol-delete', '--pool', pool.name, dated);
    } finally {
      for (const dom of [writerDom, otherDom]) await d.client.controllerUnpublishVolume({ volume_id: shared.volume_id, node_id: dom.uuid, secrets: {} });
      for (const v of [a, b]) await d.client.controllerUnpublishVolume({ volume_id: v.volume_id, node_id: writerDom.uuid, secrets: {} });
      for (const v of [a, b, shared]) await d.client.deleteVolume({ volume_id: v.volume_id });
    }
  });

  it('a member read-write in a domain that is not running is refused (it could start during the copy); nothing is left', async () => {
    const a = await create('stopped-a');
    const b = await create('stopped-b');
    try {
      await publish(a.volume_id, stoppedDom.uuid);
      const before = await pool.volumes();
      const err = await failure(d.client.createVolumeGroupSnapshot({ name: 'stopped', source_volume_ids: [a.volume_id, b.volume_id], parameters: {} }));
      assert.equal(err?.code, 9, 'FAILED_PRECONDITION');
      assert.match(err!.details, new RegExp(`attached read-write to domain ${stoppedDom.name}, which is not running but could start`));
      // A single snapshot and a clone of it likewise (one writer rule for every copy).
      const single = await failure(d.client.createSnapshot({ name: 'stopped-snap', source_volume_id: a.volume_id, parameters: {}, secrets: {} }));
      assert.deepEqual([single?.code, /which is not running but could start/.test(single?.details ?? '')], [9, true]);
      const clone = await failure(d.client.createVolume({ name: 'stopped-clone', volume_capabilities: [blockCap()], parameters: {}, volume_content_source: { volume: { volume_id: a.volume_id } } }));
      assert.deepEqual([clone?.code, /which is not running but could start/.test(clone?.details ?? '')], [9, true]);
      assert.deepEqual(await pool.volumes(), before);
    } finally {
      await d.client.controllerUnpublishVolume({ volume_id: a.volume_id, node_id: stoppedDom.uuid, secrets: {} });
      await d.client.deleteVolume({ volume_id: a.volume_id });
      await d.client.deleteVolume({ volume_id: b.volume_id });
    }
  });

  it('a group a crash left half-made is never listed; a young marker (maybe another process\'s cut) is left alone and its group refused ABORTED, an old one is swept at start; a half-done delete is finished by its retry; a record without members is never ready', async () => {
    const v = await create('crash-src');
    const member = (gid: string, sid: string) => `${sid}.of-${v.volume_id.slice(-16)}.t${Date.now().toString(36)}.g${gid.slice(-16)}.raw`;
    try {
      // What a controller killed between a group's marker and its commit leaves: an old marker (2 hours) and a young one (now).
      const oldGid = idFor('group', 'never-committed');
      const oldSid = memberIdFor(`${oldGid}/${v.volume_id}`);
      await virsh('vol-create-as', pool.name, `${oldGid}.t${(Date.now() - 2 * 3_600_000).toString(36)}.incomplete`, '0', '--allocation', '0');
      await virsh('vol-create-as', pool.name, member(oldGid, oldSid), String(SIZE), '--format', 'raw', '--allocation', '0');
      const youngGid = idFor('group', 'young');
      const youngSid = memberIdFor(`${youngGid}/${v.volume_id}`);
      await virsh('vol-create-as', pool.name, `${youngGid}.t${Date.now().toString(36)}.incomplete`, '0', '--allocation', '0');
      await virsh('vol-create-as', pool.name, member(youngGid, youngSid), String(SIZE), '--format', 'raw', '--allocation', '0');
      for (const [gid, sid] of [[oldGid, oldSid], [youngGid, youngSid]] as const) {
        assert.equal(await codeOf(d.client.getSnapshot({ snapshot_id: sid })), 'NOT_FOUND', 'a member of an uncommitted group does not exist');
        assert.ok(!(await d.client.listSnapshots({})).entries.some((e) => e.snapshot?.snapshot_id === sid));
        assert.equal(await codeOf(d.client.getVolumeGroupSnapshot({ group_snapshot_id: gid, snapshot_ids: [] })), 'NOT_FOUND');
      }
      await d.stop('SIGKILL');
      d = await d.restart();
      const names = await pool.volumes();
      assert.deepEqual(names.filter((n) => n.startsWith(oldGid) || n.startsWith(oldSid)), [], 'the sweep removed the old marker\'s member and the marker');
      assert.equal(names.filter((n) => n.startsWith(youngGid) || n.startsWith(youngSid)).length, 2, 'a young marker and its member are left to whoever may be cutting them');
      assert.equal(await codeOf(d.client.createVolumeGroupSnapshot({ name: 'young', source_volume_ids: [v.volume_id], parameters: {} })), 'ABORTED', 'a retry does not clear a young marker');
      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: youngGid, snapshot_ids: [] });
      assert.deepEqual((await pool.volumes()).filter((n) => n.startsWith(youngGid) || n.startsWith(youngSid)), [], 'DeleteVolumeGroupSnapshot removes it');

      // A delete stopped after its marker: the group is gone from view at once, and the retry finishes it.
      const g = (await d.client.createVolumeGroupSnapshot({ name: 'half-deleted', source_volume_ids: [v.volume_id], parameters: {} })).group_snapshot!;
      await virsh('vol-create-as', pool.name, `${g.group_snapshot_id}.t${Date.now().toString(36)}.incomplete`, '0', '--allocation', '0');
      assert.equal(await codeOf(d.client.getVolumeGroupSnapshot({ group_snapshot_id: g.group_snapshot_id, snapshot_ids: [] })), 'NOT_FOUND');
      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: g.group_snapshot_id, snapshot_ids: g.snapshots.map((s) => s.snapshot_id) });
      assert.deepEqual((await pool.volumes()).filter((n) => n.startsWith('group-') || n.startsWith('snap-')), []);

      // A group one of whose members was removed by hand: the group and the member left are not ready.
      const w = await create('crash-src-2');
      const short = (await d.client.createVolumeGroupSnapshot({ name: 'short', source_volume_ids: [v.volume_id, w.volume_id], parameters: {} })).group_snapshot!;
      const gone = short.snapshots.find((m) => m.source_volume_id === w.volume_id)!;
      await virsh('vol-delete', '--pool', pool.name, (await pool.volumes()).find((n) => n.startsWith(`${gone.snapshot_id}.`))!);
      const left = short.snapshots.find((m) => m.source_volume_id === v.volume_id)!;
      assert.equal((await d.client.getVolumeGroupSnapshot({ group_snapshot_id: short.group_snapshot_id, snapshot_ids: [] })).group_snapshot?.ready_to_use, false);
      assert.equal((await d.client.listSnapshots({ snapshot_id: left.snapshot_id })).entries[0]?.snapshot?.ready_to_use, false, 'ListSnapshots (what csi-snapshotter asks of a member) says not ready');
      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: short.group_snapshot_id, snapshot_ids: [] });
      await d.client.deleteVolume({ volume_id: w.volume_id });

      // A record whose members are gone (a hand's work): the group is there, and not ready.
      const bare = idFor('group', 'bare');
      await virsh('vol-create-as', pool.name, `${bare}.n2.group`, '0', '--allocation', '0');
      const seen = (await d.client.getVolumeGroupSnapshot({ group_snapshot_id: bare, snapshot_ids: [] })).group_snapshot!;
      assert.deepEqual({ ready: seen.ready_to_use, members: seen.snapshots.length }, { ready: false, members: 0 });
      await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: bare, snapshot_ids: [] });
      assert.deepEqual((await pool.volumes()).filter((n) => n.startsWith('group-') || n.startsWith('snap-')), []);
    } finally {
      await d.client.deleteVolume({ volume_id: v.volume_id });
    }
  });
});
