// The libvirt backend on an rbd pool of a real single-node Ceph (test/ceph/ceph-start.sh) beside the bare
// commands doing the same, in one run: virsh for what libvirt does (create, attach), and `rbd` for a
// Ceph snapshot and clone (what vol-create-from does inside libvirtd). Not a test: it prints a table.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { diskXml } from '../src/pool/libvirt/domains.js';
import { ratioRow, timed } from './measure.js';
import { blockCap } from '../test/helpers/csi.js';
import { finish, startDriver } from '../test/helpers/driver.js';
import { controllerIdentity, rbdPool, startCeph } from '../test/helpers/ceph.js';
import { nodeVm, startLibvirt, testDomain, URI, virsh } from '../test/helpers/libvirt.js';
import { randomUUID } from 'node:crypto';
import { readFile } from 'node:fs/promises';

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 10);
const SIZE = 64 * 1024 * 1024;
const row = (what: string, ours: number[], bareWhat: string, bare: number[]) => console.log(ratioRow(what, ours, bareWhat, bare));

async function goneFromDomain(dom: string, needle: string): Promise<void> {
  while ((await virsh('domblklist', dom)).includes(needle)) await new Promise((r) => setTimeout(r, 100));
}

async function main(): Promise<void> {
  await startLibvirt();
  const ceph = await startCeph();
  const pool = await rbdPool(ceph, 'vpool-bench-rbd');
  const dir = await mkdtemp('/var/tmp/vpool-bench-rbd-');
  const dom = await testDomain(`vpool-bench-rbd-${path.basename(dir).slice(-6)}`, dir, true);
  const d = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'bench', '--log-level', 'warn'] });
  // The same controller given a Ceph identity (ceph-store.ts: librbd makes the images), on a libvirt pool of its own.
  const poolId = await rbdPool(ceph, 'vpool-bench-rbd-id');
  const identity = await controllerIdentity(ceph, 'bench');
  const di = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', poolId.name, '--hypervisor', 'bench', '--log-level', 'warn', ...identity.flags] });
  const o = { create: [] as number[], snap: [] as number[], clone: [] as number[], pub: [] as number[], unpub: [] as number[], del: [] as number[] };
  const c = { create: [] as number[], snap: [] as number[], resnap: [] as number[], clone: [] as number[], del: [] as number[] };
  const r = { create: [] as number[], snap: [] as number[], clone: [] as number[], fromVirsh: [] as number[], attach: [] as number[], detach: [] as number[], del: [] as number[] };
  try {
    for (let i = 0; i < ITERATIONS; i++) {
      let id = '';
      let snapId = '';
      let cloneId = '';
      o.create.push(await timed(async () => (id = (await d.client.createVolume({ name: `b-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()] })).volume!.volume_id)));
      o.snap.push(await timed(async () => (snapId = (await d.client.createSnapshot({ name: `bs-${i}`, source_volume_id: id, parameters: {}, secrets: {} })).snapshot!.snapshot_id)));
      o.clone.push(
        await timed(async () => (cloneId = (await d.client.createVolume({ name: `bc-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], volume_content_source: { snapshot: { snapshot_id: snapId } } })).volume!.volume_id)),
      );
      o.pub.push(await timed(() => d.client.controllerPublishVolume({ volume_id: cloneId, node_id: dom.uuid, volume_capability: blockCap(), readonly: false, secrets: {}, volume_context: {} })));
      o.unpub.push(await timed(() => d.client.controllerUnpublishVolume({ volume_id: cloneId, node_id: dom.uuid, secrets: {} })));
      o.del.push(await timed(() => d.client.deleteVolume({ volume_id: cloneId })));
      await d.client.deleteSnapshot({ snapshot_id: snapId });
      await d.client.deleteVolume({ volume_id: id });

      // With the identity: a second snapshot of the volume after its first (libvirt refuses one once the volume is written).
      let snap2 = '';
      c.create.push(await timed(async () => (id = (await di.client.createVolume({ name: `c-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()] })).volume!.volume_id)));
      c.snap.push(await timed(async () => (snapId = (await di.client.createSnapshot({ name: `cs-${i}`, source_volume_id: id, parameters: {}, secrets: {} })).snapshot!.snapshot_id)));
      c.resnap.push(await timed(async () => (snap2 = (await di.client.createSnapshot({ name: `cs2-${i}`, source_volume_id: id, parameters: {}, secrets: {} })).snapshot!.snapshot_id)));
      c.clone.push(
        await timed(async () => (cloneId = (await di.client.createVolume({ name: `cc-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], volume_content_source: { snapshot: { snapshot_id: snapId } } })).volume!.volume_id)),
      );
      c.del.push(await timed(() => di.client.deleteVolume({ volume_id: cloneId })));
      for (const s of [snapId, snap2]) await di.client.deleteSnapshot({ snapshot_id: s });
      await di.client.deleteVolume({ volume_id: id });

      const name = `raw-${i}`;
      r.create.push(await timed(() => virsh('vol-create-as', pool.name, name, String(SIZE))));
      // What a copy costs through libvirt itself, from an image with no snapshot yet (it takes one, then clones).
      const xml = path.join(dir, 'vol.xml');
      await writeFile(xml, `<volume><name>${name}-from</name><capacity unit='bytes'>${SIZE}</capacity></volume>`);
      r.fromVirsh.push(await timed(() => virsh('vol-create-from', '--pool', pool.name, '--file', xml, '--vol', name, '--inputpool', pool.name)));
      // And with the rbd CLI: a snapshot (created and protected, as a clone v1 parent must be), then a clone.
      r.snap.push(await timed(async () => {
        await ceph.rbd('snap', 'create', `rbd/${name}@s`);
        await ceph.rbd('snap', 'protect', `rbd/${name}@s`);
      }));
      r.clone.push(await timed(() => ceph.rbd('clone', `rbd/${name}@s`, `rbd/${name}-clone`)));
      await virsh('pool-refresh', pool.name);
      const secret = pool.secret;
      const host = /mon_host = v1:([\d.]+):(\d+)/.exec(await (await import('node:fs/promises')).readFile(ceph.conf, 'utf8'))!;
      const disk = path.join(dir, 'disk.xml');
      const rbd = { cephPool: 'rbd', hosts: [{ name: host[1]!, port: host[2] }], auth: { username: pool.user, secretUuid: secret }, image: `${name}-clone` };
      await writeFile(disk, diskXml({ pool: pool.name, volume: `${name}-clone`, rbd, format: 'raw', serial: `raw-${i}`, readOnly: false, shared: false, cache: 'none' }, 'vdb'));
      r.attach.push(await timed(() => virsh('attach-device', dom.name, disk, '--live', '--config')));
      r.detach.push(await timed(async () => {
        await virsh('detach-disk', dom.name, 'vdb', '--live', '--config');
        await goneFromDomain(dom.name, `${name}-clone`);
      }));
      r.del.push(await timed(() => ceph.rbd('rm', '--no-progress', `rbd/${name}-clone`)));
      await ceph.rbd('rm', '--no-progress', `rbd/${name}-from`);
      await virsh('pool-refresh', pool.name);
      await virsh('vol-delete', '--delete-snapshots', name, '--pool', pool.name);
    }
    console.log(`libvirt backend on a real Ceph 16.2 rbd pool (one OSD on a file, ${SIZE >> 20} MiB images, TCG domain, ${ITERATIONS} iterations), medians in ms`);
    const snapAndClone = r.snap.map((x, k) => x + r.clone[k]!);
    row('CreateVolume', o.create, 'bare virsh vol-create-as', r.create);
    row('CreateSnapshot', o.snap, 'bare virsh vol-create-from', r.fromVirsh);
    row('CreateSnapshot', o.snap, 'bare rbd snap create+protect, clone', snapAndClone);
    row('CreateVolume from snapshot', o.clone, 'bare virsh vol-create-from', r.fromVirsh);
    row('CreateVolume from snapshot', o.clone, 'bare rbd snap create+protect, clone', snapAndClone);
    row('ControllerPublishVolume', o.pub, 'bare virsh attach-device (rbd)', r.attach);
    row('ControllerUnpublishVolume', o.unpub, 'bare virsh detach-disk + until gone', r.detach);
    row('DeleteVolume (a clone)', o.del, 'bare rbd rm (a clone)', r.del);
    console.log('the controller with a Ceph identity (librbd makes the images):');
    row('CreateVolume', c.create, 'bare virsh vol-create-as', r.create);
    row('CreateSnapshot', c.snap, 'bare rbd snap create+protect, clone', snapAndClone);
    row('CreateSnapshot, the second', c.resnap, 'bare rbd snap create+protect, clone', snapAndClone);
    row('CreateVolume from snapshot', c.clone, 'bare rbd snap create+protect, clone', snapAndClone);
    row('DeleteVolume (a clone)', c.del, 'bare rbd rm (a clone)', r.del);
    if (process.env.BENCH_SKIP_IOPS !== '1') await iops(d, ceph);
  } finally {
    await finish(d);
    await finish(di);
    await poolId.remove();
    await dom.remove();
    await pool.remove();
    await ceph.stop();
    await rm(dir, { recursive: true, force: true });
  }
}

