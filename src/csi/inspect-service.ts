/**
 * `vpool.v1.Inspect`, served beside the CSI services on the same socket: what `vpool-csi status` and the
 * client's volume tables show and CSI has no message for (a volume's age, allocation and mounts; the
 * pool's disks; the last problems). Read-only; JSON messages (no .proto to keep in step: the types of
 * src/driver/status/types.ts are the contract), at most MAX_BYTES each way.
 * Threat model: the socket is the CSI socket (0660, root and --socket-group): whoever reaches it may
 * already delete every volume, so nothing here widens what a caller can learn or do; it holds no secret.
 * Failure model: each part of a status is bounded (collect.ts), so a hung disk makes the call say which
 * part did not answer instead of hanging; a volume page is bounded by its limit (≤ 1,000).
 */
import type * as grpc from '@grpc/grpc-js';
import type { DriverStatus, VolumeDetail, VolumePage } from '../driver/status/types.js';
import type { OperationView } from '../operations.js';

export const MAX_BYTES = 16 * 1024 * 1024;
export const MAX_PAGE = 1000;

export interface VolumesRequest {
  /** The last ID of the page before; empty for the first page. */
  after?: string;
  limit?: number;
}

const encode = (v: unknown) => Buffer.from(JSON.stringify(v));
function decode<T>(b: Buffer): T {
  if (b.length > MAX_BYTES) throw new Error(`a message of ${b.length} bytes (at most ${MAX_BYTES})`);
  return (b.length ? JSON.parse(b.toString('utf8')) : {}) as T;
}

function method<Req, Res>(name: string): grpc.MethodDefinition<Req, Res> {
  return {
    path: `/vpool.v1.Inspect/${name}`,
    requestStream: false,
    responseStream: false,
    requestSerialize: encode,
    requestDeserialize: decode<Req>,
    responseSerialize: encode,
    responseDeserialize: decode<Res>,
  };
}

export const INSPECT_SERVICE = {
  Status: method<Record<string, never>, DriverStatus>('Status'),
  Volumes: method<VolumesRequest, VolumePage>('Volumes'),
  Volume: method<{ id?: string }, VolumeDetail>('Volume'),
  /** The copies under way and how far each has come: read from memory, so not held behind a status read. */
  Operations: method<Record<string, never>, { operations: OperationView[] }>('Operations'),
};
