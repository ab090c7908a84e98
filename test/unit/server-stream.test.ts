import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import { rm } from 'node:fs/promises';
import path from 'node:path';
import { describe, it } from 'node:test';
import type { GetMetadataAllocatedResponse } from '../../gen/csi/v1/GetMetadataAllocatedResponse.js';
import { StreamSlots } from '../../src/driver/controller/snapshot-metadata.js';
import { internal } from '../../src/errors.js';
import { loadCsi } from '../../src/csi/proto.js';
import { serverStream } from '../../src/csi/rpc.js';
import { tempDir } from '../helpers/driver.js';

const message = (n: number): GetMetadataAllocatedResponse => ({
  block_metadata_type: 'VARIABLE_LENGTH',
  volume_capacity_bytes: '1099511627776',
  // About 20 KiB a message: a client that stops reading fills the socket's buffers within a few hundred.
  block_metadata: Array.from({ length: 1000 }, (_, i) => ({ byte_offset: String((n * 1000 + i) * 8192), size_bytes: '4096' })),
});

/**
 * A real gRPC server on a unix socket serving GetMetadataAllocated from `source`, and a client:
 * the stream adapter as the CSI sidecar meets it.
 */
async function withServer(source: (signal: AbortSignal) => AsyncIterable<GetMetadataAllocatedResponse>, stallMs: number, fn: (client: InstanceType<ReturnType<typeof loadCsi>['csi']['v1']['SnapshotMetadata']>, ended: Promise<void>) => Promise<void>): Promise<void> {
  const dir = await tempDir('vpool-stream-');
  const socket = path.join(dir, 's.sock');
  const csi = loadCsi().csi.v1;
  const server = new grpc.Server();
  let markEnded!: () => void;
  const ended = new Promise<void>((r) => (markEnded = r));
  server.addService(csi.SnapshotMetadata.service, {
    GetMetadataAllocated: serverStream('GetMetadataAllocated', async (_req, signal) =>
      (async function* () {
        try {
          yield* source(signal);
        } finally {
          markEnded();
        }
      })(), stallMs),
    GetMetadataDelta: serverStream('GetMetadataDelta', async () => (async function* () {})()),
  });
  await new Promise<number>((resolve, reject) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (e, p) => (e ? reject(e) : resolve(p))));
  const client = new csi.SnapshotMetadata(`unix://${socket}`, grpc.credentials.createInsecure());
  try {
    await fn(client, ended);
  } finally {
    client.close();
    server.forceShutdown();
    await rm(dir, { recursive: true, force: true });
  }
}

const request = { snapshot_id: 'snap-x-0000000000000000', starting_offset: '0', max_results: 0 };

describe('server streams (a real gRPC server and client on a unix socket)', () => {
  it('every message, then OK; a failure half-way ends the stream with its status after what was sent, never as an end', async () => {
    await withServer(async function* () {
      yield message(0);
      yield message(1);
      throw internal('the disk went away');
    }, 60_000, async (client) => {
      const got: unknown[] = [];
      const status = await new Promise<grpc.StatusObject>((resolve) => {
        const call = client.GetMetadataAllocated(request);
        call.on('data', (m) => got.push(m));
        call.on('error', () => undefined);
        call.on('status', resolve);
      });
      assert.equal(got.length, 2);
      assert.equal(status.code, grpc.status.INTERNAL);
      assert.match(status.details, /the disk went away/);
    });
  });

  it('a client that stops reading holds the source (it is not run ahead into memory), and is given up after the stall limit: reading again, it gets what was buffered and UNAVAILABLE', async () => {
    let produced = 0;
    await withServer(async function* () {
      for (let n = 0; n < 100_000; n++) {
        produced++;
        yield message(n);
      }
    }, 1_500, async (client, ended) => {
      const call = client.GetMetadataAllocated(request);
      const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
      call.on('error', () => undefined);
      // One message taken, then nothing: the stream pauses at the first full buffer.
      await new Promise<void>((resolve) => call.once('data', () => {
        call.pause();
        resolve();
      }));
      await ended;
      assert.ok(produced < 2_000, `the source was held while the client did not read: ${produced} messages made`);
      // Read again: what was buffered, then the status that says the stream was given up (not an end).
      let after = 0;
      call.on('data', () => after++);
      call.resume();
      const st = await status;
      assert.ok(after < produced, 'no more than was made');
      assert.equal(st.code, grpc.status.UNAVAILABLE);
      assert.match(st.details, /took nothing for 1500 ms/);
    });
  });

  it('a cancelled call stops the source', async () => {
    await withServer(async function* (signal) {
      for (let n = 0; !signal.aborted; n++) {
        yield message(n);
        await new Promise((r) => setImmediate(r));
      }
    }, 60_000, async (client, ended) => {
      const call = client.GetMetadataAllocated(request);
      call.on('error', () => undefined);
      await new Promise<void>((resolve) => call.once('data', () => resolve()));
      call.cancel();
      await Promise.race([ended, new Promise((_, reject) => setTimeout(() => reject(new Error('the source did not stop within 10 s of the cancel')), 10_000).unref())]);
    });
  });
});

describe('stream slots', () => {
  const never = new AbortController().signal;
  it('at most `max` at once; the rest wait in turn; past the queue RESOURCE_EXHAUSTED; a waiter whose call ends leaves the queue', async () => {
    const slots = new StreamSlots(2, 2);
    const a = await slots.take(never);
    const b = await slots.take(never);
    const order: string[] = [];
    const gone = new AbortController();
    const c = slots.take(never).then((r) => (order.push('c'), r));
    const leaving = slots.take(gone.signal).catch((e: Error & { kind?: string }) => e.kind);
    await assert.rejects(slots.take(never), (e: Error & { kind?: string }) => e.kind === 'exhausted' && /2 snapshot metadata streams run and 2 wait/.test(e.message));
    gone.abort();
    assert.equal(await leaving, 'cancelled');
    const d = slots.take(never).then((r) => (order.push('d'), r));
    a();
    a(); // a second release of one slot changes nothing
    const releaseC = await c;
    assert.deepEqual(order, ['c']);
    b();
    const releaseD = await d;
    assert.deepEqual(order, ['c', 'd']);
    releaseC();
    releaseD();
    // All free again: two at once without waiting.
    (await slots.take(never))();
  });
});
