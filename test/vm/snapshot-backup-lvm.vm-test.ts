// Runs INSIDE the QEMU VM (test/vm/vm-run.sh), whose Debian kernel has device-mapper, dm-thin and
// dm-snapshot: the lvm pool's SnapshotMetadata (thin_dump/thin_delta on a reserved metadata
// snapshot; the copy-on-write table of thick snapshots) and its group snapshots (members' dm devices
// suspended while they are cut), for real. Started by test/e2e/snapshot-backup-lvm-vm.test.ts.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap, createVolume, mountCap, paths, stageAndPublish, unpublishAndUnstage } from '../helpers/csi.js';
import { readAt, writeAt } from '../helpers/data.js';
import { dependentWriter, missingBelowMost, recordsOn, type WriterTarget } from '../helpers/dependent-writer.js';
import { shSaying as sh } from '../helpers/lvm-vm.js';
import { bytesIn, covered, rangesOf, type Range } from '../helpers/snapshot-metadata.js';
import { BIN, codeOf, finish, MiB, pattern, startDriver, type Driver } from '../helpers/driver.js';

const VG = 'cbtpool';
const DISKS = ['/dev/disk/by-id/virtio-data0', '/dev/disk/by-id/virtio-data1'];
const K = 4096;
const RUN_DIR = '/run/vpool-csi';

const lvNames = () => sh('lvs', ['--noheadings', '-o', 'lv_name', VG]).split('\n').map((l) => l.trim()).filter(Boolean).sort();

