import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { after, before, describe, it } from 'node:test';
import { onCommand } from '../../src/exec.js';
import { openBackend } from '../../src/cli/backends.js';
import { idFor } from '../../src/ids.js';
import { localSocketFor, RpcLibvirt } from '../../src/pool/libvirt/rpc/rpc-libvirt.js';
import { parsedVolumeFacts, PoolListing, volumeFacts } from '../../src/pool/libvirt/listing.js';
import { copyFile, mkdir } from 'node:fs/promises';
import { LibvirtStore } from '../../src/pool/libvirt/volume-store.js';
import { LibvirtMissingError } from '../../src/pool/libvirt/virsh.js';
import { blockCap } from '../helpers/csi.js';
import { codeOf, finish, MiB, needsRoot, startDriver, type Driver } from '../helpers/driver.js';
import path from 'node:path';
import { dirPool, LIBVIRTD_PIDFILE, pollUntil, startLibvirt, testDomain, URI, virsh, virshTry, type TestDomain, type TestPool } from '../helpers/libvirt.js';

const PIDFILE = LIBVIRTD_PIDFILE;

/** Stops the real libvirtd (the one test/libvirt/libvirt-start.sh started) and waits until it is gone. */
async function stopLibvirtd(): Promise<void> {
  const pid = Number((await readFile(PIDFILE, 'utf8')).trim());
  assert.ok(pid > 1, 'libvirtd was started by libvirt-start.sh');
  process.kill(pid, 'SIGTERM');
  await pollUntil(async () => ((await virshTry('version')).code !== 0 ? true : undefined), 30_000, async () => 'libvirtd did not stop');
  // Its socket goes before the process does; a new libvirtd cannot take the pidfile until the old one has exited.
  const alive = () => {
    try {
      process.kill(pid, 0);
      return true;
    } catch {
      return false;
    }
  };
  await pollUntil(async () => (alive() ? undefined : true), 30_000, async () => `libvirtd (pid ${pid}) did not exit`);
}

