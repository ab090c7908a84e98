import { constants } from 'node:fs';
import { open } from 'node:fs/promises';
import { DriverError, errno, errorMessage, exhausted, internal } from '../errors.js';
import { syscalls } from '../host/syscalls.js';
import { AlignedBuffers } from '../host/aligned.js';
import { snapshotLock, volumeLock, type KeyedLocks } from '../locks.js';
import { progressReporter } from '../operations.js';
import { log } from '../log.js';
import type { PoolBackend, WritableData } from '../pool/backend.js';
import type { Claim, Peer, SourceFetcher } from '../transfer/client.js';
import type { TransferKind, TransferSource } from '../transfer/server.js';
import { WriteQueue } from '../transfer/write-queue.js';

const lockOf = (kind: TransferKind, id: string) => (kind === 'volume' ? volumeLock(id) : snapshotLock(id));

/** Holds locks until the returned release is called (a stream outlives any one call). */
function hold(locks: KeyedLocks, keys: string[]): Promise<() => void> {
  return new Promise((resolveHeld, rejectHeld) => {
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    locks
      .with(keys, async () => {
        resolveHeld(release);
        await released;
      })
      .catch(rejectHeld);
  });
}

/**
 * What peers may read of this node's pool: volumes and snapshots by ID. While one streams it holds
 * the same lock DeleteVolume and DeleteSnapshot take, so a delete waits for the end of the stream
 * (or answers ABORTED past its wait, and the CO retries).
 */
export function transferSource(backend: PoolBackend, locks: KeyedLocks): TransferSource {
  return {
    async size(kind, id) {
      return kind === 'volume' ? ((await backend.getVolume(id))?.capacityBytes ?? null) : ((await backend.getSnapshot(id))?.sizeBytes ?? null);
    },
    async open(kind, id) {
      if (!backend.openData) return null;
      const release = await hold(locks, [lockOf(kind, id)]);
      try {
        const data = await backend.openData(kind, id);
        if (!data) {
          release();
          return null;
        }
        return {
          ...data,
          release: async () => {
            try {
              await data.release();
            } finally {
              release();
            }
          },
        };
      } catch (err) {
        release();
        throw err;
      }
    },
  };
}

/**
 * A failure of this node's own disk while the new volume is written: the peer and the network are
 * fine, so it is not the retryable UNAVAILABLE a broken stream is. No room (ENOSPC, EDQUOT) is
 * RESOURCE_EXHAUSTED; anything else (EIO above all) is INTERNAL.
 */
export function localWriteError(err: unknown): DriverError {
  if (err instanceof DriverError) return err;
  const code = errno(err);
  if (code === 'ENOSPC' || code === 'EDQUOT') return exhausted(`no room on this node to write the new volume (${code}): ${errorMessage(err)}`);
  return internal(`writing the new volume failed on this node${code ? ` (${code})` : ''}: ${errorMessage(err)}`);
}

/** The fill of a new volume from a peer: each frame written where it belongs, the rest left as zeros. */
export function fillFromPeer(client: SourceFetcher, peer: Peer, kind: TransferKind, id: string, claim: Claim, size: number): (target: WritableData) => Promise<void> {
  return async (target) => {
    // Frames come in the order of their offsets: the end of the last one is how far the volume has come.
    const progress = progressReporter();
    const fh = await open(target.path, 'r+');
    const direct = await open(target.path, constants.O_RDWR | constants.O_DIRECT).catch(() => null);
    const buffers = new AlignedBuffers((await syscalls())?.address ?? null);
    const writes = new WriteQueue({ buffered: fh, direct }, buffers);
    const local = async (p: Promise<void>) => p.catch((err: unknown) => Promise.reject(localWriteError(err)));
    try {
      const started = performance.now();
      const { bytes } = await client.fetch(
        peer,
        kind,
        id,
        claim,
        size,
        (offset, data) => {
          progress?.bytes(offset + data.length, size);
          return local(writes.add(offset, data));
        },
        (n) => buffers.get(n),
      );
      progress?.bytes(size, size);
      progress?.syncing();
      await local(writes.drain());
      // Synced here, where a failure is known to be this disk's (EIO, or ENOSPC where the filesystem allocates late); the pool's sync after it finds nothing left to write.
      await local(fh.datasync());
      const seconds = (performance.now() - started) / 1000;
      log.info('received a volume from a peer', { kind, id, peer: peer.node, claim: `${claim.namespace}/${claim.name}`, bytes, seconds: Number(seconds.toFixed(3)), mibPerSecond: Number((bytes / 1048576 / Math.max(seconds, 1e-6)).toFixed(1)) });
    } finally {
      await writes.drain().catch(() => undefined);
      await direct?.close();
      await fh.close();
    }
  };
}
