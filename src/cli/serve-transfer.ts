import { denied, DriverError, errorMessage, unavailable } from '../errors.js';
import type { KeyedLocks } from '../locks.js';
import type { PoolBackend } from '../pool/backend.js';
import type { SourceFetcher } from '../transfer/client.js';
import type { TransferSource } from '../transfer/server.js';
import type { LocalMetadata } from '../transfer/metadata.js';
import type { RemoteSnapshotMetadata } from '../driver/controller/snapshot-metadata.js';
import { TOPOLOGY_KEY } from '../driver/context.js';
import { MIN_PROGRESS } from '../transfer/progress.js';
import { parseDuration, parseQuantity } from '../units.js';
import type { ServeOptions } from './serve.js';
import type { ServedPool } from './served-pool.js';
import { commandsOf } from '../transfer/command-groups.js';

/** What the transfer needs of the rest of the driver. */
export interface TransferDeps {
  nodeId: string;
  driverName: string;
  locks: KeyedLocks;
  /** Peers read from it once it is open; before, nothing is here. */
  pool: ServedPool;
}

export interface RunningTransfer {
  /** For CreateVolume: sources this node lacks. */
  client?: SourceFetcher;
  /** For the SnapshotMetadata service: snapshots this node lacks, asked of the node holding them. */
  metadata?: RemoteSnapshotMetadata;
  close(): Promise<void>;
}

/** A served VolumePool opens after the listener starts: until it does, every ID is "not here". */
function sourceOnceOpen(pool: ServedPool, make: (backend: PoolBackend) => TransferSource): TransferSource {
  let source: TransferSource | undefined;
  pool.whenOpen(({ pool: o }) => {
    if (o.backend) source = make(o.backend);
  });
  return {
    size: async (kind, id) => (source ? source.size(kind, id) : null),
    open: async (kind, id) => (source ? source.open(kind, id) : null),
  };
}

/** The same for the snapshot metadata peers ask of this node. */
function metadataOnceOpen(pool: ServedPool, make: (backend: PoolBackend) => LocalMetadata): LocalMetadata {
  let local: LocalMetadata | undefined;
  pool.whenOpen(({ pool: o }) => {
    if (o.backend?.snapshotBlocks) local = make(o.backend);
  });
  // Not open yet (a served VolumePool being built): "not now", never "not here", which a reader takes as final.
  const none = () => Promise.reject(new DriverError('unavailable', 'this node\'s pool is not open yet'));
  return {
    holds: async (id) => (local ? local.holds(id) : none()),
    allocated: (...a) => (local ? local.allocated(...a) : none()),
    delta: (...a) => (local ? local.delta(...a) : none()),
  };
}

/**
 * The cross-node transfer (transfer/): the listener peers read from, and the client for sources this
 * node lacks. Both need the Kubernetes API: the node's credential comes from the CSR API, each read
 * is authorized by the claim it is for, and the peers are the driver's node plugin pods. The code is
 * loaded only when asked for. The listener starts once the first certificate is issued (the CSI
 * socket does not wait for it).
 */
