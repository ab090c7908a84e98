// Runs INSIDE the QEMU VM (test/vm/vm-run.sh), whose kernel has device-mapper: a libvirt `logical`
// (LVM) pool for real, with its own libvirtd, served by the libvirt backend. Started by
// test/e2e/libvirt-logical-vm.test.ts.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PROJECT_ROOT } from '../../src/csi/proto.js';
import { blockCap } from '../helpers/csi.js';
import { sha256, sumAt, writeAt } from '../helpers/data.js';
import { codeOf, finish, MiB, pattern, startDriver, type Driver } from '../helpers/driver.js';
import { URI } from '../helpers/libvirt.js';

const VG = 'vgvirt';
const POOL = 'lvpool';
const sh = (cmd: string, args: string[]) => execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
const virsh = (...args: string[]) => sh('virsh', ['-q', '-c', URI, ...args]);
const lvs = () => sh('lvs', ['--noheadings', '-o', 'lv_name', VG]).split('\n').map((l) => l.trim()).filter(Boolean).sort();

describe('libvirt logical pool (LVM under libvirt) on real device-mapper', { timeout: 900_000 }, () => {
  let d: Driver;
  const create = async (name: string, bytes: number, parameters: Record<string, string> = {}, source?: { snapshot?: string; volume?: string }) =>
    (await d.client.createVolume({
      name,
      capacity_range: { required_bytes: String(bytes) },
      volume_capabilities: [blockCap()],
      parameters,
      volume_content_source: source?.snapshot ? { snapshot: { snapshot_id: source.snapshot } } : source?.volume ? { volume: { volume_id: source.volume } } : null,
    })).volume!;
  const device = (id: string) => `/dev/${VG}/${lvs().find((n) => n.startsWith(`${id}.`))}`;

  before(async () => {
    sh('bash', [path.join(PROJECT_ROOT, 'test/libvirt/libvirt-start.sh')]);
    sh('pvcreate', ['-q', '-y', '/dev/disk/by-id/virtio-data0']);
    sh('vgcreate', ['-q', VG, '/dev/disk/by-id/virtio-data0']);
    virsh('pool-define-as', POOL, 'logical', '--source-name', VG, '--target', `/dev/${VG}`);
    virsh('pool-start', POOL);
    d = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', POOL, '--hypervisor', 'vm', '--log-level', 'warn'] });
  });
  after(async () => {
    if (!d) return;
    for (const l of d.logs) if (/"level":"error"/.test(l)) console.log(`driver: ${l.slice(0, 1500)}`);
    assert.deepEqual(await finish(d), []);
    assert.deepEqual(lvs(), [], 'every LV the tests made is gone');
  });

  it('makes thick raw LVs in whole extents, refuses qcow2, and reports the VG\'s free space', async () => {
    const v = await create('pvc-lv', 10 * MiB);
    assert.equal(v.capacity_bytes, String(12 * MiB), 'rounded up to 4 MiB extents');
    assert.deepEqual(lvs(), [`${v.volume_id}.raw`]);
    const attr = sh('lvs', ['--noheadings', '-o', 'lv_attr', `${VG}/${v.volume_id}.raw`]).trim();
    assert.match(attr, /^-wi-a/, 'a plain, fully allocated LV (not a COW "sparse" one)');
    assert.equal(await codeOf(create('pvc-lvq', 10 * MiB, { format: 'qcow2' })), 'INVALID_ARGUMENT');
    const free = Number(sh('vgs', ['--noheadings', '--units', 'b', '--nosuffix', '-o', 'vg_free', VG]).trim());
    const cap = await d.client.getCapacity({ parameters: {} });
    assert.ok(Math.abs(Number(cap.available_capacity) - free) <= 4 * MiB, `${cap.available_capacity} vs ${free}`);
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('cannot grow a volume: ControllerExpandVolume answers FAILED_PRECONDITION naming the pool type, and nothing changes', async () => {
    const v = await create('pvc-nogrow', 8 * MiB);
    const err = await d.client.controllerExpandVolume({ volume_id: v.volume_id, capacity_range: { required_bytes: String(16 * MiB) } }).catch((e: Error) => e);
    assert.ok(err instanceof Error);
    assert.match(err.message, /^9 FAILED_PRECONDITION: libvirt cannot resize volumes of a logical pool/);
    assert.equal((await d.client.controllerGetVolume({ volume_id: v.volume_id })).volume?.capacity_bytes, String(8 * MiB));
    await d.client.deleteVolume({ volume_id: v.volume_id });
  });

  it('snapshots, restores and clones as full LV copies with the data of the moment', async () => {
    const src = await create('pvc-lvsrc', 8 * MiB);
    const before = pattern('lv-before', MiB);
    await writeAt(device(src.volume_id), 2 * MiB, before);
    const snap = (await d.client.createSnapshot({ name: 'snap-lv', source_volume_id: src.volume_id, parameters: {}, secrets: {} })).snapshot!;
    assert.equal(snap.source_volume_id, src.volume_id);
    await writeAt(device(src.volume_id), 2 * MiB, pattern('lv-after', MiB));
    const restored = await create('pvc-lvrestore', 12 * MiB, {}, { snapshot: snap.snapshot_id });
    assert.equal(restored.capacity_bytes, String(12 * MiB), 'a larger restore is made at its size (vol-create-from), no resize needed');
    assert.equal(await sumAt(device(restored.volume_id), 2 * MiB, MiB), sha256(before));
    const clone = await create('pvc-lvclone', 8 * MiB, {}, { volume: src.volume_id });
    assert.equal(await sumAt(device(clone.volume_id), 2 * MiB, MiB), sha256(pattern('lv-after', MiB)));
    for (const v of [restored, clone, src]) await d.client.deleteVolume({ volume_id: v.volume_id });
    await d.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
  });

  it('cuts a group snapshot of detached volumes as LVs whose names fit LVM beside the VG (Kubernetes-length names), restores a member, deletes the group', async () => {
    const uid = '0f5e4c7a-51a4-4c52-a4a2-2d6f1c3c9b10';
    const vols = [await create(`pvc-${uid}`, 8 * MiB), await create(`pvc-${uid.replace('0f', '1f')}`, 8 * MiB)];
    const data = vols.map((_, i) => pattern(`lv-group-${i}`, MiB));
    for (const [i, v] of vols.entries()) await writeAt(device(v.volume_id), MiB, data[i]!);
    const g = (await d.client.createVolumeGroupSnapshot({ name: `groupsnapshot-${uid}`, source_volume_ids: vols.map((v) => v.volume_id), parameters: {} })).group_snapshot!;
    assert.equal(g.snapshots.length, 2);
    assert.ok(g.ready_to_use);
    for (const n of lvs()) assert.ok(n.length + VG.length + 3 < 128, `${n} fits beside ${VG}`);
    assert.ok(lvs().some((n) => n.startsWith(`${g.group_snapshot_id}.n2.group`)), 'the group record is an LV');
    const member = g.snapshots.find((s) => s.source_volume_id === vols[0]!.volume_id)!;
    const restored = await create('pvc-lvgroup-restore', 8 * MiB, {}, { snapshot: member.snapshot_id });
    assert.equal(await sumAt(device(restored.volume_id), MiB, MiB), sha256(data[0]!));
    assert.equal(await codeOf(d.client.deleteSnapshot({ snapshot_id: member.snapshot_id })), 'INVALID_ARGUMENT', 'a member goes with its group only');
    await d.client.deleteVolumeGroupSnapshot({ group_snapshot_id: g.group_snapshot_id, snapshot_ids: g.snapshots.map((s) => s.snapshot_id) });
    assert.deepEqual(lvs().filter((n) => n.startsWith('group-') || n.startsWith('snap-')), []);
    for (const v of [restored, ...vols]) await d.client.deleteVolume({ volume_id: v.volume_id });
  });
});
