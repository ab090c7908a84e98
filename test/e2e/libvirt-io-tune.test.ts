import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { promisify } from 'node:util';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap } from '../helpers/csi.js';
import { BIN, codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import { dirPool, nodeVm, startLibvirt, URI, virsh, type NodeVm, type TestPool } from '../helpers/libvirt.js';
import { parseDomain } from '../../src/pool/libvirt/domains.js';

const execFileP = promisify(execFile);

interface FioRun {
  jobs: Array<{ read: { iops: number; bw: number }; write: { iops: number; bw: number } }>;
}

// I/O limits on the libvirt pool: the controller here against a real libvirtd sets QEMU's throttling of
// the disk (libvirt's <iotune>) in a TCG node VM, live and in its persistent definition, from the
// volume's record at every attach; fio inside the guest (test/vm/io-tune-guest.sh) measures the disk.
describe('libvirt I/O limits: QEMU throttles the disk in a node VM as the volume\'s class says (over the held connection and over virsh)', { ...needsRoot(), timeout: 20 * 60_000 }, () => {
  let pool: TestPool;
  let d: Driver;
  let vm: NodeVm;
  let volumeId = '';
  const args = () => ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'hv-tune', '--attach-timeout', '120'];

  before(async () => {
    await startLibvirt();
    pool = await dirPool('vpool-tune');
    d = await startDriver({ args: args() });
  });
  after(async () => {
    if (vm) {
      process.stdout.write((await vm.console()).split('\n').slice(-40).map((l) => `    vm| ${l}`).join('\n') + '\n');
      await vm.remove();
    }
    if (volumeId) await d.client.deleteVolume({ volume_id: volumeId }).catch(() => undefined);
    const left = d ? await finish(d) : [];
    const vols = pool ? await pool.volumes() : [];
    await pool?.remove();
    assert.deepEqual(left, []);
    assert.deepEqual(vols, [], 'no volume and no limits record is left');
  });

  const records = async () => (await pool.volumes()).filter((n) => n.startsWith('iolimits-')).sort();
  /** The disk's <iotune> in the live and the persistent definition (null: the domain has no such disk). */
  const tunes = async () => {
    const serial = `vp-${volumeId.slice(-16)}`;
    const of = (xml: string) => parseDomain(xml).disks.find((x) => x.serial === serial)?.iotune ?? null;
    return { live: of(await virsh('dumpxml', vm.name)), config: of(await virsh('dumpxml', '--inactive', vm.name)) };
  };
  const modify = (p: Record<string, string>) => d.client.controllerModifyVolume({ volume_id: volumeId, secrets: {}, mutable_parameters: p });
  const publish = () => d.client.controllerPublishVolume({ volume_id: volumeId, node_id: vm.uuid, volume_capability: blockCap(), readonly: false, secrets: {}, volume_context: {} });
  let step = 0;
  /** One fio round in the guest: random 4 KiB reads (IOPS) and 1 MiB sequential writes (MiB/s). */
  const measure = async () => {
    const n = step++;
    await vm.go(String(n));
    await vm.waitFile(`step-${n}`, 180_000);
    const read = async (f: string) => JSON.parse(await readFile(path.join(vm.run, f), 'utf8')) as FioRun;
    const error = (await readFile(path.join(vm.run, `step-${n}.error`), 'utf8').catch(() => '')).trim();
    assert.doesNotMatch(error, /no disk|error/i, `guest step ${n}: ${error}`);
    const r = (await read(`read-${n}.json`)).jobs[0]!.read.iops;
    const w = (await read(`write-${n}.json`)).jobs[0]!.write.bw / 1024;
    console.log(`fio in the guest, round ${n}: ${r.toFixed(0)} read IOPS, ${w.toFixed(1)} MiB/s written`);
    return { readIops: r, writeMiBs: w };
  };
  const within = (value: number, limit: number, what: string) => assert.ok(Math.abs(value - limit) <= limit * 0.1, `${what}: ${value.toFixed(1)} is not within 10% of ${limit}`);

  it('made with limits, attached with them; changed and lifted live; kept across a re-attach; bursts and wrong keys refused changing nothing', async () => {
    // Refused before anything is made: a burst needs its limit.
    assert.equal(await codeOf(d.client.createVolume({ name: 'pvc-tune-bad', capacity_range: { required_bytes: String(64 * MiB) }, volume_capabilities: [blockCap()], parameters: {}, mutable_parameters: { readIOPSBurst: '900' } })), 'INVALID_ARGUMENT');
    assert.deepEqual(await pool.volumes(), []);

    const vol = (await d.client.createVolume({ name: 'pvc-tune', capacity_range: { required_bytes: String(256 * MiB) }, volume_capabilities: [blockCap()], parameters: {}, mutable_parameters: { readIOPS: '500', writeBytesPerSecond: '20Mi' } })).volume!;
    volumeId = vol.volume_id;
    assert.equal((await records()).length, 1, 'one record of the class the volume was made with');

    const uuid = randomUUID();
    vm = await nodeVm(`vpool-tune-${uuid.slice(0, 6)}`, uuid, ['bash', 'test/vm/io-tune-guest.sh'], { VPOOL_SERIAL: `vp-${volumeId.slice(-16)}` });
    await vm.waitFile('step-ready', 300_000);
    await publish();
    const limited = { read_iops_sec: 500, write_bytes_sec: 20 * MiB };
    assert.deepEqual(await tunes(), { live: limited, config: limited }, 'attached with its limits, live and persistent');
    const first = await measure();
    within(first.readIops, 500, 'read IOPS under readIOPS=500');
    within(first.writeMiBs, 20, 'MiB/s written under writeBytesPerSecond=20Mi');

    // Refusals change nothing: neither the record nor the disk.
    const before = await records();
    assert.equal(await codeOf(modify({ readIOPSBurst: '100' })), 'INVALID_ARGUMENT', 'a burst below its limit');
    assert.equal(await codeOf(modify({ tier: 'fast' })), 'INVALID_ARGUMENT', 'a key the pool does not take');
    assert.equal(await codeOf(modify({ readIOPS: '1' })), 'INVALID_ARGUMENT', 'a value out of range');
    assert.deepEqual(await records(), before);
    assert.deepEqual(await tunes(), { live: limited, config: limited });

    // Live: reads lifted, writes halved, a write IOPS limit with a burst (checked in libvirt, not measured); the disk stays attached at its target.
    const target = parseDomain(await virsh('dumpxml', vm.name)).disks.find((x) => x.serial === `vp-${volumeId.slice(-16)}`)!.target;
    await modify({ readIOPS: 'unlimited', writeBytesPerSecond: '10Mi', writeIOPS: '200', writeIOPSBurst: '400' });
    const changed = { write_bytes_sec: 10 * MiB, write_iops_sec: 200, write_iops_sec_max: 400 };
    assert.deepEqual(await tunes(), { live: changed, config: changed });
    assert.equal(parseDomain(await virsh('dumpxml', vm.name)).disks.find((x) => x.serial === `vp-${volumeId.slice(-16)}`)!.target, target, 'never detached');
    assert.equal((await records()).length, 1, 'the older record went');
    const second = await measure();
    assert.ok(second.readIops > 1.5 * 500, `reads lifted: ${second.readIops.toFixed(0)} IOPS`);
    within(second.writeMiBs, 10, 'MiB/s written under writeBytesPerSecond=10Mi');
    // A repeat (the resizer's retry) records nothing new and applies the same.
    const recorded = await records();
    await modify({ writeBytesPerSecond: '10Mi' });
    assert.deepEqual(await records(), recorded);
    assert.deepEqual(await tunes(), { live: changed, config: changed });

    // A controller restart reads the record from the pool; a re-attach carries it. From here on libvirt is
    // reached through virsh (blkdeviotune), the way for a URI the held connection does not serve.
    await d.stop();
    d = await startDriver({ dir: d.dir, args: [...args(), '--libvirt-transport', 'virsh'] });
    await d.client.controllerUnpublishVolume({ volume_id: volumeId, node_id: vm.uuid, secrets: {} });
    assert.deepEqual(await tunes(), { live: null, config: null });
    await publish();
    assert.deepEqual(await tunes(), { live: changed, config: changed }, 'a re-attach carries the record');
    within((await measure()).writeMiBs, 10, 'MiB/s written after the re-attach');

    // Everything lifted: no record, no <iotune>, the disk back to its unlimited figures.
    await modify({ writeBytesPerSecond: 'unlimited', writeIOPS: 'unlimited', writeIOPSBurst: 'unlimited' });
    assert.deepEqual(await records(), []);
    assert.deepEqual(await tunes(), { live: {}, config: {} });
    const free = await measure();
    assert.ok(free.writeMiBs > 1.5 * 20, `writes lifted: ${free.writeMiBs.toFixed(1)} MiB/s`);
    assert.ok(free.readIops > 1.5 * 500, `reads lifted: ${free.readIops.toFixed(0)} IOPS`);
    await d.client.controllerUnpublishVolume({ volume_id: volumeId, node_id: vm.uuid, secrets: {} });
    await vm.go('done');
  });

  it('a crash between a change\'s two steps leaves two records: the newer is read, the start removes the older; a delete naming another ID of the hash leaves the record', async () => {
    await modify({ readIOPS: '300' });
    const [current] = await records();
    assert.match(current!, /^iolimits-[0-9a-f]{16}\.s1\.ri-8c$/, 'readIOPS 300, base 36');
    // What a crash leaves: an older record beside the newer (dir pool: files libvirt lists after a refresh).
    const older = current!.replace('.s1.', '.s0.').replace('ri-8c', 'ri-2s');
    await writeFile(path.join(pool.dir, older), 'x');
    await virsh('pool-refresh', pool.name);
    const listed = async () => (await execFileP(BIN, ['client', '--endpoint', d.endpoint, '-o', 'wide', 'list-volumes'])).stdout.split('\n').filter((l) => l.startsWith(volumeId));
    const rows = await listed();
    assert.equal(rows.length, 1, 'listed once, whatever records are beside it');
    assert.match(rows[0]!, / read 300 IO\/s /, `the newer record is read: ${rows[0]}`);
    await d.stop();
    d = await startDriver({ dir: d.dir, args: args() });
    assert.deepEqual(await records(), [current], 'the older is gone');
    assert.match((await listed())[0]!, / read 300 IO\/s /);
    // The driver itself names a gone source vol--<hash>: a delete of that ID is of no volume, and the record stays its volume's.
    await d.client.deleteVolume({ volume_id: `vol--${volumeId.slice(-16)}` });
    assert.deepEqual(await records(), [current]);
    await d.client.deleteVolume({ volume_id: volumeId });
    volumeId = '';
    assert.deepEqual(await pool.volumes(), [], 'the record goes with its volume');
  });
});
