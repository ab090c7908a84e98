// Controller side of the libvirt backend beside the bare virsh commands it wraps, against a real
// libvirtd with a dir pool and a running TCG domain. Not a test: it prints a table.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { diskXml } from '../src/pool/libvirt/domains.js';
import { ratioRow, timed } from './measure.js';
import { blockCap } from '../test/helpers/csi.js';
import { finish, startDriver } from '../test/helpers/driver.js';
import { dirPool, startLibvirt, testDomain, virsh } from '../test/helpers/libvirt.js';

const ITERATIONS = Number(process.env.BENCH_ITERATIONS ?? 20);
const SIZE = 64 * 1024 * 1024;

const row = (what: string, ours: number[], bareWhat: string, bare: number[]) => console.log(ratioRow(what, ours, bareWhat, bare));

async function goneFromDomain(dom: string, needle: string): Promise<void> {
  for (;;) {
    if (!(await virsh('domblklist', dom)).includes(needle)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function main(): Promise<void> {
  await startLibvirt();
  const pool = await dirPool('vpool-bench');
  const domDir = `${pool.dir}-dom`;
  await mkdir(domDir, { recursive: true });
  const dom = await testDomain(`vpool-bench-${path.basename(pool.dir).slice(-6)}`, domDir, true);
  // The default transport (one held RPC connection) and the virsh one (what remote URIs use), side by side.
  const drivers = {
    rpc: await startDriver({ args: ['--backend', 'libvirt', '--libvirt-pool', pool.name, '--hypervisor', 'bench', '--log-level', 'warn'] }),
    virsh: await startDriver({ args: ['--backend', 'libvirt', '--libvirt-transport', 'virsh', '--libvirt-pool', pool.name, '--hypervisor', 'bench', '--log-level', 'warn'] }),
  };
  const series = () => ({ create: [] as number[], del: [] as number[], pub: [] as number[], unpub: [] as number[] });
  const ours = { rpc: series(), virsh: series() };
  try {
    const r = { volCreate: [] as number[], volDelete: [] as number[], attach: [] as number[], detach: [] as number[] };
    for (let i = 0; i < ITERATIONS; i++) {
      for (const how of ['rpc', 'virsh'] as const) {
        const d = drivers[how];
        const o = ours[how];
        let id = '';
        o.create.push(await timed(async () => (id = (await d.client.createVolume({ name: `b-${how}-${i}`, capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()] })).volume!.volume_id)));
        o.pub.push(await timed(() => d.client.controllerPublishVolume({ volume_id: id, node_id: dom.uuid, volume_capability: blockCap(), readonly: false, secrets: {}, volume_context: {} })));
        o.unpub.push(await timed(() => d.client.controllerUnpublishVolume({ volume_id: id, node_id: dom.uuid, secrets: {} })));
        o.del.push(await timed(() => d.client.deleteVolume({ volume_id: id })));
      }

      const name = `raw-${i}.raw`;
      r.volCreate.push(await timed(() => virsh('vol-create-as', pool.name, name, String(SIZE), '--format', 'raw', '--allocation', '0')));
      const xmlFile = path.join(domDir, 'disk.xml');
      await writeFile(xmlFile, diskXml({ pool: pool.name, volume: name, format: 'raw', serial: `raw-${i}`, readOnly: false, shared: false, cache: 'none' }, 'vdb'));
      r.attach.push(await timed(() => virsh('attach-device', dom.name, xmlFile, '--live', '--config')));
      r.detach.push(await timed(async () => {
        await virsh('detach-disk', dom.name, 'vdb', '--live', '--config');
        await goneFromDomain(dom.name, name);
      }));
      r.volDelete.push(await timed(() => virsh('vol-delete', name, '--pool', pool.name)));
    }
    console.log(`libvirt backend (dir pool, raw ${SIZE >> 20} MiB sparse, TCG domain, ${ITERATIONS} iterations), medians in ms`);
    for (const how of ['rpc', 'virsh'] as const) {
      const o = ours[how];
      row(`CreateVolume (${how})`, o.create, 'bare virsh vol-create-as', r.volCreate);
      row(`DeleteVolume (${how})`, o.del, 'bare virsh vol-delete', r.volDelete);
      row(`ControllerPublishVolume (${how})`, o.pub, 'bare virsh attach-device', r.attach);
      row(`ControllerUnpublishVolume (${how})`, o.unpub, 'bare virsh detach-disk + until gone', r.detach);
    }
  } finally {
    for (const d of Object.values(drivers)) await finish(d);
    await dom.remove();
    await pool.remove();
    await rm(domDir, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