/**
 * 4 KiB random reads, 16 in flight, for 20 s: fio in a node VM (the VM harness's Debian, TCG) on a
 * volume ControllerPublishVolume hot-plugged there (QEMU's librbd underneath), against `rbd bench`
 * reading the same image from the host (librbd natively). The image is written in full first: an
 * unwritten rbd object reads as zeros without asking an OSD.
 */
async function iops(d: Awaited<ReturnType<typeof startDriver>>, ceph: Awaited<ReturnType<typeof startCeph>>): Promise<void> {
  const size = 256 * 1024 * 1024;
  const vol = (await d.client.createVolume({ name: 'bench-iops', capacity_range: { required_bytes: String(size) }, volume_capabilities: [blockCap()] })).volume!;
  const image = (await ceph.rbd('ls', 'rbd')).split('\n').find((i) => i.startsWith(`${vol.volume_id}.`))!;
  await ceph.rbd('bench', '--io-type', 'write', '--io-pattern', 'seq', '--io-size', '4M', '--io-total', String(size), `rbd/${image}`);
  const serial = `vp-${vol.volume_id.slice(-16)}`;
  const script = [
    'while [ ! -e /vmrun/go-fio ]; do sleep 0.5; done',
    `for b in /sys/block/vd*; do [ "$(cat $b/serial 2>/dev/null)" = ${serial} ] && dev=/dev/\${b##*/}; done`,
    'fio --name=randread --filename=$dev --rw=randread --bs=4k --iodepth=16 --ioengine=libaio --direct=1 --time_based --runtime=20 --output-format=json > /vmrun/fio.json',
    'touch /vmrun/fio-done',
  ].join('\n');
  const uuid = randomUUID();
  const vm = await nodeVm(`vpool-bench-iops-${uuid.slice(0, 6)}`, uuid, ['bash', '-c', `modprobe virtio_blk 2>/dev/null; ${script}`], {});
  try {
    await d.client.controllerPublishVolume({ volume_id: vol.volume_id, node_id: uuid, volume_capability: blockCap(), readonly: false, secrets: {}, volume_context: {} });
    await vm.go('fio');
    await vm.waitFile('fio-done', 300_000);
    const fio = JSON.parse(await readFile(path.join(vm.run, 'fio.json'), 'utf8')) as { jobs: { read: { iops: number } }[] };
    const guest = fio.jobs[0]!.read.iops;
    const out = await ceph.rbd('bench', '--io-type', 'read', '--io-pattern', 'rand', '--io-size', '4K', '--io-threads', '16', '--io-total', String(64 * 1024 * 1024), `rbd/${image}`);
    const host = Number(/elapsed:\s*\d+\s+ops:\s*\d+\s+ops\/sec:\s*([\d.]+)/.exec(out)?.[1]);
    console.log(`4 KiB random reads, 16 in flight, ${size >> 20} MiB image: fio in a TCG node VM (librbd in QEMU) ${Math.round(guest)} IOPS, rbd bench on the host ${Math.round(host)} IOPS, ratio ${(guest / host).toFixed(2)}`);
    await d.client.controllerUnpublishVolume({ volume_id: vol.volume_id, node_id: uuid, secrets: {} });
  } finally {
    await vm.remove();
    await d.client.deleteVolume({ volume_id: vol.volume_id });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
