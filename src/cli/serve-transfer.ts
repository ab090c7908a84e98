import type { DriverContext } from '../driver/context.js';
import { parseDuration, parseQuantity } from '../units.js';
import type { ServeOptions } from './serve.js';

/**
 * The cross-node transfer (transfer/): the listener peers read from, and the client for sources
 * this node lacks. Both need the TLS directory; the code is loaded only when asked for.
 */
export async function startTransfer(opts: ServeOptions, ctx: DriverContext): Promise<{ close(): Promise<void> } | undefined> {
  const peers = opts.transferPeer ?? [];
  const fromCluster = opts.transferPeersFromCluster;
  if (!opts.transferListen && !peers.length && !fromCluster) return undefined;
  if (!opts.transferTlsDir) throw new Error('--transfer-listen and --transfer-peer(s-from-cluster) need --transfer-tls-dir (ca.crt, tls.crt, tls.key)');
  if (!ctx.backend) throw new Error('--transfer-listen and --transfer-peer need a node-local pool (file or lvm)');
  const [{ readTransferTls }, { TransferClient, parsePeer }, { transferSource }] = await Promise.all([import('../transfer/tls.js'), import('../transfer/client.js'), import('../driver/transfer.js')]);
  const tls = await readTransferTls(opts.transferTlsDir);
  if (peers.length || fromCluster) {
    const parsed = peers.map(parsePeer);
    let found: (() => Promise<{ host: string; port: number }[]>) | undefined;
    if (fromCluster) {
      const namespace = process.env.POD_NAMESPACE;
      if (!namespace) throw new Error('--transfer-peers-from-cluster needs POD_NAMESPACE (the chart sets it from the pod)');
      const [{ loadKube }, { clusterPeers }] = await Promise.all([import('../cluster/kube.js'), import('../cluster/transfer-peers.js')]);
      found = clusterPeers(loadKube(opts.kubeconfig), { namespace, selector: fromCluster, node: ctx.nodeId });
    }
    ctx.transfer = new TransferClient(tls, async () => [...parsed, ...(found ? await found() : [])], { stallMs: parseDuration(opts.transferStallTimeout) });
  }
  if (!opts.transferListen) return undefined;
  const { startTransferServer } = await import('../transfer/server.js');
  const m = /^(.*):(\d{1,5})$/.exec(opts.transferListen);
  if (!m) throw new Error(`--transfer-listen is host:port, not ${JSON.stringify(opts.transferListen)}`);
  return startTransferServer({ host: m[1].replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(m[2]), tls, source: transferSource(ctx.backend, ctx.locks), bytesPerSecond: parseQuantity(opts.transferRate), stallMs: parseDuration(opts.transferStallTimeout) });
}

