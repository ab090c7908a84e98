import { execFile } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { PROJECT_ROOT } from '../../src/project.js';
import type { CsiClient } from '../../src/csi/client.js';

const execFileP = promisify(execFile);

/**
 * A FAKE external-snapshot-metadata sidecar (none can run here; it needs a Kubernetes API), modelling
 * what v1.1.0 does with a backup application's call (pkg/internal/server/grpc): the token must be one
 * the API server's TokenReview accepts for the audience (else UNAUTHENTICATED), the caller must be
 * allowed to get the VolumeSnapshot (else PERMISSION_DENIED), the VolumeSnapshot must exist and be
 * ready, bound to a content of the driver (else INVALID_ARGUMENT/UNAVAILABLE), then the CSI call
 * with the content's snapshot handle, whose stream is relayed message by message with the
 * starting_offset and max_results as given. Here the API is a table: `tokens` (token → allowed
 * namespaces) and `snapshots` (namespace/name → handle). `cutAfter` cuts the next stream after that
 * many messages (a broken connection), once.
 */
export interface FakeSidecar {
  address: string;
  caFile: string;
  tokens: Map<string, string[]>;
  snapshots: Map<string, string>;
  cutAfter: number | null;
  calls: Array<{ method: string; namespace: string; name: string; from: string }>;
  stop(): Promise<void>;
}

export async function startFakeSidecar(dir: string, csi: CsiClient): Promise<FakeSidecar> {
  const o = (...a: string[]) => execFileP('openssl', a);
  await o('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'sm-ca.key'), '-out', path.join(dir, 'sm-ca.crt'), '-days', '1', '-subj', '/CN=sm-ca');
  await writeFile(path.join(dir, 'sm.cnf'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n');
  await o('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', path.join(dir, 'sm.key'), '-out', path.join(dir, 'sm.csr'), '-subj', '/CN=localhost');
  await o('x509', '-req', '-in', path.join(dir, 'sm.csr'), '-CA', path.join(dir, 'sm-ca.crt'), '-CAkey', path.join(dir, 'sm-ca.key'), '-CAcreateserial', '-out', path.join(dir, 'sm.crt'), '-days', '1', '-extfile', path.join(dir, 'sm.cnf'));

  const def = protoLoader.loadSync(path.join(PROJECT_ROOT, 'proto', 'snapshot-metadata-api.proto'), { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as { snapshotmetadata: { SnapshotMetadata: { service: grpc.ServiceDefinition } } };
  const fake: FakeSidecar = { address: '', caFile: path.join(dir, 'sm-ca.crt'), tokens: new Map(), snapshots: new Map(), cutAfter: null, calls: [], stop: async () => undefined };

  type Req = { security_token: string; namespace: string; snapshot_name?: string; target_snapshot_name?: string; base_snapshot_id?: string; starting_offset: string; max_results: number };
  const handle = (method: 'GetMetadataAllocated' | 'GetMetadataDelta') => async (call: grpc.ServerWritableStream<Req, unknown>) => {
    const r = call.request;
    const name = r.snapshot_name ?? r.target_snapshot_name ?? '';
    fake.calls.push({ method, namespace: r.namespace, name, from: r.starting_offset });
    const fail = (code: grpc.status, details: string) => void call.emit('error', Object.assign(new Error(details), { code, details }));
    const allowed = fake.tokens.get(r.security_token);
    if (!allowed) return fail(grpc.status.UNAUTHENTICATED, 'unauthenticated user');
    if (!allowed.includes(r.namespace)) return fail(grpc.status.PERMISSION_DENIED, 'user does not have permissions to perform the operation');
    const id = fake.snapshots.get(`${r.namespace}/${name}`);
    if (!id) return fail(grpc.status.UNAVAILABLE, `VolumeSnapshot '${r.namespace}/${name}' not found`);
    const cut = fake.cutAfter;
    fake.cutAfter = null;
    try {
      const msgs =
        method === 'GetMetadataAllocated'
          ? await csi.getMetadataAllocated({ snapshot_id: id, starting_offset: r.starting_offset, max_results: r.max_results })
          : await csi.getMetadataDelta({ base_snapshot_id: r.base_snapshot_id ?? '', target_snapshot_id: id, starting_offset: r.starting_offset, max_results: r.max_results });
      for (const [i, m] of msgs.entries()) {
        if (cut !== null && i === cut) return fail(grpc.status.UNAVAILABLE, 'the connection to the CSI driver was lost');
        call.write(m);
      }
      call.end();
    } catch (err) {
      const e = err as { code?: number; details?: string };
      fail(e.code ?? grpc.status.INTERNAL, e.details ?? String(err));
    }
  };
  const server = new grpc.Server();
  server.addService(pkg.snapshotmetadata.SnapshotMetadata.service, { GetMetadataAllocated: handle('GetMetadataAllocated'), GetMetadataDelta: handle('GetMetadataDelta') });
  const creds = grpc.ServerCredentials.createSsl(null, [{ private_key: await readFile(path.join(dir, 'sm.key')), cert_chain: await readFile(path.join(dir, 'sm.crt')) }], false);
  const port = await new Promise<number>((resolve, reject) => server.bindAsync('127.0.0.1:0', creds, (err, p) => (err ? reject(err) : resolve(p))));
  fake.address = `127.0.0.1:${port}`;
  fake.stop = () => new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
  return fake;
}