// The held connection to libvirtd (src/pool/libvirt/rpc/): every call on one socket, no virsh, and
// a libvirtd restart (an upgrade, a crash) costs the calls in flight and nothing more.
describe('libvirt over its RPC protocol: one held connection, reconnected after libvirtd restarts', needsRoot(), () => {
  let pool: TestPool;
  let d: Driver;
  let idle: TestDomain;
  before(async () => {
    await startLibvirt();
    pool = await dirPool('vpool-rpc');
    idle = await testDomain(`vpool-rpc-${path.basename(pool.dir).slice(-6)}`, `${pool.dir}-dom`, false);
    d = await startDriver({ args: ['--backend', 'libvirt', '--libvirt-uri', URI, '--libvirt-pool', pool.name, '--hypervisor', 'hv-rpc'] });
  });
  after(async () => {
    await startLibvirt(); // whatever happened above, the next suite finds libvirtd up
    const left = d ? await finish(d) : [];
    await idle?.remove();
    await pool?.remove();
    assert.deepEqual(left, []);
  });

  it('serves many calls, concurrent ones included, on one connection and runs no command', async () => {
    const rpc = new RpcLibvirt(URI, localSocketFor(URI)!);
    const commands: string[] = [];
    onCommand((command) => commands.push(command));
    try {
      const names = Array.from({ length: 20 }, (_, i) => `rpc-${i}.raw`);
      await Promise.all(names.map((n) => rpc.createVolume(pool.name, `<volume><name>${n}</name><capacity unit='bytes'>${MiB}</capacity><allocation unit='bytes'>0</allocation></volume>`)));
      assert.deepEqual((await rpc.volumeNames(pool.name)).filter((n) => n.startsWith('rpc-')).sort(), [...names].sort());
      const xmls = await Promise.all(names.map((n) => rpc.volumeXml(pool.name, n)));
      for (const [i, xml] of xmls.entries()) assert.match(xml ?? '', new RegExp(`<name>${names[i]}</name>`));
      assert.equal((await rpc.poolInfo(pool.name)).running, true);
      await Promise.all(names.map((n) => rpc.deleteVolume(pool.name, n)));
      // A missing object is the backend's sentinel, as it is over virsh.
      await assert.rejects(rpc.deleteVolume(pool.name, names[0]), LibvirtMissingError);
      assert.equal(await rpc.volumeXml(pool.name, names[0]), null);
      assert.equal(await rpc.domainXml('no-such-domain'), null);
      assert.equal(await rpc.poolXml('no-such-pool'), null);
      assert.equal(rpc.connection.connections, 1, 'one connection for every call');
      assert.deepEqual(commands, [], 'no command ran');
    } finally {
      rpc.close();
    }
  });

  it('reads a volume\'s facts from the XML libvirtd writes as a full XML parse does (raw, qcow2, a backing store, a path with & and \')', async () => {
    const rpc = new RpcLibvirt(URI, localSocketFor(URI)!);
    const dir = await mkdtemp("/var/tmp/vpool-rpc-a&b'c-");
    const name = path.basename(dir).replace(/[^a-z0-9-]/gi, '');
    try {
      // pool-create-as does not escape its arguments into the XML it builds: a pool of our own XML.
      const xmlPath = (p: string) => p.replace(/&/g, '&amp;').replace(/'/g, '&apos;');
      await writeFile(`${dir}.xml`, `<pool type='dir'><name>${name}</name><target><path>${xmlPath(dir)}</path></target></pool>`);
      await virsh('pool-create', `${dir}.xml`);
      const vol = (n: string, format: string, extra = '') => `<volume><name>${n}</name><capacity unit='bytes'>${3 * MiB}</capacity><allocation unit='bytes'>0</allocation><target><format type='${format}'/></target>${extra}</volume>`;
      await rpc.createVolume(name, vol('a.raw', 'raw'));
      await rpc.createVolume(name, vol('b.qcow2', 'qcow2'));
      await rpc.createVolume(name, vol('c.qcow2', 'qcow2', `<backingStore><path>${xmlPath(`${dir}/b.qcow2`)}</path><format type='qcow2'/></backingStore>`));
      for (const n of await rpc.volumeNames(name)) {
        const xml = (await rpc.volumeXml(name, n))!;
        const facts = volumeFacts(xml);
        assert.deepEqual(facts, parsedVolumeFacts(xml), n);
        assert.equal(facts.path, `${dir}/${n}`);
        assert.equal(facts.capacity, 3 * MiB);
        assert.ok(facts.mtime && Math.abs(facts.mtime * 1000 - Date.now()) < 600_000, 'the mtime of now');
      }
      assert.match((await rpc.volumeXml(name, 'c.qcow2'))!, /<backingStore>/, 'the backing store is in the XML');
    } finally {
      await virshTry('pool-destroy', name);
      await rm(dir, { recursive: true, force: true });
      await rm(`${dir}.xml`, { force: true });
      rpc.close();
    }
  });

  it('holds a file volume\'s facts while its file is unchanged, sees a resize or a write by anyone, and holds nothing for a file that is not libvirt\'s', async () => {
    const rpc = new RpcLibvirt(URI, localSocketFor(URI)!);
    let xmlReads = 0;
    const volumeXml = rpc.volumeXml.bind(rpc);
    rpc.volumeXml = (p: string, n: string) => (xmlReads++, volumeXml(p, n));
    const other = `${pool.dir}-elsewhere`;
    try {
      const names = ['held-a.raw', 'held-b.raw'];
      for (const n of names) await rpc.createVolume(pool.name, `<volume><name>${n}</name><capacity unit='bytes'>${4 * MiB}</capacity><allocation unit='bytes'>0</allocation></volume>`);
      const listing = new PoolListing(new LibvirtStore(rpc, pool.name, 'dir', pool.dir), pool.dir);
      const facts = async () => Promise.all(names.map((n) => listing.sizeAndPath(n)));
      const first = await facts();
      assert.equal(xmlReads, 2);
      assert.deepEqual(await facts(), first);
      assert.equal(xmlReads, 2, 'unchanged files: no XML read');
      // Another process grows one through libvirt, and writes into the other.
      await virsh('vol-resize', '--vol', names[0], '--pool', pool.name, '--capacity', String(8 * MiB));
      const fh = await (await import('node:fs/promises')).open(`${pool.dir}/${names[1]}`, 'r+');
      await fh.write(Buffer.alloc(MiB, 7), 0, MiB, 0);
      await fh.close();
      const now = await facts();
      assert.equal(xmlReads, 4, 'both changed: both read again');
      assert.equal(now[0]!.capacity, 8 * MiB, 'the resize is seen');
      assert.ok(now[1]!.allocation >= MiB && now[1]!.allocation > first[1]!.allocation, 'the write is seen');
      // A copy of the pool elsewhere (a controller that sees other files at the pool's path): never held.
      await mkdir(other, { recursive: true });
      for (const n of names) await copyFile(`${pool.dir}/${n}`, `${other}/${n}`);
      const blind = new PoolListing(new LibvirtStore(rpc, pool.name, 'dir', pool.dir), other);
      xmlReads = 0;
      for (let i = 0; i < 3; i++) await Promise.all(names.map((n) => blind.sizeAndPath(n)));
      assert.equal(xmlReads, 6, 'not libvirt\'s files: libvirt is asked every time');
      for (const n of names) await rpc.deleteVolume(pool.name, n);
    } finally {
      await rm(other, { recursive: true, force: true });
      rpc.close();
    }
  });

  it('pages after the first reuse its listing, yet never list a volume deleted in between', async () => {
    const opened = await openBackend({ kind: 'libvirt', uri: URI, transport: 'rpc', pool: pool.name, hypervisor: 'hv-rpc', diskCache: 'none', attachTimeoutMs: 10_000, reserveBytes: 0 }, 'controller');
    const backend = opened.backend!;
    const made = [];
    for (const n of ['page-a', 'page-b', 'page-c']) made.push(await backend.createVolume({ id: idFor('vol', n), name: n, capacityBytes: 4 * MiB, parameters: {} }));
    const ids = made.map((v) => v.id).sort();
    const first = await backend.listVolumePage!('', 1);
    assert.deepEqual(first.items.map((v) => v.id), [ids[0]]);
    assert.equal(first.more, true);
    await backend.deleteVolume(ids[2]);
    const rest = await backend.listVolumePage!(ids[0], 10);
    assert.deepEqual(rest.items.map((v) => v.id), [ids[1]], 'the deleted volume is not on the next page');
    for (const id of ids.slice(0, 2)) await backend.deleteVolume(id);
  });

  it('an attach by domain name and a detach and attach by UUID (any case) of one domain queue on one lock: every target distinct, nothing lost', async () => {
    const cap = blockCap();
    const vols = [];
    for (const n of ['lock-a', 'lock-b', 'lock-c', 'lock-d']) vols.push((await d.client.createVolume({ name: n, capacity_range: { required_bytes: String(4 * MiB) }, volume_capabilities: [cap], parameters: {} })).volume!.volume_id);
    const publish = (volume_id: string, node_id: string) => d.client.controllerPublishVolume({ volume_id, node_id, volume_capability: cap, readonly: false, secrets: {}, volume_context: {} });
    const unpublish = (volume_id: string, node_id: string) => d.client.controllerUnpublishVolume({ volume_id, node_id, secrets: {} });
    const targets = async () => {
      const xml = await virsh('dumpxml', '--inactive', idle.name);
      return [...xml.matchAll(/<target dev='(vd[a-z]+)'/g)].map((m) => m[1]);
    };
    try {
      await publish(vols[0], idle.uuid);
      for (let round = 0; round < 3; round++) {
        // Each names the domain its own way; under two lock keys the attaches would read the same free target and one would fail.
        await Promise.all([publish(vols[1], idle.name), unpublish(vols[0], idle.uuid.toUpperCase()), publish(vols[2], idle.uuid.toUpperCase()), publish(vols[3], idle.uuid)]);
        const t = await targets();
        assert.equal(new Set(t).size, t.length, `round ${round}: targets ${t.join(' ')} are distinct`);
        const serials = await virsh('dumpxml', '--inactive', idle.name);
        for (const v of vols.slice(1)) assert.match(serials, new RegExp(v.slice(-8)), `round ${round}: ${v} attached`);
        for (const v of vols.slice(1)) await unpublish(v, idle.name);
        await publish(vols[0], idle.name);
      }
      await unpublish(vols[0], idle.uuid);
    } finally {
      for (const v of vols) await d.client.deleteVolume({ volume_id: v }).catch(() => undefined);
    }
  });

  it('six long copies on connections of their own: CreateVolume, ControllerPublish and GetCapacity answer while they run', async () => {
    const cap = blockCap();
    const size = 256 * MiB;
    // Six sources (a clone holds its source's lock, so clones of one source would queue), data everywhere
    // (a copy skips holes and zeroes): each copy reads and writes all of it.
    const { open } = await import('node:fs/promises');
    const chunk = Buffer.alloc(8 * MiB);
    for (let i = 0; i < chunk.length; i += 4) chunk.writeUInt32BE((i * 2654435761) >>> 0, i);
    const sources: string[] = [];
    for (let i = 0; i < 6; i++) {
      const src = (await d.client.createVolume({ name: `copy-src-${i}`, capacity_range: { required_bytes: String(size) }, volume_capabilities: [cap], parameters: {} })).volume!.volume_id;
      sources.push(src);
      const fh = await open(path.join(pool.dir, (await pool.volumes()).find((n) => n.startsWith(src))!), 'r+');
      for (let at = 0; at < size; at += chunk.length) await fh.write(chunk, 0, chunk.length, at);
      await fh.close();
    }
    const made: string[] = [...sources];
    let copiesDone = 0;
    try {
      const filesBefore = (await readdir(pool.dir)).length;
      const copies = sources.map((src, i) =>
        d.client
          .createVolume({ name: `copy-${i}`, capacity_range: { required_bytes: String(size) }, volume_capabilities: [cap], parameters: {}, volume_content_source: { volume: { volume_id: src } } })
          .then((r) => {
            copiesDone++;
            made.push(r.volume!.volume_id);
          }),
      );
      // Running: libvirt has made the six target files and is filling them.
      await pollUntil(async () => ((await readdir(pool.dir)).length >= filesBefore + 6 ? true : undefined), 120_000, async () => 'the copies did not start');
      const during: Record<string, number> = {};
      const timed = async (what: string, p: Promise<unknown>) => {
        const t = performance.now();
        await p;
        during[what] = Math.round(performance.now() - t);
      };
      const small = (await d.client.createVolume({ name: 'copy-side', capacity_range: { required_bytes: String(4 * MiB) }, volume_capabilities: [cap], parameters: {} })).volume!.volume_id;
      made.push(small);
      await timed('GetCapacity', d.client.getCapacity({ volume_capabilities: [cap], parameters: {} }));
      await timed('ControllerPublish', d.client.controllerPublishVolume({ volume_id: small, node_id: idle.uuid, volume_capability: cap, readonly: false, secrets: {}, volume_context: {} }));
      await timed('ControllerUnpublish', d.client.controllerUnpublishVolume({ volume_id: small, node_id: idle.uuid, secrets: {} }));
      const stillCopying = 6 - copiesDone;
      console.log(`calls during six copies (${stillCopying} still running): ${JSON.stringify(during)}`);
      assert.ok(stillCopying > 0, 'the calls were answered before the last copy ended (they did not wait behind the copies)');
      await Promise.all(copies);
      assert.equal(made.length, 13);
    } finally {
      for (const v of made) await d.client.deleteVolume({ volume_id: v }).catch(() => undefined);
    }
  });

  it('a frozen libvirtd (SIGSTOP) is declared dead by keepalive within interval x (count + 1), calls fail UNAVAILABLE at once, and the connection comes back after SIGCONT', async () => {
    const rpc = new RpcLibvirt(URI, localSocketFor(URI)!, { keepalive: { intervalMs: 1000, count: 2 } });
    const pid = Number((await readFile(PIDFILE, 'utf8')).trim());
    try {
      assert.equal((await rpc.poolInfo(pool.name)).running, true);
      process.kill(pid, 'SIGSTOP');
      const t = performance.now();
      const err = await rpc.poolInfo(pool.name).then(
        () => null,
        (e: Error & { kind?: string }) => e,
      );
      const tookMs = Math.round(performance.now() - t);
      assert.equal(err?.kind, 'unavailable');
      assert.match(err!.message, /answered none of 2 keepalive pings/);
      console.log(`a frozen libvirtd declared dead after ${tookMs} ms (keepalive 1 s x 2; the call's own timeout 120 s)`);
      // Still frozen: a new connection's handshake is bounded by the keepalive as well.
      await assert.rejects(rpc.poolInfo(pool.name), /keepalive pings/);
    } finally {
      process.kill(pid, 'SIGCONT');
    }
    try {
      assert.equal((await rpc.poolInfo(pool.name)).running, true);
      assert.ok(rpc.connection.connections >= 3);
    } finally {
      rpc.close();
    }
  });

  it('after libvirtd restarts, a call in flight or made while it is down fails as unavailable and the next one reconnects', async () => {
    const rpc = new RpcLibvirt(URI, localSocketFor(URI)!);
    try {
      assert.equal((await rpc.poolInfo(pool.name)).running, true);
      const v = (await d.client.createVolume({ name: 'pvc-before', capacity_range: { required_bytes: String(4 * MiB) }, volume_capabilities: [blockCap()], parameters: {} })).volume!;
      // An event watch lives on the connection: it ends with it, so a waiting unpublish falls back to reading the domain.
      const watch = rpc.deviceRemoved(idle.uuid, 60_000);
      const watchEnded = watch.next();
      assert.equal(await watch.ready, true, 'libvirtd registered the watch');

      await stopLibvirtd();
      assert.equal(await watchEnded, null, 'the watch ended with the connection (or the test hangs here until its bound)');
      await assert.rejects(rpc.poolInfo(pool.name), (err: Error & { kind?: string }) => err.kind === 'unavailable');
      assert.equal(await codeOf(d.client.getCapacity({ volume_capabilities: [blockCap()], parameters: {} })), 'UNAVAILABLE');

      await startLibvirt();
      assert.equal((await rpc.poolInfo(pool.name)).running, true);
      assert.equal(rpc.connection.connections, 2, 'one new connection after the restart');
      // The driver's held connection came back the same way: the volume made before is there, a new one can be made.
      const got = await d.client.controllerGetVolume({ volume_id: v.volume_id });
      assert.equal(got.volume?.volume_id, v.volume_id);
      const w = (await d.client.createVolume({ name: 'pvc-after', capacity_range: { required_bytes: String(4 * MiB) }, volume_capabilities: [blockCap()], parameters: {} })).volume!;
      assert.match(await virsh('vol-list', pool.name), new RegExp(w.volume_id));
      await watch.stop();
      for (const x of [v, w]) await d.client.deleteVolume({ volume_id: x.volume_id });
    } finally {
      rpc.close();
    }
  });
});