describe('lvm pool: snapshot metadata and group snapshots on real device-mapper', { timeout: 1_740_000 }, () => {
  let d: Driver;
  before(async () => {
    execFileSync('modprobe', ['-a', 'dm_thin_pool', 'dm_snapshot']);
    sh(BIN, ['pool', 'init', '--vg', VG, '--thin-pool', 'thin', '--thin-size', '50%', ...DISKS]);
    d = await startDriver({ args: ['--backend', 'lvm', '--vg', VG, '--overprovision-ratio', '3'] });
  });
  after(async () => {
    if (!d) return;
    for (const l of d.logs) if (/"level":"(error)"/.test(l)) console.log(`driver: ${l.slice(0, 1500)}`);
    assert.deepEqual(await finish(d), []);
    assert.deepEqual(lvNames(), ['thin'], 'only the thin pool is left');
    sh(BIN, ['pool', 'destroy', '--vg', VG]);
  });

  /** A volume restored from a snapshot, read whole through a raw block publish, then deleted. */
  async function restoredBytes(snapshotId: string, size: number, params: Record<string, string>): Promise<Buffer> {
    const cap = blockCap();
    const vol = await createVolume(d, `restore-${snapshotId.slice(5, 20)}-${Date.now()}`, size, cap, { source: { snapshot: snapshotId }, parameters: params });
    const p = await paths(d, vol.volume_id);
    await stageAndPublish(d, vol.volume_id, p, cap);
    try {
      return await readAt(p.target, 0, size);
    } finally {
      await unpublishAndUnstage(d, vol.volume_id, p);
      await d.client.deleteVolume({ volume_id: vol.volume_id });
    }
  }

  it('advertises both services', async () => {
    const caps = (await d.client.getPluginCapabilities({})).capabilities.map((c) => c.service?.type);
    assert.ok(caps.includes('SNAPSHOT_METADATA_SERVICE') && caps.includes('GROUP_CONTROLLER_SERVICE'), String(caps));
  });

  for (const type of ['thin', 'thick'] as const) {
    it(`${type}: allocated(snap1) + delta(snap1→snap2) restores snap2 byte for byte, every changed block in the delta${type === 'thin' ? ' (overwrites, a discard, a resize)' : ' (overwrites)'}`, async (t) => {
      const cap = blockCap();
      const params = { type };
      const size1 = 16 * MiB;
      const vol = await createVolume(d, `cbt-${type}`, size1, cap, { parameters: params });
      const p = await paths(d, vol.volume_id);
      await stageAndPublish(d, vol.volume_id, p, cap);
      const snaps: string[] = [];
      const snapParams: Record<string, string> = type === 'thick' ? { snapshotReserve: '100%' } : {};
      try {
        await writeAt(p.target, 0, pattern(`${type}-one-a`, 256 * 1024));
        await writeAt(p.target, 4 * MiB, pattern(`${type}-one-b`, MiB));
        await writeAt(p.target, 12 * MiB, pattern(`${type}-one-c`, 64 * 1024));
        const s1 = (await d.client.createSnapshot({ name: `cbt-${type}-1`, source_volume_id: vol.volume_id, parameters: snapParams })).snapshot!;
        snaps.push(s1.snapshot_id);

        const changes: Range[] = [];
        const write = async (at: number, n: number, seed: string) => {
          await writeAt(p.target, at, pattern(seed, n));
          changes.push([at, at + n]);
        };
        await write(64 * 1024, 8 * 1024, `${type}-two-a`);
        await write(4.5 * MiB, K, `${type}-two-b`);
        await write(8 * MiB, 128 * 1024, `${type}-two-c`);
        let size2 = size1;
        if (type === 'thin') {
          // A whole pool block (64 KiB) discarded: the thin pool unmaps it, so it reads zeros in snap2.
          sh('blkdiscard', ['--offset', String(4 * MiB), '--length', String(64 * 1024), p.target]);
          changes.push([4 * MiB, 4 * MiB + 64 * 1024]);
          size2 = 24 * MiB;
          await d.client.nodeExpandVolume({ volume_id: vol.volume_id, volume_path: p.target, capacity_range: { required_bytes: String(size2) } });
          await write(20 * MiB, 32 * 1024, `${type}-two-d`);
        }
        const s2 = (await d.client.createSnapshot({ name: `cbt-${type}-2`, source_volume_id: vol.volume_id, parameters: snapParams })).snapshot!;
        snaps.push(s2.snapshot_id);

        const allocated = rangesOf(await d.client.getMetadataAllocated({ snapshot_id: s1.snapshot_id, starting_offset: '0', max_results: 0 }), size1);
        for (const [s, e] of [[0, 256 * 1024], [4 * MiB, 5 * MiB], [12 * MiB, 12 * MiB + 64 * 1024]] as Range[]) {
          for (let at = s; at < e; at += K) assert.ok(covered(allocated, at), `written byte ${at} is allocated in snap1`);
        }
        if (type === 'thin') assert.ok(bytesIn(allocated) <= 2 * MiB, `a thin snapshot's allocated blocks are its mapped ones (${bytesIn(allocated)} bytes)`);
        else assert.deepEqual(allocated, [[0, size1]], 'a thick LV keeps no map: all of it');

        const delta = rangesOf(await d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: '0', max_results: 0 }), size2);
        for (const [s, e] of changes) for (let at = s; at < e; at += K) assert.ok(covered(delta, at), `changed block at ${at} is in the delta ${JSON.stringify(delta)}`);
        const changedBytes = bytesIn(changes);
        const ratio = bytesIn(delta) / changedBytes;
        t.diagnostic(`lvm ${type}: allocated(snap1) ${bytesIn(allocated)} bytes in ${allocated.length} ranges of ${size1}; delta ${bytesIn(delta)} bytes in ${delta.length} ranges for ${changedBytes} bytes changed (ratio ${ratio.toFixed(2)})`);
        // Thin: whole 64 KiB pool blocks, so a 4 KiB write counts 64 KiB. Thick: 4 KiB chunks, exact here.
        assert.ok(ratio <= (type === 'thin' ? 3 : 1.01), `few extra blocks: ratio ${ratio}`);

        // Resuming mid-way gives the rest.
        const resumed = rangesOf(await d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: String(delta[0]![1]), max_results: 1 }), size2);
        assert.deepEqual(resumed, delta.slice(1));

        const one = await restoredBytes(s1.snapshot_id, size1, params);
        const two = await restoredBytes(s2.snapshot_id, size2, params);
        const rebuilt = Buffer.alloc(size2);
        for (const [s, e] of allocated) one.copy(rebuilt, s, s, e);
        for (const [s, e] of delta) two.copy(rebuilt, s, s, e);
        assert.ok(rebuilt.equals(two), 'allocated(snap1) + delta(snap1→snap2) is snap2, byte for byte');
        const full = Buffer.alloc(size1);
        for (const [s, e] of allocated) one.copy(full, s, s, e);
        assert.ok(full.equals(one), 'allocated(snap1) is snap1, byte for byte');
      } finally {
        await unpublishAndUnstage(d, vol.volume_id, p);
        for (const s of snaps.reverse()) await d.client.deleteSnapshot({ snapshot_id: s });
        await d.client.deleteVolume({ volume_id: vol.volume_id });
      }
    });
  }

  it('refusals: a thick snapshot whose copy-on-write reserve overflowed has no delta (FAILED_PRECONDITION: take a full backup); a metadata snapshot a crash left reserved is released and the read goes on', async () => {
    const cap = blockCap();
    const vol = await createVolume(d, 'cbt-overflow', 16 * MiB, cap, { parameters: { type: 'thick' } });
    const p = await paths(d, vol.volume_id);
    await stageAndPublish(d, vol.volume_id, p, cap);
    const snaps: string[] = [];
    try {
      // The smallest reserve is one extent (4 MiB): 8 MiB of new writes overflow it.
      const s1 = (await d.client.createSnapshot({ name: 'cbt-overflow-1', source_volume_id: vol.volume_id, parameters: { snapshotReserve: '1%' } })).snapshot!;
      snaps.push(s1.snapshot_id);
      await writeAt(p.target, 0, pattern('overflow', 8 * MiB));
      const s2 = (await d.client.createSnapshot({ name: 'cbt-overflow-2', source_volume_id: vol.volume_id, parameters: { snapshotReserve: '50%' } })).snapshot!;
      snaps.push(s2.snapshot_id);
      const err = await d.client.getMetadataDelta({ base_snapshot_id: s1.snapshot_id, target_snapshot_id: s2.snapshot_id, starting_offset: '0', max_results: 0 }).catch((e: Error) => e);
      assert.ok(err instanceof Error, 'refused');
      assert.equal(await codeOf(Promise.reject(err)), 'FAILED_PRECONDITION');
      assert.match(err.message, /invalid|overflow/);
    } finally {
      await unpublishAndUnstage(d, vol.volume_id, p);
      for (const s of snaps.reverse()) await d.client.deleteSnapshot({ snapshot_id: s });
      await d.client.deleteVolume({ volume_id: vol.volume_id });
    }

    const thin = await createVolume(d, 'cbt-reserved', 8 * MiB, cap, { parameters: { type: 'thin' } });
    const s = (await d.client.createSnapshot({ name: 'cbt-reserved-1', source_volume_id: thin.volume_id })).snapshot!;
    try {
      // What a read killed between reserve and release leaves.
      sh('dmsetup', ['message', `${VG}-thin-tpool`, '0', 'reserve_metadata_snap']);
      assert.notEqual(sh('dmsetup', ['status', `${VG}-thin-tpool`]).split(' ')[6], '-', 'a metadata snapshot is held');
      assert.deepEqual(rangesOf(await d.client.getMetadataAllocated({ snapshot_id: s.snapshot_id, starting_offset: '0', max_results: 0 }), 8 * MiB), []);
      assert.equal(sh('dmsetup', ['status', `${VG}-thin-tpool`]).split(' ')[6], '-', 'and none is held after the read');
    } finally {
      await d.client.deleteSnapshot({ snapshot_id: s.snapshot_id });
      await d.client.deleteVolume({ volume_id: thin.volume_id });
    }
  });

  it('crash consistency: dependent writes across a mounted thin ext4, a raw thin and a raw thick member while groups are cut again and again; every group is one point in time', async (t) => {
    const made: Array<{ id: string; p: { staging: string; target: string }; cap: ReturnType<typeof blockCap>; target: WriterTarget; params: Record<string, string> }> = [];
    const groups: string[] = [];
    let idle = '';
    const SIZE = 32 * MiB;
    try {
      const kinds: Array<{ params: Record<string, string>; cap: ReturnType<typeof blockCap>; dir: boolean }> = [
        { params: { type: 'thin', fsType: 'ext4' }, cap: mountCap('ext4'), dir: true },
        { params: { type: 'thin' }, cap: blockCap(), dir: false },
        { params: { type: 'thick' }, cap: blockCap(), dir: false },
      ];
      for (const [i, k] of kinds.entries()) {
        const vol = await createVolume(d, `cc-${i}`, SIZE, k.cap, { parameters: k.params });
        const p = await paths(d, vol.volume_id);
        await stageAndPublish(d, vol.volume_id, p, k.cap);
        made.push({ id: vol.volume_id, p, cap: k.cap, params: k.params, target: k.dir ? { kind: 'dir', path: p.target } : { kind: 'block', path: p.target } });
      }
      // A fourth member in the same thin pool, not attached anywhere (inactive): cut as a thin snapshot
      // while its siblings are suspended, which must not resume them early.
      idle = (await createVolume(d, 'cc-idle', SIZE, blockCap(), { parameters: { type: 'thin' } })).volume_id;
      sh('lvchange', ['-an', `${VG}/${idle}`]);
      const writer = dependentWriter(made.map((m) => m.target));
      try {
        for (let g = 0; g < 4; g++) {
          await writer.waitFor(writer.done() + 30);
          const res = await d.client.createVolumeGroupSnapshot({ name: `cc-${g}`, source_volume_ids: [...made.map((m) => m.id), idle], parameters: {} });
          groups.push(res.group_snapshot!.group_snapshot_id);
        }
        // Not left suspended: the writer goes on.
        await writer.waitFor(writer.done() + 30);
      } finally {
        await writer.stop();
      }
      assert.deepEqual(sh('dmsetup', ['info', '-c', '--noheadings', '-o', 'name,attr']).split('\n').filter((l) => /^\S+:..s/.test(l.trim())), [], 'no device left suspended');
      // Every snapshot lvm recorded, the kernel made: the thin pool's transaction IDs agree.
      const kernelTx = sh('dmsetup', ['status', `${VG}-thin-tpool`]).split(' ')[3];
      assert.equal(sh('lvs', ['--noheadings', '-o', 'transaction_id', `${VG}/thin`]).trim(), kernelTx, 'lvm and the kernel agree on the thin pool');
      const cuts: number[] = [];
      for (const [g, gid] of groups.entries()) {
        const group = (await d.client.getVolumeGroupSnapshot({ group_snapshot_id: gid, snapshot_ids: [] })).group_snapshot!;
        assert.equal(group.snapshots.length, 4);
        const logs: number[][] = [];
        for (const s of group.snapshots) {
          assert.equal(s.group_snapshot_id, gid);
          const idx = made.findIndex((m) => m.id === s.source_volume_id);
          if (idx < 0) continue; // the idle member: nothing written
          const m = made[idx]!;
          const vol = await createVolume(d, `cc-${g}-r${idx}`, SIZE, m.cap, { source: { snapshot: s.snapshot_id }, parameters: m.params });
          const rp = await paths(d, vol.volume_id);
          await stageAndPublish(d, vol.volume_id, rp, m.cap, true);
          try {
            const log = m.target.kind === 'dir' ? (await readFile(path.join(rp.target, 'log'), 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number) : await recordsOn(rp.target, SIZE);
            for (const n of log) assert.equal(n % 3, idx, `write ${n} is in member ${idx}'s log`);
            logs.push(log);
          } finally {
            await unpublishAndUnstage(d, vol.volume_id, rp);
            await d.client.deleteVolume({ volume_id: vol.volume_id });
          }
        }
        const { most, missing } = missingBelowMost(logs);
        assert.deepEqual(missing, [], `group ${g} holds write ${most} but not every write before it: not one point in time`);
        cuts.push(most);
      }
      t.diagnostic(`lvm group cuts at writes ${cuts.join(', ')}`);
      for (let i = 1; i < cuts.length; i++) assert.ok(cuts[i]! > cuts[i - 1]!, 'each group cut later than the one before');

      // The spec's answers on this pool.
      const members = (await d.client.getVolumeGroupSnapshot({ group_snapshot_id: groups[0]!, snapshot_ids: [] })).group_snapshot!.snapshots.map((s) => s.snapshot_id);
      const again = (await d.client.createVolumeGroupSnapshot({ name: 'cc-0', source_volume_ids: [idle, ...made.map((m) => m.id)].reverse(), parameters: {} })).group_snapshot!;
      assert.equal(again.group_snapshot_id, groups[0]);
      assert.deepEqual(
        {
          memberAlone: await codeOf(d.client.deleteSnapshot({ snapshot_id: members[0]! })),
          otherVolumes: await codeOf(d.client.createVolumeGroupSnapshot({ name: 'cc-0', source_volume_ids: [made[0]!.id], parameters: {} })),
          notInPool: await codeOf(d.client.createVolumeGroupSnapshot({ name: 'cc-x', source_volume_ids: [made[0]!.id, 'vol-elsewhere-0123456789abcdef'], parameters: {} })),
        },
        { memberAlone: 'INVALID_ARGUMENT', otherVolumes: 'ALREADY_EXISTS', notInPool: 'FAILED_PRECONDITION' },
      );
    } finally {
      for (const gid of groups) await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: gid, snapshot_ids: [] });
      for (const m of made) {
        await unpublishAndUnstage(d, m.id, m.p);
        await d.client.deleteVolume({ volume_id: m.id });
      }
      if (idle) await d.client.deleteVolume({ volume_id: idle });
    }
    assert.deepEqual((await d.client.listSnapshots({})).entries, [], 'deleting the groups deleted their members');
  });

  it('calls cut short by their deadlines at every point of a cut leave no device suspended and no member behind; the writer never stops for long', async () => {
    const cap = blockCap();
    const vols: Array<{ id: string; p: { staging: string; target: string } }> = [];
    for (const [i, type] of (['thin', 'thick'] as const).entries()) {
      const id = (await createVolume(d, `dl-${i}`, 16 * MiB, cap, { parameters: { type } })).volume_id;
      const p = await paths(d, id);
      await stageAndPublish(d, id, p, cap);
      vols.push({ id, p });
    }
    // Only its progress is watched here: its records go round within the 16 MiB volumes rather than run off their end.
    const writer = dependentWriter(vols.map((v) => ({ kind: 'block' as const, path: v.p.target })), { wrapRecords: 1024 });
    const groups: string[] = [];
    try {
      let cut = 0;
      for (const ms of [5, 40, 150, 400, 1000]) {
        const name = `dl-${ms}`;
        const ids = vols.map((v) => v.id);
        if (await d.client.createVolumeGroupSnapshot({ name, source_volume_ids: ids, parameters: {} }, { deadline: Date.now() + ms }).then(() => true, () => false)) cut++;
        // The retry queues behind the first on the group's lock and returns once the cut it makes (if any) is
        // done; a cut that outlasts the lock's wait answers ABORTED, and the retry is retried, as csi-snapshotter does.
        let g;
        for (let tries = 0; ; tries++) {
          const res = await d.client.createVolumeGroupSnapshot({ name, source_volume_ids: ids, parameters: {} }).catch((e: Error) => e);
          if (!(res instanceof Error)) {
            g = res.group_snapshot!;
            break;
          }
          assert.ok((await codeOf(Promise.reject(res))) === 'ABORTED' && tries < 10, `the retry of ${name}: ${res.message}`);
        }
        groups.push(g.group_snapshot_id);
        assert.equal(g.snapshots.length, 2);
        assert.deepEqual(sh('dmsetup', ['info', '-c', '--noheadings', '-o', 'name,attr']).split('\n').filter((l) => /^\S+:..s/.test(l.trim())), [], `no device left suspended after a call with a ${ms} ms deadline`);
        await writer.waitFor(writer.done() + 10);
        await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: g.group_snapshot_id, snapshot_ids: [] });
        groups.pop();
      }
      assert.ok(cut < 5, 'some calls were cut short');
      assert.deepEqual((await d.client.listSnapshots({})).entries, []);
      assert.deepEqual(lvNames().filter((n) => n.startsWith('snap-')), [], 'no member left, listed or not');
    } finally {
      await writer.stop();
      // A failure above left its group: deleted first, so the volumes can go and the next test starts clean.
      for (const gid of groups) await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: gid, snapshot_ids: [] }).catch((e: Error) => console.log(`cleanup: ${e.message}`));
      for (const v of vols) {
        await unpublishAndUnstage(d, v.id, v.p);
        await d.client.deleteVolume({ volume_id: v.id });
      }
    }
  });

  it('a restart after a crash mid-cut: devices the mark names are resumed, members short of their group are removed and never listed', async () => {
    const cap = blockCap();
    const a = await createVolume(d, 'crash-a', 8 * MiB, cap, { parameters: { type: 'thin' } });
    const b = await createVolume(d, 'crash-b', 8 * MiB, cap, { parameters: { type: 'thin' } });
    const pa = await paths(d, a.volume_id);
    await stageAndPublish(d, a.volume_id, pa, cap);
    try {
      // What a driver killed during a cut leaves: a's device suspended (named in its mark), and one member of two.
      const dm = `${VG}-${a.volume_id.replace(/-/g, '--')}`;
      await mkdir(RUN_DIR, { recursive: true });
      await writeFile(path.join(RUN_DIR, `lvm-suspend-${Buffer.from(VG).toString('hex')}-group-crash-0123456789abcdef.json`), JSON.stringify({ vg: VG, devices: [dm] }));
      sh('dmsetup', ['suspend', dm]);
      sh('lvcreate', ['-y', '-s', '-ky', '-pr', '-n', 'snap-half-0123456789abcdef', ...['vpool.kind=snap', 'vpool.name=group-crash/x', `vpool.srcvol=${b.volume_id}`, 'vpool.size=8388608', 'vpool.created=1', 'vpool.group=group-crash-0123456789abcdef', 'vpool.gname=crash', 'vpool.gsize=2'].flatMap((t) => ['--addtag', t]), `${VG}/${b.volume_id}`]);
      assert.deepEqual((await d.client.listSnapshots({})).entries.filter((e) => e.snapshot!.source_volume_id === b.volume_id), [], 'a member short of its group is not listed');
      await d.stop('SIGKILL');
      d = await d.restart();
      assert.match(sh('dmsetup', ['info', dm]), /State:\s+ACTIVE/, 'resumed at start');
      assert.ok(!lvNames().includes('snap-half-0123456789abcdef'), 'the half-made member is removed at start');
      await writeAt(pa.target, 0, pattern('after-restart', 64 * 1024));
    } finally {
      await unpublishAndUnstage(d, a.volume_id, pa);
      await d.client.deleteVolume({ volume_id: a.volume_id });
      await d.client.deleteVolume({ volume_id: b.volume_id });
    }
  });
});
