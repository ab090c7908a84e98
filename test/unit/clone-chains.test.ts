import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { idFor } from '../../src/ids.js';
import { CloneChains, MAX_CLONE_DEPTH, rbdRecopyRefusal } from '../../src/pool/libvirt/clone-chains.js';
import { storageFailure } from '../../src/pool/libvirt/libvirt-api.js';
import { rbdFailureOf } from '../../src/pool/libvirt/librbd.js';
import type { Entry } from '../../src/pool/libvirt/listing.js';
import { idHash, parseName, retiredName, snapshotName, volumeName } from '../../src/pool/libvirt/names.js';

// The clone bookkeeping of an rbd pool over a FAKE pool: a set of image names standing for what libvirt lists
// (the real pool, Ceph and libvirt: test/e2e/libvirt-rbd.test.ts). What Ceph itself refuses is not modelled here.
function fakePool(names: string[], attachedNames: string[] = []) {
  const images = new Set(names);
  const deleted: string[] = [];
  const entries = async (): Promise<Entry[]> => [...images].map((name) => ({ name, parsed: parseName(name)! }));
  const chains = new CloneChains({
    entries,
    deleteImage: async (name) => {
      images.delete(name);
      deleted.push(name);
    },
    createTombstone: async (name) => void images.add(name),
    attached: async (e) => attachedNames.includes(e.name),
  });
  const entry = async (name: string) => (await entries()).find((e) => e.name === name)!;
  return { images, deleted, entries, chains, entry };
}

const vol = (name: string, source?: { kind: 'volume' | 'snapshot'; id: string }) =>
  volumeName({ id: idFor('vol', name), format: 'raw', preallocated: false, source: source ? { kind: source.kind, hash: idHash(source.id) } : undefined });
const snap = (name: string, of: string, t = 1) => snapshotName({ id: idFor('snap', name), sourceHash: idHash(idFor('vol', of)), createdAt: t, format: 'raw' });

describe('rbd clone chains (FAKE pool of names)', () => {
  it('retires a parent while a clone reads it, and removes it with its last clone', async () => {
    const p = fakePool([vol('a'), snap('s', 'a'), vol('b', { kind: 'snapshot', id: idFor('snap', 's') })]);
    assert.equal(await p.chains.remove(await p.entry(vol('a')), await p.entries()), 'retired');
    assert.ok(p.images.has(retiredName(idFor('vol', 'a'))));
    assert.equal(await p.chains.remove(await p.entry(snap('s', 'a')), await p.entries()), 'retired');
    assert.deepEqual(p.deleted, []);
    assert.equal(await p.chains.remove(await p.entry(vol('b', { kind: 'snapshot', id: idFor('snap', 's') })), await p.entries()), 'deleted');
    assert.deepEqual([...p.images], [], 'the whole chain went, tombstones too');
  });

  it('a child names its parent by kind and hash: a snapshot whose ID ends in a volume\'s hash is not that volume', async () => {
    const sameHash = `snap-x-${idHash(idFor('vol', 'x'))}`;
    const s = snapshotName({ id: sameHash, sourceHash: idHash(idFor('vol', 'other')), createdAt: 1, format: 'raw' });
    const p = fakePool([vol('x'), s, vol('c', { kind: 'snapshot', id: sameHash })]);
    assert.equal((await p.chains.children(await p.entry(vol('x')), await p.entries())).length, 0);
    assert.equal((await p.chains.children(await p.entry(s), await p.entries())).length, 1);
  });

  it('two images under one retired ID: neither is removed, by a remove or by collect', async () => {
    const a1 = vol('a');
    const a2 = volumeName({ id: idFor('vol', 'a'), format: 'raw', preallocated: false, fsType: 'ext4' });
    const p = fakePool([a1, a2, retiredName(idFor('vol', 'a'))]);
    assert.equal(await p.chains.remove(await p.entry(a1), await p.entries()), 'retired');
    await p.chains.collect();
    assert.deepEqual(p.deleted, []);
  });

  it('collect removes a childless retired image and a lone tombstone, but never an image a domain has as a disk', async () => {
    const p = fakePool([vol('a'), retiredName(idFor('vol', 'a')), retiredName(idFor('vol', 'gone')), vol('held'), retiredName(idFor('vol', 'held'))], [vol('held')]);
    await p.chains.collect();
    assert.deepEqual(p.deleted.sort(), [vol('a'), retiredName(idFor('vol', 'a')), retiredName(idFor('vol', 'gone'))].sort());
    assert.ok(p.images.has(vol('held')), 'attached: left alone');
  });

  it('counts the depth of a chain and refuses a copy past the bound', async () => {
    const names = [vol('v0')];
    for (let i = 1; i <= MAX_CLONE_DEPTH; i++) {
      names.push(i % 2 ? snap(`s${i}`, `v${i - 1}`) : vol(`v${i}`, { kind: 'snapshot', id: idFor('snap', `s${i - 1}`) }));
    }
    const p = fakePool(names);
    const all = await p.entries();
    const last = all.find((e) => e.name === names[names.length - 1])!;
    assert.equal(await p.chains.depth(last, all), MAX_CLONE_DEPTH);
    await assert.rejects(p.chains.copyHow(last, all), /16 levels deep.*cannot flatten/);
    assert.deepEqual(await p.chains.copyHow(all.find((e) => e.name === names[names.length - 2])!, all), { flatten: false });
  });
});

