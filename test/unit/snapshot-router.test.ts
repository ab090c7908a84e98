import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DriverError } from '../../src/errors.js';
import { idFor } from '../../src/ids.js';
import { SnapshotRouter, type Nodes } from '../../src/driver/snapshot-router.js';
import type { CommandName, CommandPeer, HoldsQuery, Placement } from '../../src/transfer/commands.js';

const peer = (node: string): CommandPeer => ({ host: '127.0.0.1', port: 1, node, pod: { uid: `${node}-uid`, name: `plugin-${node}` } });
const A = peer('node-a');
const B = peer('node-b');
const VA = 'vol-a-0123456789abcdef';
const VB = 'vol-b-0123456789abcdef';
const signal = new AbortController().signal;
const kind = (p: Promise<unknown>) => p.then(() => 'ok', (e: unknown) => (e instanceof DriverError ? `${e.kind}: ${e.message}` : `other: ${String(e)}`));

/**
 * A FAKE set of nodes (the real ones, over the real channel, are in test/e2e/snapshot-router.test.ts):
 * `claims` is what each node says it holds, `short` why not every node answered; every call handed to
 * a node is recorded.
 */
function fakeNodes(claims: Record<string, CommandPeer | CommandPeer[]>, short?: string) {
  const calls: Array<[string, CommandName]> = [];
  const nodes: Nodes = {
    async holders(q: HoldsQuery): Promise<Placement> {
      const found = new Map<string, CommandPeer>();
      const contested = new Map<string, CommandPeer[]>();
      for (const id of [...q.volumes, ...q.snapshots, ...q.groups]) {
        const c = claims[id];
        if (Array.isArray(c)) contested.set(id, c);
        else if (c) found.set(id, c);
      }
      return { found, missing: short, ...(contested.size ? { contested } : {}) };
    },
    async run(p: CommandPeer, method: CommandName) {
      calls.push([p.node, method]);
      return { from: p.node };
    },
    async everywhere(method: CommandName) {
      if (short) throw new DriverError('unavailable', `${method}: ${short}`);
      for (const p of [A, B]) calls.push([p.node, method]);
    },
    async all() {
      return { peers: [A, B], short };
    },
  };
  return { nodes, calls };
}

