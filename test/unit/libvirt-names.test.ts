import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { idFor, memberIdFor } from '../../src/ids.js';
import { diskXml, freeTarget, parseDomain, rbdModuleMissing } from '../../src/pool/libvirt/domains.js';
import { rbdSource } from '../../src/pool/libvirt/rbd.js';
import { parseXml } from '../../src/pool/libvirt/virsh.js';
import { groupName, limitsName, lvmNameProblem, markerName, parseName, serialFor, snapshotName, volumeName } from '../../src/pool/libvirt/names.js';
import { checkBursts, tuneMatches, tuneOf } from '../../src/pool/libvirt/io-tune.js';
import { LibvirtVolumeLimits, limitParameters } from '../../src/pool/libvirt/volume-limits.js';
import type { Domains } from '../../src/pool/libvirt/domains.js';
import type { VolumeDisks } from '../../src/pool/libvirt/volume-disks.js';
import { IO_BURST_PARAMETERS, IO_LIMIT_PARAMETERS, parseMutableParameters } from '../../src/pool/mutable-parameters.js';

describe('libvirt volume names', () => {
  const vol = idFor('vol', 'pvc-0f5e4c7a-51a4-4c52-a4a2-2d6f1c3c9b10');
  const snap = idFor('snap', 'snapshot-8d1f7f0e-4a4b-46cf-9e0f-6a8a2f4d7c11');

  it('round-trips every fact a volume name carries', () => {
    const facts = { id: vol, format: 'qcow2' as const, fsType: 'xfs', preallocated: true, wipe: 'zero', source: { kind: 'snapshot' as const, hash: snap.slice(-16) } };
    const name = volumeName(facts);
    assert.deepEqual(parseName(name), { kind: 'vol', ...facts });
    assert.deepEqual(parseName(volumeName({ id: vol, format: 'raw', preallocated: false })), { kind: 'vol', id: vol, format: 'raw', preallocated: false });
    const s = snapshotName({ id: snap, sourceHash: vol.slice(-16), createdAt: 1795580153398, format: 'raw' });
    assert.deepEqual(parseName(s), { kind: 'snap', id: snap, sourceHash: vol.slice(-16), createdAt: 1795580153398, format: 'raw' });
    assert.deepEqual(parseName(markerName(vol)), { kind: 'marker', id: vol });
  });

  it('keeps the names Kubernetes produces within LVM\'s 127 characters (logical pools)', () => {
    const longest = volumeName({ id: vol, format: 'qcow2', fsType: 'ext4', preallocated: true, wipe: 'random', source: { kind: 'snapshot', hash: snap.slice(-16) } });
    assert.ok(longest.length <= 127, `${longest.length}: ${longest}`);
    const s = snapshotName({ id: snap, sourceHash: vol.slice(-16), createdAt: Date.now(), format: 'qcow2' });
    assert.ok(s.length <= 127, `${s.length}: ${s}`);
  });

  it('names a group snapshot\'s record and members, short enough for LVM beside a VG name of 32 characters (logical pools)', () => {
    const group = idFor('group', 'groupsnapshot-0f5e4c7a-51a4-4c52-a4a2-2d6f1c3c9b10-with-a-long-tail');
    const member = memberIdFor(`${group}/${vol}`);
    const createdAt = Date.now();
    const name = snapshotName({ id: member, sourceHash: vol.slice(-16), createdAt, format: 'qcow2', groupHash: group.slice(-16) });
    // lvm2's vg_validate: len(LV) + len(VG) + 3 < 128 (the "VG/LV" path and its terminator).
    const vg = 'v'.repeat(32);
    assert.equal(lvmNameProblem(name, vg), null);
    assert.match(lvmNameProblem(name, 'v'.repeat(128 - 3 - name.length)) ?? '', /does not fit LVM's limit beside VG v+: len\(LV\) \+ len\(VG\) \+ 3 must stay under 128/);
    assert.equal(lvmNameProblem(name, 'v'.repeat(127 - 3 - name.length)), null);
    assert.ok(name.length + vg.length + 3 < 128, `${name.length}: ${name}`);
    assert.ok(groupName({ id: group, members: 9999 }).length + vg.length + 3 < 128);
    assert.ok(markerName(group, Date.now()).length + vg.length + 3 < 128);
    assert.deepEqual(parseName(markerName(group, 1795580153398)), { kind: 'marker', id: group, startedAt: 1795580153398 });
    assert.deepEqual(parseName(name), { kind: 'snap', id: member, sourceHash: vol.slice(-16), createdAt, format: 'qcow2', groupHash: group.slice(-16) });
    assert.deepEqual(parseName(groupName({ id: group, members: 3 })), { kind: 'group', id: group, members: 3 });
    assert.deepEqual(parseName(markerName(group)), { kind: 'marker', id: group });
    for (const bad of [`${group}.n0.group`, `${group}.n03.group`, `${group}.3.group`, `${group}.n3.raw`, `${group}.group`, `${member}.of-${vol.slice(-16)}.t1.gXYZ.raw`, `${member}.of-${vol.slice(-16)}.t1.g${group.slice(-16)}.x.raw`]) {
      assert.equal(parseName(bad), null, bad);
    }
  });

  it('ignores volumes it did not make, and names that differ from the canonical form', () => {
    for (const foreign of ['disk.img', 'vm1-root.qcow2', `${vol}`, `${vol}.btrfs.raw`, `${vol}.raw.raw`, `${vol}.prealloc.ext4.raw`, `${vol}.vmdk`, `${snap}.raw`, `${snap}.of-xyz.t1.raw`, `../${vol}.raw`, `${vol}.wipe-dod.raw`]) {
      assert.equal(parseName(foreign), null, foreign);
    }
  });

  it('names a volume\'s I/O limits record: every key round-trips, the newest sequence is in force, within LVM\'s limit with all eight keys at their largest beside a VG of 15 characters', () => {
    const hash = vol.slice(-16);
    const all = { readIOPS: 1e9, writeIOPS: 500, readBytesPerSecond: 1e15, writeBytesPerSecond: 20 * 2 ** 20, readIOPSBurst: 1e9, writeIOPSBurst: 2000, readBytesPerSecondBurst: 1e15, writeBytesPerSecondBurst: 4096 };
    const name = limitsName({ hash, sequence: 7, limits: all });
    assert.deepEqual(parseName(name), { kind: 'limits', id: `iolimits-${hash}`, hash, sequence: 7, limits: all });
    assert.equal(lvmNameProblem(name, 'v'.repeat(15)), null, `${name.length}: ${name} beside a VG name of 15 characters`);
    const usual = limitsName({ hash, sequence: 1295, limits: { readIOPS: 500, writeIOPS: 500, readBytesPerSecond: 20 * 2 ** 20, writeBytesPerSecond: 20 * 2 ** 20 } });
    assert.equal(lvmNameProblem(usual, 'v'.repeat(64)), null, `${usual.length}: the four limits beside a VG name of 64 characters`);
    assert.equal(parseName(`iolimits-${hash}.s1`)?.kind, 'limits', 'a record of no limits still parses (and is removed as superseded)');
    for (const bad of [`iolimits-${hash}.s1.ri-0500`, `iolimits-${hash}.s1.wi-1.ri-2`, `iolimits-${hash}.s1.ri-1.ri-2`, `iolimits-${hash}.s1.xx-1`, `iolimits-${hash}.1.ri-2`, `iolimits-XYZ.s1`, `iolimits-${hash}.s01`]) {
      assert.equal(parseName(bad), null, bad);
    }
    // The record never reads as a volume's or a snapshot's ID.
    assert.notEqual(parseName(name)!.id, vol);
    const entries = [1, 3, 2].map((sequence) => ({ name: limitsName({ hash, sequence, limits: { readIOPS: sequence * 100 } }), parsed: parseName(limitsName({ hash, sequence, limits: { readIOPS: sequence * 100 } }))! }));
    assert.deepEqual(limitParameters(entries, vol), { readIOPS: '300' }, 'the newest sequence');
    assert.deepEqual(limitParameters(entries, idFor('vol', 'another')), {});
  });

  it('records: a change makes the next sequence then drops the older; a delete leaves records a volume of the hash still has; the sweep drops superseded ones at once and orphans only when the next sweep still finds them so', async () => {
    // The pool as names (what the record logic sees of it): the class under test acts on names alone.
    const names = new Set<string>();
    const limits = new LibvirtVolumeLimits({ createRecord: async (n) => void names.add(n), deleteNamed: async (n) => void names.delete(n), domains: {} as Domains, disks: {} as VolumeDisks });
    const entries = () => [...names].map((name) => ({ name, parsed: parseName(name)! }));
    const volName = volumeName({ id: vol, format: 'raw', preallocated: false });
    names.add(volName);
    await limits.record(vol, { readIOPS: '500' }, entries());
    await limits.record(vol, { readIOPS: '600', writeIOPS: '50' }, entries());
    assert.deepEqual(limitParameters(entries(), vol), { readIOPS: '600', writeIOPS: '50' });
    assert.equal(entries().filter((e) => e.parsed.kind === 'limits').length, 1, 'the older went');
    // Another ID of the same hash (the driver's vol--<hash> for a gone source) while the volume is there: its record stays.
    await limits.drop(`vol--${vol.slice(-16)}`, entries());
    assert.deepEqual(limitParameters(entries(), vol), { readIOPS: '600', writeIOPS: '50' });
    // A crash's leftovers: an older sequence, and a record whose volume is gone.
    const hash = vol.slice(-16);
    names.add(limitsName({ hash, sequence: 1, limits: { readIOPS: 100 } }));
    const orphan = limitsName({ hash: 'fedcba9876543210', sequence: 1, limits: { readIOPS: 100 } });
    names.add(orphan);
    await limits.sweep(entries());
    assert.ok(!names.has(limitsName({ hash, sequence: 1, limits: { readIOPS: 100 } })), 'superseded: gone at once');
    assert.ok(names.has(orphan), 'an orphan stays through the first sweep (another process may be making its volume)');
    await limits.sweep(entries());
    assert.ok(!names.has(orphan), 'and goes at the next');
    // A record seen orphaned once whose volume then appeared is kept.
    const late = idFor('vol', 'pvc-late');
    await limits.record(late, { writeIOPS: '70' }, entries());
    await limits.sweep(entries());
    names.add(volumeName({ id: late, format: 'raw', preallocated: false }));
    await limits.sweep(entries());
    assert.deepEqual(limitParameters(entries(), late), { writeIOPS: '70' });
    // The volume deleted: its record goes with it; none left.
    names.delete(volName);
    await limits.drop(vol, entries());
    assert.deepEqual(limitParameters(entries(), vol), {});
  });

  it('QEMU\'s throttling fields from a class: all eight (0 lifts), bursts only above their limit', () => {
    const p = parseMutableParameters({ readIOPS: '500', writeBytesPerSecond: '20Mi', readIOPSBurst: '2000' }, { ...IO_LIMIT_PARAMETERS, ...IO_BURST_PARAMETERS });
    assert.deepEqual(tuneOf(p as Record<string, string>), { read_iops_sec: 500, write_iops_sec: 0, read_bytes_sec: 0, write_bytes_sec: 20 * 2 ** 20, read_iops_sec_max: 2000, write_iops_sec_max: 0, read_bytes_sec_max: 0, write_bytes_sec_max: 0 });
    assert.ok(tuneMatches({ read_iops_sec: 500, write_bytes_sec: 20 * 2 ** 20, read_iops_sec_max: 2000 }, p as Record<string, string>));
    assert.ok(!tuneMatches({ read_iops_sec: 500 }, p as Record<string, string>));
    assert.doesNotThrow(() => checkBursts({ readIOPS: '500', readIOPSBurst: '500' }));
    assert.throws(() => checkBursts({ readIOPSBurst: '500' }), /readIOPSBurst needs readIOPS/);
    assert.throws(() => checkBursts({ writeBytesPerSecond: '4096000', writeBytesPerSecondBurst: '8192' }), /below writeBytesPerSecond/);
  });

  it('derives a virtio serial of at most 20 characters, unique per volume', () => {
    const serial = serialFor(vol);
    assert.match(serial, /^vp-[0-9a-f]{16}$/);
    assert.ok(serial.length <= 20);
    assert.notEqual(serialFor(idFor('vol', 'other')), serial);
  });
});

describe('libvirt domain XML', () => {
  const dom = `<domain type='qemu' id='3'>
  <name>node-1</name>
  <uuid>6A1B0C3E-1D2F-4E5A-8B9C-0D1E2F3A4B5C</uuid>
  <devices>
    <disk type='file' device='disk'><source file='/var/lib/root.qcow2'/><target dev='vda' bus='virtio'/></disk>
    <disk type='file' device='cdrom'><target dev='hdc' bus='ide'/><readonly/></disk>
    <disk type='volume' device='disk'><source pool='p1' volume='x.raw'/><target dev='vdb' bus='virtio'/><serial>vp-0123456789abcdef</serial><readonly/><shareable/></disk>
  </devices>
</domain>`;

  it('reads UUID (lower-cased), state, and each disk\'s target, serial, source and flags', () => {
    const d = parseDomain(dom);
    assert.equal(d.uuid, '6a1b0c3e-1d2f-4e5a-8b9c-0d1e2f3a4b5c');
    assert.equal(d.running, true);
    assert.deepEqual(d.disks.map((x) => x.target), ['vda', 'vdb'], 'cdroms are not disks');
    assert.deepEqual(d.disks[1], { target: 'vdb', serial: 'vp-0123456789abcdef', sourcePool: 'p1', sourceVolume: 'x.raw', sourceFile: undefined, readOnly: true, shared: true, iotune: {} });
    assert.equal(parseDomain(dom.replace(" id='3'", '')).running, false);
  });

  it('writes a virtio disk with serial, cache and io, readonly and shareable when asked', () => {
    const xml = diskXml({ pool: 'p1', volume: 'v.raw', format: 'raw', serial: 'vp-0123456789abcdef', readOnly: true, shared: true, cache: 'none' }, 'vdc');
    assert.match(xml, /<driver name='qemu' type='raw' cache='none' io='native' discard='unmap'\/>/);
    assert.match(xml, /<target dev='vdc' bus='virtio'\/>/);
    assert.match(xml, /<serial>vp-0123456789abcdef<\/serial>/);
    assert.match(xml, /<readonly\/>[\s\S]*<shareable\/>/);
    const wb = diskXml({ pool: 'p1', volume: 'v.raw', format: 'raw', serial: 's', readOnly: false, shared: false, cache: 'writeback' }, 'vdb');
    assert.doesNotMatch(wb, /io=|readonly|shareable/, 'io=native needs O_DIRECT');
    assert.match(diskXml({ pool: "p'<", volume: 'v', format: 'raw', serial: 's', readOnly: false, shared: false, cache: 'none' }, 'vdb'), /pool='p&apos;&lt;'/);
  });

  it('a disk carries its volume\'s throttling (<iotune>, set fields only) and reads it back', () => {
    const xml = diskXml({ pool: 'p1', volume: 'v.raw', format: 'raw', serial: 's', readOnly: false, shared: false, cache: 'none', iotune: tuneOf({ readIOPS: '500', writeBytesPerSecond: '20971520' }) }, 'vdb');
    assert.match(xml, /<iotune>\s*<read_iops_sec>500<\/read_iops_sec>\s*<write_bytes_sec>20971520<\/write_bytes_sec>\s*<\/iotune>/);
    assert.doesNotMatch(xml, /_max|write_iops_sec/);
    assert.doesNotMatch(diskXml({ pool: 'p1', volume: 'v.raw', format: 'raw', serial: 's', readOnly: false, shared: false, cache: 'none', iotune: tuneOf({}) }, 'vdb'), /iotune/);
    const back = parseDomain(`<domain><uuid>u</uuid><devices>${xml.replace('</iotune>', '<group_name>drive-virtio-disk1</group_name></iotune>')}</devices></domain>`).disks[0];
    assert.deepEqual(back.iotune, { read_iops_sec: 500, write_bytes_sec: 20971520 }, 'libvirt\'s group name is not a figure');
  });

  it('attaches an rbd image as a network disk with the pool\'s monitors and cephx secret (libvirt refuses rbd `volume` disks)', () => {
    const pool = parseXml(`<pool type='rbd'><name>ceph</name><source><name>kube</name><host name='mon1' port='6789'/><host name='mon2'/>
      <auth type='ceph' username='libvirt'><secret uuid='2ec115d7-3a88-4a6f-9a6b-0f3a35c2b6b1'/></auth></source></pool>`).pool;
    const rbd = rbdSource(pool as Parameters<typeof rbdSource>[0]);
    assert.deepEqual(rbd, { cephPool: 'kube', hosts: [{ name: 'mon1', port: '6789' }, { name: 'mon2', port: undefined }], auth: { username: 'libvirt', secretUuid: '2ec115d7-3a88-4a6f-9a6b-0f3a35c2b6b1' } });
    const xml = diskXml({ pool: 'ceph', volume: 'v.raw', rbd: { ...rbd, image: 'v.raw' }, format: 'raw', serial: 'vp-0123456789abcdef', readOnly: false, shared: true, cache: 'none' }, 'vdb');
    assert.match(xml, /^<disk type='network' device='disk'>/);
    assert.match(xml, /<auth username='libvirt'>\s*<secret type='ceph' uuid='2ec115d7-3a88-4a6f-9a6b-0f3a35c2b6b1'\/>\s*<\/auth>/);
    assert.match(xml, /<source protocol='rbd' name='kube\/v.raw'>\s*<host name='mon1' port='6789'\/>\s*<host name='mon2'\/>\s*<\/source>/);
    assert.doesNotMatch(xml, /io='native'/, 'not for a network disk');
    const back = parseDomain(`<domain><uuid>u</uuid><devices>${xml}</devices></domain>`).disks[0];
    assert.equal(back.sourceFile, 'kube/v.raw');
    assert.equal(back.shared, true);
  });

  it('names the missing package when QEMU cannot open rbd images (the message libvirt 9 and QEMU 7.2 give without qemu-block-extra)', () => {
    const rbd = { cephPool: 'kube', hosts: [{ name: 'mon1' }], image: 'v.raw' };
    const spec = { pool: 'ceph', volume: 'v.raw', rbd, format: 'raw', serial: 's', readOnly: false, shared: true, cache: 'none' };
    const seen = new Error("internal error: unable to execute QEMU command 'blockdev-add': Unknown driver 'rbd'");
    const mapped = rbdModuleMissing(spec, seen);
    assert.equal((mapped as { kind?: string } | null)?.kind, 'precondition');
    assert.match(mapped!.message, /qemu-block-extra/);
    assert.match(mapped!.message, /Unknown driver 'rbd'/, 'libvirt\'s own words are kept');
    assert.equal(rbdModuleMissing({ ...spec, rbd: undefined }, seen), null, 'a pool volume disk is not an rbd problem');
    assert.equal(rbdModuleMissing(spec, new Error('internal error: unable to connect to the monitor')), null);
  });

  it('picks the first virtio target name no disk uses', () => {
    assert.equal(freeTarget(new Set(['vda'])), 'vdb');
    assert.equal(freeTarget(new Set(['vda', 'vdb', 'vdd'])), 'vdc');
    const many = new Set(Array.from('abcdefghijklmnopqrstuvwxyz', (c) => `vd${c}`));
    assert.equal(freeTarget(many), 'vdaa');
  });
});
