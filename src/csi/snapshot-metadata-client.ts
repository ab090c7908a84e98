import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { loadCsi } from './proto.js';
import { socketPath } from './socket-path.js';
import { PROJECT_ROOT } from '../project.js';

/**
 * The client side of SnapshotMetadata, for `vpool-csi backup` (src/backup/): the CSI service on a
 * driver's socket, or the Kubernetes-facing API of the external-snapshot-metadata sidecar. Here
 * because gRPC is spoken in src/csi/ alone.
 */

/** One message of a SnapshotMetadata stream, in numbers. */
export interface RangesMessage {
  capacity: number;
  ranges: Array<[number, number]>;
}

/** Where a backup learns which blocks to read: a snapshot's allocated blocks, or those changed since a base. */
export interface RangeSource {
  /** A stream from `from` on; it ends only after the server's OK status (a cut stream throws). */
  open(from: number, signal: AbortSignal): AsyncIterable<RangesMessage>;
  describe: string;
}

interface WireMessage {
  volume_capacity_bytes: string;
  block_metadata: Array<{ byte_offset: string; size_bytes: string }>;
}

const LOADER = { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true };

/**
 * A server stream's messages. grpc-js may end the stream before it reports an error status, so the
 * end counts only once the status is OK: a stream cut short is never taken for the whole answer.
 */
async function* messages(call: grpc.ClientReadableStream<WireMessage>, signal: AbortSignal, idleMs = IDLE_MS): AsyncGenerator<RangesMessage> {
  const status = new Promise<grpc.StatusObject>((resolve) => call.on('status', resolve));
  const onAbort = () => call.cancel();
  signal.addEventListener('abort', onAbort, { once: true });
  // A server that goes silent (a hung sidecar or driver) is given up, and the stream asked again from where it stopped.
  let idle = false;
  let timer: NodeJS.Timeout | undefined;
  const watch = () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      idle = true;
      call.cancel();
    }, idleMs);
  };
  watch();
  try {
    for await (const m of call as AsyncIterable<WireMessage>) {
      watch();
      yield {
        capacity: Number(m.volume_capacity_bytes),
        ranges: m.block_metadata.map((b) => [Number(b.byte_offset), Number(b.byte_offset) + Number(b.size_bytes)] as [number, number]),
      };
    }
    const st = await status;
    if (st.code !== grpc.status.OK) throw Object.assign(new Error(`${grpc.status[st.code]}: ${st.details}`), { code: st.code });
  } catch (err) {
    if (idle) throw Object.assign(new Error(`UNAVAILABLE: nothing came for ${idleMs / 1000} s`), { code: grpc.status.UNAVAILABLE });
    throw err;
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
  }
}

/** How long a stream may bring nothing before it is given up (the driver's own stall bound is the same). */
const IDLE_MS = 300_000;

/** Straight from a driver's CSI socket (on the node, or where the socket is reachable): by snapshot ID. */
export function csiRanges(endpoint: string, o: { snapshotId: string; baseId?: string; maxResults?: number }): RangeSource {
  const csi = loadCsi().csi.v1;
  const client = new csi.SnapshotMetadata(`unix://${socketPath(endpoint)}`, grpc.credentials.createInsecure());
  return {
    describe: `${endpoint} (CSI)`,
    open: (from, signal) =>
      messages(
        (o.baseId
          ? client.GetMetadataDelta({ base_snapshot_id: o.baseId, target_snapshot_id: o.snapshotId, starting_offset: String(from), max_results: o.maxResults ?? 0 })
          : client.GetMetadataAllocated({ snapshot_id: o.snapshotId, starting_offset: String(from), max_results: o.maxResults ?? 0 })) as unknown as grpc.ClientReadableStream<WireMessage>,
        signal,
      ),
  };
}

type K8sClient = grpc.Client & {
  GetMetadataAllocated(req: unknown, metadata?: grpc.Metadata): grpc.ClientReadableStream<WireMessage>;
  GetMetadataDelta(req: unknown, metadata?: grpc.Metadata): grpc.ClientReadableStream<WireMessage>;
};