describe('the snapshot router\'s decisions (FAKE nodes)', () => {
  const pins: Record<string, string> = { [VA]: 'node-a', [VB]: 'node-b' };
  const pinned = async (v: string) => pins[v] ?? null;

  it('hands a create to the node its volume\'s PV is on; a node claiming another node\'s volume is not believed', async () => {
    const honest = fakeNodes({ [VA]: A });
    assert.deepEqual(await new SnapshotRouter(honest.nodes, pinned, { deadlineMs: 1000 }).createSnapshot({ name: 's1', source_volume_id: VA }, signal), { from: 'node-a' });
    // node-b claims VA, which its PV pins to node-a: nothing is handed to node-b, and the answer is "not now", not a snapshot.
    const liar = fakeNodes({ [VA]: B });
    assert.match(await kind(new SnapshotRouter(liar.nodes, pinned, { deadlineMs: 1000 }).createSnapshot({ name: 's1', source_volume_id: VA }, signal)), /^unavailable: .*node node-b claims volume vol-a-.*whose PersistentVolume is on node node-a/);
    assert.match(await kind(new SnapshotRouter(liar.nodes, pinned, { deadlineMs: 1000 }).createGroup({ name: 'g', source_volume_ids: [VA] }, signal)), /^unavailable: .*node node-b claims volume/);
    assert.deepEqual(liar.calls, []);
  });

  it('a name taken on another node is ALREADY_EXISTS, without asking that node to make anything', async () => {
    const f = fakeNodes({ [VB]: B, [idFor('snap', 'taken')]: A, [idFor('group', 'gtaken')]: A });
    const r = new SnapshotRouter(f.nodes, pinned, { deadlineMs: 1000 });
    assert.match(await kind(r.createSnapshot({ name: 'taken', source_volume_id: VB }, signal)), /^conflict: snapshot taken exists on node node-a/);
    assert.match(await kind(r.createGroup({ name: 'gtaken', source_volume_ids: [VB] }, signal)), /^conflict: group snapshot gtaken exists on node node-a/);
    assert.deepEqual(f.calls, []);
    // The same name on the volume's own node is the holder's to answer (the same snapshot, or its ALREADY_EXISTS).
    const same = fakeNodes({ [VB]: B, [idFor('snap', 'taken')]: B });
    assert.deepEqual(await new SnapshotRouter(same.nodes, pinned, { deadlineMs: 1000 }).createSnapshot({ name: 'taken', source_volume_id: VB }, signal), { from: 'node-b' });
  });

  it('an absence is final only once every node said so: NOT_FOUND, empty or OK then; UNAVAILABLE while a node plugin is missing', async () => {
    const all = new SnapshotRouter(fakeNodes({}).nodes, pinned, { deadlineMs: 1000 });
    const some = new SnapshotRouter(fakeNodes({}, '1 of the 2 node plugins are running').nodes, pinned, { deadlineMs: 1000 });
    const snap = 'snap-x-0123456789abcdef';
    const group = 'group-x-0123456789abcdef';
    assert.deepEqual(
      {
        create: await kind(all.createSnapshot({ name: 's', source_volume_id: VA }, signal)),
        list: await all.listSnapshots({ snapshot_id: snap, source_volume_id: '', max_entries: 0, starting_token: '' }, signal),
        get: await kind(all.getGroup({ group_snapshot_id: group }, signal)),
        del: await kind(all.deleteSnapshot({ snapshot_id: snap }, signal)),
        delGroup: await kind(all.deleteGroup({ group_snapshot_id: group }, signal)),
      },
      { create: `not-found: source volume ${VA} is not on any node of this driver`, list: { entries: [], next_token: '' }, get: `not-found: group snapshot ${group} is not on any node of this driver`, del: 'ok', delGroup: 'ok' },
    );
    for (const [what, p] of Object.entries({
      create: some.createSnapshot({ name: 's', source_volume_id: VA }, signal),
      list: some.listSnapshots({ snapshot_id: snap, source_volume_id: '', max_entries: 0, starting_token: '' }, signal),
      listAll: some.listSnapshots({ snapshot_id: '', source_volume_id: '', max_entries: 0, starting_token: '' }, signal),
      get: some.getGroup({ group_snapshot_id: group }, signal),
      del: some.deleteSnapshot({ snapshot_id: snap }, signal),
      delGroup: some.deleteGroup({ group_snapshot_id: group }, signal),
    })) {
      assert.match(await kind(p), /^unavailable: .*1 of the 2 node plugins are running/, what);
    }
  });

  it('deletes on every node (the holder deletes, the rest have nothing to), never on a claim', async () => {
    const f = fakeNodes({ 'group-x-0123456789abcdef': A });
    const r = new SnapshotRouter(f.nodes, pinned, { deadlineMs: 1000 });
    await r.deleteGroup({ group_snapshot_id: 'group-x-0123456789abcdef' }, signal);
    assert.deepEqual(f.calls, [['node-a', 'DeleteVolumeGroupSnapshot'], ['node-b', 'DeleteVolumeGroupSnapshot']]);
    // An ID no node could have made: done, nobody asked.
    await r.deleteSnapshot({ snapshot_id: 'snap-Not_Ours' }, signal);
    assert.equal(f.calls.length, 2);
  });

  it('two nodes claiming one volume: the one its PV names is the holder; claiming a snapshot or group, UNAVAILABLE', async () => {
    const f = fakeNodes({ [VA]: [A, B], 'snap-x-0123456789abcdef': [A, B], 'group-x-0123456789abcdef': [A, B] });
    const r = new SnapshotRouter(f.nodes, pinned, { deadlineMs: 1000 });
    assert.deepEqual(await r.createSnapshot({ name: 's2', source_volume_id: VA }, signal), { from: 'node-a' });
    assert.deepEqual(f.calls, [['node-a', 'CreateSnapshot']], 'handed to the PV\'s node only');
    assert.match(await kind(r.listSnapshots({ snapshot_id: 'snap-x-0123456789abcdef', source_volume_id: '', max_entries: 0, starting_token: '' }, signal)), /^unavailable: nodes node-a, node-b each claim snap-x/);
    assert.match(await kind(r.getGroup({ group_snapshot_id: 'group-x-0123456789abcdef' }, signal)), /^unavailable: nodes node-a, node-b each claim group-x/);
    // No PV to settle it: refused.
    assert.match(await kind(new SnapshotRouter(f.nodes, async () => null, { deadlineMs: 1000 }).createSnapshot({ name: 's3', source_volume_id: VA }, signal)), /^unavailable: nodes node-a, node-b each claim vol-a/);
    // The PVs cannot be read: not now.
    assert.match(await kind(new SnapshotRouter(fakeNodes({ [VA]: A }).nodes, () => Promise.reject(new Error('API away')), { deadlineMs: 1000 }).createSnapshot({ name: 's', source_volume_id: VA }, signal)), /^unavailable: the PersistentVolumes cannot be read now .*API away/);
  });

  it('a group over two nodes is FAILED_PRECONDITION naming both; its volumes\' holders are checked against their PVs first', async () => {
    const f = fakeNodes({ [VA]: A, [VB]: B });
    assert.match(await kind(new SnapshotRouter(f.nodes, pinned, { deadlineMs: 1000 }).createGroup({ name: 'g', source_volume_ids: [VA, VB] }, signal)), /^precondition: the volumes are on 2 nodes \(node-a: vol-a-.*; node-b: vol-b-/);
    assert.deepEqual(f.calls, []);
  });
});