describe('libvirt storage failures (rbd): the words of libvirt 9.0, over RPC and in virsh\'s stderr', () => {
  it('monitors that do not answer are UNAVAILABLE; a Ceph pool libvirt cannot open is FAILED_PRECONDITION; anything else is left alone', () => {
    const rpc = "failed to connect to the RADOS monitor on: 127.0.0.1:37109,: No such file or directory";
    const virsh = `error: Failed to create vol from /tmp/v.xml\nerror: ${rpc}\n`;
    for (const m of [rpc, virsh]) assert.equal((storageFailure(m) as { kind?: string } | null)?.kind, 'unavailable');
    assert.match(storageFailure(virsh)!.message, /check the monitors and the key/);
    assert.equal((storageFailure("error: failed to create the RBD IoCTX. Does the pool 'kube' exist?: No such file or directory") as { kind?: string } | null)?.kind, 'precondition');
    assert.equal(storageFailure("error: failed to remove volume 'rbd/x': Device or resource busy"), null);
  });
});

describe("libvirt's rbd copy failure (FindNoDiff), as libvirt 9.0 reports it", () => {
  it('is a precondition naming the likely cause and where the real one is logged; other failures are left alone', () => {
    const seen = new Error('An error occurred, but the cause is unknown');
    const mapped = rbdRecopyRefusal(seen, 'vol-a-0123456789abcdef.raw');
    assert.equal((mapped as { kind?: string } | null)?.kind, 'precondition');
    assert.match(mapped!.message, /most likely because it was copied before .* written since/);
    assert.match(mapped!.message, /failed to iterate RBD snapshot/);
    assert.equal((rbdRecopyRefusal(new Error('failed to iterate RBD snapshot vol-a.raw@libvirt-1: No such file or directory'), 'vol-a.raw') as { kind?: string } | null)?.kind, 'precondition');
    assert.equal(rbdRecopyRefusal(new Error("failed to clone RBD volume a to b: No space left on device"), 'a'), null);
  });
});