/**
 * Through the Kubernetes-facing API a backup application uses: the external-snapshot-metadata sidecar
 * at the address its SnapshotMetadataService object gives, over TLS checked against that object's CA,
 * with an audience-scoped ServiceAccount token; the snapshot by VolumeSnapshot name, the base of a
 * delta by its CSI handle.
 */
export function kubernetesRanges(o: { address: string; caFile: string; tokenFile: string; namespace: string; snapshotName: string; baseId?: string; maxResults?: number }): RangeSource {
  const def = protoLoader.loadSync(path.join(PROJECT_ROOT, 'proto', 'snapshot-metadata-api.proto'), LOADER);
  const pkg = grpc.loadPackageDefinition(def) as unknown as { snapshotmetadata: { SnapshotMetadata: new (address: string, creds: grpc.ChannelCredentials) => K8sClient } };
  const client = new pkg.snapshotmetadata.SnapshotMetadata(o.address, grpc.credentials.createSsl(readFileSync(o.caFile)));
  return {
    describe: `${o.address} (Kubernetes SnapshotMetadata API)`,
    open: (from, signal) => {
      // Read for each call: a projected token is renewed while a long backup runs.
      const token = readFileSync(o.tokenFile, 'utf8').trim();
      const call = o.baseId
        ? client.GetMetadataDelta({ security_token: token, namespace: o.namespace, base_snapshot_id: o.baseId, target_snapshot_name: o.snapshotName, starting_offset: String(from), max_results: o.maxResults ?? 0 })
        : client.GetMetadataAllocated({ security_token: token, namespace: o.namespace, snapshot_name: o.snapshotName, starting_offset: String(from), max_results: o.maxResults ?? 0 });
      return messages(call, signal);
    },
  };
}

/** gRPC codes after which asking again from the last offset can help (the spec's resumption). */
const RETRYABLE = new Set([grpc.status.UNAVAILABLE, grpc.status.DEADLINE_EXCEEDED, grpc.status.RESOURCE_EXHAUSTED, grpc.status.ABORTED, grpc.status.INTERNAL]);

/**
 * The whole answer, resumed where a stream broke off: asked again from the end of the last range
 * received (the spec's starting_offset), at most `attempts` times in a row without progress. Checks
 * what the spec promises: one capacity throughout, ranges ascending and apart, within it.
 */
export async function* allRanges(src: RangeSource, signal: AbortSignal, o: { attempts?: number; onRetry?: (from: number, err: Error) => void; onCapacity?: (capacity: number) => void } = {}): AsyncGenerator<{ capacity: number; range: [number, number] }> {
  let from = 0;
  let capacity: number | undefined;
  let failures = 0;
  for (;;) {
    try {
      for await (const m of src.open(from, signal)) {
        if (capacity === undefined) {
          if (!Number.isSafeInteger(m.capacity) || m.capacity <= 0) throw new Error(`the answer gives no volume capacity (${m.capacity})`);
          capacity = m.capacity;
          o.onCapacity?.(capacity);
        } else if (m.capacity !== capacity) throw Object.assign(new Error(`the volume's capacity changed within the answer (${capacity} then ${m.capacity})`), { code: grpc.status.FAILED_PRECONDITION });
        for (const [s, e] of m.ranges) {
          if (!(Number.isSafeInteger(s) && Number.isSafeInteger(e) && s >= 0 && e > s && e <= capacity)) throw new Error(`a range [${s}, ${e}) outside the ${capacity}-byte volume`);
          if (s < from) {
            // A resumed stream's first range may start before the offset asked (the spec allows it): only what is new.
            if (e <= from) continue;
            yield { capacity, range: [from, e] };
          } else yield { capacity, range: [s, e] };
          from = e;
          failures = 0;
        }
      }
      // An answer with no ranges still says the capacity; a fresh start that says nothing is an error.
      if (capacity === undefined) throw new Error('the answer carried no message (no capacity)');
      return;
    } catch (err) {
      const code = (err as { code?: number }).code;
      if (signal.aborted || code === undefined || !RETRYABLE.has(code) || ++failures >= (o.attempts ?? 5)) throw err;
      o.onRetry?.(from, err as Error);
      await new Promise((r) => setTimeout(r, 500 * failures));
    }
  }
}
