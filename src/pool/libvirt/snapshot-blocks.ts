import { precondition } from '../../errors.js';
import type { SnapshotBlocks, SnapshotRecord } from '../backend.js';
import type { ByteRange } from '../block-ranges.js';

/**
 * The libvirt pool's snapshot metadata: what libvirt's storage API can tell without reading data.
 * A snapshot is a whole copy of its volume made by libvirt (vol-create-from, or a backup job of a
 * running disk), and libvirt reports a volume's capacity and allocation but no map of either, nor
 * which blocks two copies share. So every byte counts as allocated (a full backup reads it all), and
 * a delta is the spec's FAILED_PRECONDITION ("changed block tracking is not enabled": take a full
 * backup). Both are answers, never guesses: a delta made up from sizes could miss a change.
 */
export class LibvirtSnapshotBlocks implements SnapshotBlocks {
  async *allocated(snap: SnapshotRecord, from: number, _signal: AbortSignal): AsyncIterable<ByteRange> {
    if (from < snap.sizeBytes) yield [from, snap.sizeBytes];
  }

  // An async generator, so the refusal comes as the stream's error like any other.
  // eslint-disable-next-line require-yield
  async *delta(base: SnapshotRecord, target: SnapshotRecord, _from: number, _signal: AbortSignal): AsyncIterable<ByteRange> {
    throw precondition(`changed block tracking is not enabled on the libvirt pool: its snapshots (${base.id}, ${target.id}) are whole copies libvirt keeps no map of; take a full backup from GetMetadataAllocated`);
  }
}
