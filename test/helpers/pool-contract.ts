import assert from 'node:assert/strict';
import { after, before, it } from 'node:test';
import { DriverError } from '../../src/errors.js';
import { idFor } from '../../src/ids.js';
import type { PoolBackend } from '../../src/pool/backend.js';
import { readAt, writeAt } from './data.js';

export interface ContractPool {
  backend: PoolBackend;
  /** Parameters of a volume the suite makes (type=thin, type=thick). */
  parameters: Record<string, string>;
  /**
   * False where this pool cannot snapshot or copy here (lvm without device-mapper): snapshot, restore
   * and clone must then refuse as a precondition, and leave nothing.
   */
  copies: boolean;
  /**
   * True where a volume written since it was last copied cannot be copied again (an rbd pool through
   * libvirt: clone-chains.ts, rbdRecopyRefusal): the clone after the snapshot must then be refused
   * as a precondition and leave nothing.
   */
  copiesOnce?: boolean;
  /**
   * Whether a new volume's full size leaves the available capacity at once. libvirt's sparse volumes
   * do not (its dir pools report the host filesystem's free space); the file pool counts them as if written.
   */
  countsPromisedSpace: boolean;
  /** Removes what the pool was made from. */
  close(): Promise<void>;
  /**
   * Lets go of what dataPath opened, before the deletes (rbd-fuse keeps every image it served open,
   * and Ceph refuses to remove an image a client has open).
   */
  release?(): Promise<void>;
  /** Where a volume's bytes can be read and written (its image file, its LV's device); the contract checks restores and clones byte for byte through it. */
  dataPath(volumeId: string): Promise<string>;
}

const MiB = 1024 * 1024;
/** 256 KiB no other call makes: a volume holding them holds what was written, not some other data. */
const stamp = (seed: string) => {
  const b = Buffer.alloc(256 * 1024);
  for (let i = 0; i < b.length; i += 32) b.write(`${seed}:${i}`.padEnd(32, '.'), i, 32, 'latin1');
  return b;
};
const kindOf = async (p: Promise<unknown>): Promise<string> => p.then(() => 'ok', (e: unknown) => (e instanceof DriverError ? e.kind : `not a DriverError: ${String(e)}`));

/**
 * What every PoolBackend must do, written once against the interface (src/pool/backend.ts) and run
 * against each real backend. The CSI layer above validates, locks and decides idempotency; this is
 * what it relies on below: records round-trip, space is accounted, absent things are absent (not
 * errors), and failures are DriverError kinds the edge can map.
 */