export async function startTransfer(opts: ServeOptions, { nodeId, driverName, locks, pool }: TransferDeps): Promise<RunningTransfer | undefined> {
  const selector = opts.transferPeersFromCluster;
  if (!opts.transferListen && !selector) return undefined;
  if (!selector) throw new Error('--transfer-listen needs --transfer-peers-from-cluster (the node plugin pods\' label selector: peers are found, and checked, by it)');
  if (pool.current && !pool.current.pool.backend) throw new Error('the transfer needs a node-local pool (file or lvm)');
  const namespace = process.env.POD_NAMESPACE;
  if (!namespace) throw new Error('the transfer needs POD_NAMESPACE (the chart sets it from the pod)');
  const listen = opts.transferListen ? /^(.*):(\d{1,5})$/.exec(opts.transferListen) : null;
  if (opts.transferListen && !listen) throw new Error(`--transfer-listen is host:port, not ${JSON.stringify(opts.transferListen)}`);
  commandsOf(opts.transferRouterTakes);
  if (opts.transferRouterFromCluster && !listen) throw new Error('--transfer-router-from-cluster needs --transfer-listen (the router\'s commands arrive on the listener)');
  const { stallMs, deadlineMs, maxSends, bytesPerSecond } = transferBounds(opts);
  const refreshMs = parseDuration(opts.transferRefresh);
  const lifetimeSeconds = Math.round(parseDuration(opts.transferCertLifetime) / 1000);
  // Everything above is checked now; what follows loads in the background, so the CSI socket never
  // waits for the transfer's code (slow to load on a slow machine) or for the API.
  let stopped = false;
  const loaded = (async () => {
    const [{ loadKube }, { clusterPeers }, { TransferAccess, Refusal, Mismatch, NotYet }, { TransferEnrolment }, { TransferCredentials }, { TransferClient }, { transferSource }, { MetadataClient }, { localMetadata }] = await Promise.all([
      import('../cluster/kube.js'),
      import('../cluster/transfer-peers.js'),
      import('../cluster/transfer-access.js'),
      import('../cluster/transfer-enrol.js'),
      import('../transfer/credentials.js'),
      import('../transfer/client.js'),
      import('../driver/transfer.js'),
      import('../transfer/metadata.js'),
      import('../driver/controller/snapshot-metadata.js'),
    ]);
    const kube = loadKube(opts.kubeconfig);
    const credentials = new TransferCredentials();
    const enrolment = new TransferEnrolment(kube, credentials, { node: nodeId, namespace, trustConfigMap: opts.transferTrustConfigmap, signerName: opts.transferSignerName, lifetimeSeconds, refreshMs });
    if (!stopped) enrolment.start();
    const access = new TransferAccess(kube, { driver: driverName, namespace, nodeSelector: selector, topologyKey: TOPOLOGY_KEY, routerSelector: opts.transferRouterFromCluster });
    const peers = clusterPeers(kube, { namespace, selector, node: nodeId });
    // A claim that names another source is final (PERMISSION_DENIED); a cluster that does not say yet is retried.
    const holder = (kind: 'volume' | 'snapshot', id: string, claim: { namespace: string; name: string }) =>
      access.holder(kind, id, claim).catch((err: unknown) => Promise.reject(err instanceof Mismatch ? denied(errorMessage(err)) : err instanceof Refusal ? unavailable(errorMessage(err)) : err));
    const client = new TransferClient(credentials, peers, holder, { stallMs, deadlineMs });
    const metadata = new MetadataClient(credentials, peers);
    /** A check's refusal as the listener takes it: the reason, or null to go ahead; "not yet" is thrown (answered "not now", retried), not refused for good. */
    const refusalOf = async (check: () => Promise<void>): Promise<string | null> => {
      try {
        await check();
        return null;
      } catch (err) {
        if (err instanceof Refusal && !(err instanceof NotYet)) return err.message;
        throw err;
      }
    };
    let listener: Promise<{ close(): Promise<void> }> | undefined;
    if (listen) {
      const { startTransferServer } = await import('../transfer/server.js');
      const source = sourceOnceOpen(pool, (backend) => transferSource(backend, locks));
      const router = opts.transferRouterFromCluster ? (await import('./local-commands.js')).localCommands(opts.endpoint, source, { isOpen: () => pool.current !== undefined && pool.notServing === undefined, holdsNothing: () => pool.holdsNothing }) : undefined;
      listener = startTransferServer({
        host: listen[1].replace(/^\[|\]$/g, '') || '0.0.0.0',
        port: Number(listen[2]),
        credentials,
        authorize: (r) => refusalOf(() => access.authorize(r.who, r.address, r.kind, r.id, r.claim)),
        source,
        metadata: metadataOnceOpen(pool, localMetadata),
        // Any live node plugin of the driver may ask a snapshot's block metadata: it relays a request the
        // external-snapshot-metadata sidecar authorized (docs/backup.md); only ranges cross, never data.
        authorizePeer: (who, address) => refusalOf(() => access.checkPeer(who, address)),
        // The snapshot router (a central csi-snapshotter's driver) hands this node the snapshot calls for its volumes.
        commands: router,
        allowedCommands: router ? commandsOf(opts.transferRouterTakes) : undefined,
        authorizeRouter: router ? (who, address) => refusalOf(() => access.checkRouter(who, address)) : undefined,
        bytesPerSecond,
        stallMs,
        deadlineMs,
        maxSends,
      });
      // A port already taken is a start-up failure, as before, not a quiet absence.
      listener.catch((err: unknown) => {
        process.stderr.write(`vpool-csi: the transfer listener cannot start: ${errorMessage(err)}\n`);
        process.exit(1);
      });
    }
    return { client, metadata, enrolment, listener };
  })();
  loaded.catch((err: unknown) => {
    process.stderr.write(`vpool-csi: the transfer cannot start: ${errorMessage(err)}\n`);
    process.exit(1);
  });
  const client: SourceFetcher = {
    locate: async (...a) => (await loaded).client.locate(...a),
    fetch: async (...a) => (await loaded).client.fetch(...a),
  };
  const metadata: RemoteSnapshotMetadata = {
    allocated: async (...a) => (await loaded).metadata.allocated(...a),
    delta: async (...a) => (await loaded).metadata.delta(...a),
  };
  return {
    client,
    metadata,
    close: async () => {
      stopped = true;
      const l = await loaded;
      l.enrolment.stop();
      if (l.listener) await (await l.listener).close();
    },
  };
}

/** The transfer's bounds from the flags; a combination that would end every transfer is refused at start. */
function transferBounds(opts: ServeOptions): { stallMs: number; deadlineMs: number; maxSends: number; bytesPerSecond: number } {
  const stallMs = parseDuration(opts.transferStallTimeout);
  const deadlineMs = parseDuration(opts.transferTimeout);
  const bytesPerSecond = parseQuantity(opts.transferRate);
  const maxSends = Number(opts.transferMaxSends);
  if (!Number.isSafeInteger(maxSends) || maxSends < 1) throw new Error(`--transfer-max-sends is a whole number of at least 1, not ${JSON.stringify(opts.transferMaxSends)}`);
  // setTimeout's limit (about 24.8 days): a longer one would fire at once.
  if (deadlineMs < 1000 || deadlineMs > 2 ** 31 - 1) throw new Error(`--transfer-timeout is between 1s and 24d, not ${JSON.stringify(opts.transferTimeout)}`);
  if (stallMs && stallMs < 100) throw new Error(`--transfer-stall-timeout is 0 (off) or at least 100ms, not ${JSON.stringify(opts.transferStallTimeout)}`);
  // A stall is less than MIN_PROGRESS in a window: a rate that cannot send it would end every stream.
  if (stallMs && bytesPerSecond && (bytesPerSecond * stallMs) / 1000 < 2 * MIN_PROGRESS)
    throw new Error(`--transfer-rate ${opts.transferRate} sends less than ${(2 * MIN_PROGRESS) / 1048576} MiB per --transfer-stall-timeout ${opts.transferStallTimeout}, and a peer that moves less than ${MIN_PROGRESS / 1048576} MiB in that window is taken as stalled: raise one of them`);
  return { stallMs, deadlineMs, maxSends, bytesPerSecond };
}
