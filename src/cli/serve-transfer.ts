import type { KeyedLocks } from '../locks.js';
import type { PoolBackend } from '../pool/backend.js';
import type { TransferClient } from '../transfer/client.js';
import type { TransferSource } from '../transfer/server.js';
import { parseDuration, parseQuantity } from '../units.js';
import type { ServeOptions } from './serve.js';
import type { ServedPool } from './served-pool.js';

/** What the transfer needs of the rest of the driver. */
export interface TransferDeps {
  nodeId: string;
  locks: KeyedLocks;
  /** Peers read from it once it is open; before, nothing is here. */
  pool: ServedPool;
}

export interface RunningTransfer {
  /** For CreateVolume: sources this node lacks; absent when no peers are configured. */
  client?: TransferClient;
  close(): Promise<void>;
}

/** A served VolumePool opens after the listener starts: until it does, every ID is "not here" and peers ask elsewhere. */
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

/**
 * The cross-node transfer (transfer/): the listener peers read from, and the client for sources
 * this node lacks. Both need the TLS directory; the code is loaded only when asked for.
 */
export async function startTransfer(opts: ServeOptions, { nodeId, locks, pool }: TransferDeps): Promise<RunningTransfer | undefined> {
  const peers = opts.transferPeer ?? [];
  const fromCluster = opts.transferPeersFromCluster;
  if (!opts.transferListen && !peers.length && !fromCluster) return undefined;
  if (!opts.transferTlsDir) throw new Error('--transfer-listen and --transfer-peer(s-from-cluster) need --transfer-tls-dir (ca.crt, tls.crt, tls.key)');
  if (pool.current && !pool.current.pool.backend) throw new Error('--transfer-listen and --transfer-peer need a node-local pool (file or lvm)');
  const [{ readTransferTls }, { TransferClient, parsePeer }, { transferSource }] = await Promise.all([import('../transfer/tls.js'), import('../transfer/client.js'), import('../driver/transfer.js')]);
  const tls = await readTransferTls(opts.transferTlsDir);
  let client: TransferClient | undefined;
  if (peers.length || fromCluster) {
    const parsed = peers.map(parsePeer);
    let found: (() => Promise<{ host: string; port: number }[]>) | undefined;
    if (fromCluster) {
      const namespace = process.env.POD_NAMESPACE;
      if (!namespace) throw new Error('--transfer-peers-from-cluster needs POD_NAMESPACE (the chart sets it from the pod)');
      const [{ loadKube }, { clusterPeers }] = await Promise.all([import('../cluster/kube.js'), import('../cluster/transfer-peers.js')]);
      found = clusterPeers(loadKube(opts.kubeconfig), { namespace, selector: fromCluster, node: nodeId });
    }
    client = new TransferClient(tls, async () => [...parsed, ...(found ? await found() : [])], { stallMs: parseDuration(opts.transferStallTimeout) });
  }
  if (!opts.transferListen) return { client, close: async () => undefined };
  const { startTransferServer } = await import('../transfer/server.js');
  const m = /^(.*):(\d{1,5})$/.exec(opts.transferListen);
  if (!m) throw new Error(`--transfer-listen is host:port, not ${JSON.stringify(opts.transferListen)}`);
  const listener = await startTransferServer({ host: m[1].replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(m[2]), tls, source: sourceOnceOpen(pool, (backend) => transferSource(backend, locks)), bytesPerSecond: parseQuantity(opts.transferRate), stallMs: parseDuration(opts.transferStallTimeout) });
  return { client, close: () => listener.close() };
}