export function poolContract(open: () => Promise<ContractPool>): void {
  let pool: ContractPool;
  const vol = (name: string) => idFor('vol', `contract-${name}`);
  const snap = (name: string) => idFor('snap', `contract-${name}`);

  // Opened and closed by hooks, so a test run alone (--test-name-pattern) still has its pool.
  before(async () => {
    pool = await open();
  });
  after(async () => {
    await pool?.close();
  });

  it('contract: the pool answers and has a block size', async () => {
    await pool.backend.probe();
    assert.ok(pool.backend.granularity >= 512);
  });

  it('contract: a created volume is found, listed and counted; created again under its ID it is still one', async () => {
    const b = pool.backend;
    const before = await b.capacity(pool.parameters);
    const id = vol('a');
    const rec = await b.createVolume({ id, name: 'contract-a', capacityBytes: 8 * MiB, parameters: pool.parameters });
    assert.equal(rec.id, id);
    assert.ok(rec.capacityBytes >= 8 * MiB && rec.capacityBytes % b.granularity === 0);
    const got = await b.getVolume(id);
    assert.deepEqual({ id: got?.id, capacityBytes: got?.capacityBytes }, { id, capacityBytes: rec.capacityBytes });
    // The name is for people (orphan reports); libvirt has no place to keep it and reports the ID, which is derived from it.
    assert.ok(got?.name === 'contract-a' || got?.name === id, `name ${got?.name}`);
    assert.ok((await b.listVolumes()).some((v) => v.id === id));
    const after = await b.capacity(pool.parameters);
    if (pool.countsPromisedSpace) assert.ok(after.availableBytes <= before.availableBytes - rec.capacityBytes + b.granularity, `available ${before.availableBytes} -> ${after.availableBytes}`);
    else assert.ok(after.availableBytes <= before.availableBytes, 'a new volume never adds space');
    assert.equal(await b.volumeBusy(id), null, 'created, not attached: not busy');
    assert.deepEqual((await b.volumeConditions([rec])).map((c) => c.abnormal), [false]);
  });

  it('contract: more than the pool holds is exhausted, and leaves nothing', async () => {
    const b = pool.backend;
    const { availableBytes } = await b.capacity(pool.parameters);
    const id = vol('huge');
    const tooBig = Math.ceil((availableBytes + 64 * 1024 * MiB) / b.granularity) * b.granularity;
    assert.equal(await kindOf(b.createVolume({ id, name: 'contract-huge', capacityBytes: tooBig, parameters: pool.parameters })), 'exhausted');
    assert.equal(await b.getVolume(id), null);
  });

  it('contract: expand grows (never shrinks) and the record says so', async () => {
    const b = pool.backend;
    const id = vol('a');
    const grown = await b.expandVolume(id, 16 * MiB);
    assert.ok(grown.capacityBytes >= 16 * MiB);
    assert.equal((await b.getVolume(id))?.capacityBytes, grown.capacityBytes);
    assert.equal((await b.expandVolume(id, 4 * MiB)).capacityBytes, grown.capacityBytes, 'a smaller size is a no-op');
    assert.equal(await kindOf(b.expandVolume(vol('nope'), 16 * MiB)), 'not-found');
  });

  it('contract: snapshot, restore and clone carry their source; absent sources are not-found', async () => {
    const b = pool.backend;
    if (!pool.copies) {
      assert.equal(await kindOf(b.createSnapshot({ id: snap('s'), name: 'contract-s', sourceVolumeId: vol('a'), parameters: {} })), 'precondition');
      assert.equal(await b.getSnapshot(snap('s')), null, 'a refused snapshot leaves nothing');
      assert.equal(await kindOf(b.createVolume({ id: vol('c'), name: 'contract-c', capacityBytes: 16 * MiB, source: { kind: 'volume', id: vol('a') }, parameters: pool.parameters })), 'precondition');
      assert.equal(await b.getVolume(vol('c')), null, 'a refused clone leaves no volume');
      return;
    }
    // Bytes in the source at the snapshot, and other bytes written after it at the same place: the restore
    // must hold the first, the clone the second, each exactly (and where the source was never written, what it holds there).
    const atSnapshot = stamp('at the snapshot');
    const afterwards = stamp('written after the snapshot');
    await writeAt(await pool.dataPath(vol('a')), 3 * MiB, atSnapshot);
    const s = await b.createSnapshot({ id: snap('s'), name: 'contract-s', sourceVolumeId: vol('a'), parameters: {} });
    await writeAt(await pool.dataPath(vol('a')), 3 * MiB, afterwards);
    assert.equal(s.sourceVolumeId, vol('a'));
    assert.equal(s.readyToUse, true);
    assert.equal((await b.getSnapshot(s.id))?.id, s.id);
    assert.ok((await b.listSnapshots()).some((x) => x.id === s.id));
    const restored = await b.createVolume({ id: vol('r'), name: 'contract-r', capacityBytes: 16 * MiB, source: { kind: 'snapshot', id: s.id }, parameters: pool.parameters });
    assert.deepEqual((await b.getVolume(restored.id))?.source, { kind: 'snapshot', id: s.id });
    assert.ok((await readAt(await pool.dataPath(restored.id), 3 * MiB, atSnapshot.length)).equals(atSnapshot), 'the restore holds the bytes of the snapshot');
    const copies = [restored.id];
    if (pool.copiesOnce) {
      const refused = await b.createVolume({ id: vol('c'), name: 'contract-c', capacityBytes: 16 * MiB, source: { kind: 'volume', id: vol('a') }, parameters: pool.parameters }).then(() => null, (e: unknown) => e);
      assert.ok(refused instanceof DriverError && refused.kind === 'precondition', `a clone of a volume written since its snapshot: ${String(refused)}`);
      assert.match(refused.message, /copied before .* and written since/);
      assert.equal(await b.getVolume(vol('c')), null, 'a refused clone leaves no volume');
    } else {
      const clone = await b.createVolume({ id: vol('c'), name: 'contract-c', capacityBytes: 16 * MiB, source: { kind: 'volume', id: vol('a') }, parameters: pool.parameters });
      assert.deepEqual((await b.getVolume(clone.id))?.source, { kind: 'volume', id: vol('a') });
      assert.ok((await readAt(await pool.dataPath(clone.id), 3 * MiB, afterwards.length)).equals(afterwards), "the clone holds the source's bytes now");
      copies.push(clone.id);
    }
    // Where the source was never written it holds zeros on a pool that zeroes new volumes, and whatever the
    // disk held on a thick LV (lvm does not zero those): either way the copies hold exactly that.
    const unwritten = await readAt(await pool.dataPath(vol('a')), 0, MiB);
    for (const id of copies) assert.ok((await readAt(await pool.dataPath(id), 0, MiB)).equals(unwritten), `${id}: where the source was never written, the source's bytes`);
    assert.equal(await kindOf(b.createVolume({ id: vol('x'), name: 'contract-x', capacityBytes: 16 * MiB, source: { kind: 'snapshot', id: snap('nope') }, parameters: pool.parameters })), 'not-found');
    assert.equal(await b.getVolume(vol('x')), null, 'a failed create leaves no volume');
    assert.equal(await kindOf(b.createSnapshot({ id: snap('x'), name: 'contract-x', sourceVolumeId: vol('nope'), parameters: {} })), 'not-found');
  });

  it('contract: delete removes, and deleting or asking for what is absent is no error', async () => {
    const b = pool.backend;
    await pool.release?.();
    await b.deleteSnapshot(snap('s'));
    for (const name of ['r', 'c', 'a']) await b.deleteVolume(vol(name));
    assert.equal(await b.getVolume(vol('a')), null);
    assert.equal(await b.getSnapshot(snap('s')), null);
    assert.ok(!(await b.listVolumes()).some((v) => v.id.startsWith('vol-contract-')));
    await b.deleteVolume(vol('a'));
    await b.deleteSnapshot(snap('s'));
    assert.equal(await b.volumeBusy(vol('a')), null);
  });

}