// The same bookkeeping with a Ceph identity, over a FAKE Ceph graph (a map of image to parent standing for what
// `rbd info`/`rbd children` say; the real Ceph: test/e2e/libvirt-rbd-identity.test.ts). What Ceph refuses is not modelled.
function fakeCeph(parents: Record<string, string | null>, o: { room?: number; failFlatten?: boolean } = {}) {
  const graph = new Map(Object.entries(parents));
  const deleted: string[] = [];
  const flattened: string[] = [];
  const entries = async (): Promise<Entry[]> => [...graph.keys()].flatMap((name) => (parseName(name) ? [{ name, parsed: parseName(name)! }] : []));
  const chains = new CloneChains({
    entries,
    deleteImage: async (name) => {
      graph.delete(name);
      deleted.push(name);
    },
    createTombstone: async (name) => void graph.set(name, null),
    attached: async () => false,
    ceph: {
      parent: async (name) => graph.get(name) ?? null,
      children: async (name) => [...graph].filter(([, p]) => p === name).map(([c]) => c),
      flatten: async (name) => {
        if (o.failFlatten) throw new Error('rbd flatten failed: (28) No space left on device');
        graph.set(name, null);
        flattened.push(name);
      },
      hasRoom: async (bytes) => bytes <= (o.room ?? Infinity),
      size: async () => 32 * 1024 * 1024,
    },
  });
  const entry = async (name: string) => (await entries()).find((e) => e.name === name)!;
  return { graph, deleted, flattened, entries, chains, entry };
}

describe('rbd clone chains with a Ceph identity (FAKE Ceph graph)', () => {
  const a = vol('a');
  const s = snap('s', 'a');
  it('flattens the clones of an image that must go, and removes it: no tombstone', async () => {
    const p = fakeCeph({ [a]: null, [s]: a });
    assert.equal(await p.chains.remove(await p.entry(a), await p.entries()), 'deleted');
    assert.deepEqual(p.flattened, [s]);
    assert.deepEqual([...p.graph.keys()], [s]);
  });

  it('retires instead when a clone is not the driver\'s, when the pool has no room, or when a flatten fails; nothing is removed', async () => {
    for (const [how, p] of [
      ['a foreign clone', fakeCeph({ [a]: null, 'someones-clone': a })],
      ['no room', fakeCeph({ [a]: null, [s]: a }, { room: 1024 })],
      ['a failing flatten', fakeCeph({ [a]: null, [s]: a }, { failFlatten: true })],
    ] as const) {
      assert.equal(await p.chains.remove(await p.entry(a), await p.entries()), 'retired', how);
      assert.deepEqual(p.deleted, [], how);
      assert.ok(p.graph.has(retiredName(idFor('vol', 'a'))), `${how}: tombstone`);
      assert.ok(p.graph.has(a), `${how}: the parent stays for its clone`);
    }
  });

  it('reads depth from Ceph, not from the names, and flattens a copy past 8 instead of refusing past 16', async () => {
    // Names that say nothing of the chain (no source in them): Ceph's parents decide.
    const names = Array.from({ length: 10 }, (_, i) => vol(`c${i}`));
    const p = fakeCeph(Object.fromEntries(names.map((n, i) => [n, i ? names[i - 1]! : null])));
    const all = await p.entries();
    const at = (i: number) => all.find((e) => e.name === names[i])!;
    assert.equal(await p.chains.depth(at(9), all), 9);
    assert.deepEqual(await p.chains.copyHow(at(6), all), { flatten: false }, 'a copy of depth 7');
    assert.deepEqual(await p.chains.copyHow(at(7), all), { flatten: false }, 'a copy of depth 8');
    assert.deepEqual(await p.chains.copyHow(at(8), all), { flatten: true }, 'a copy of depth 9');
  });
});

describe('librados and librbd return codes', () => {
  it('a refused key or a missing keyring at connect is a refusal; a timeout is an unreachable cluster; else by errno', () => {
    assert.equal(rbdFailureOf(-2, true), 'denied', 'ENOENT at connect: no key for the user in the keyring');
    assert.equal(rbdFailureOf(-1, true), 'denied');
    assert.equal(rbdFailureOf(-13, true), 'denied');
    assert.equal(rbdFailureOf(-110, true), 'unreachable');
    assert.equal(rbdFailureOf(-110), 'unreachable');
    assert.equal(rbdFailureOf(-2), 'missing', 'ENOENT of an image');
    assert.equal(rbdFailureOf(-16), 'busy');
    assert.equal(rbdFailureOf(-39), 'busy', 'ENOTEMPTY: an image with snapshots');
    assert.equal(rbdFailureOf(-122), 'full', 'EDQUOT');
    assert.equal(rbdFailureOf(-22), 'other');
  });
});
