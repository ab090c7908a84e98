import type { DriverContext } from '../driver/context.js';
import { MIN_PROGRESS } from '../transfer/progress.js';
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
  const bounds = transferBounds(opts);
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
    ctx.transfer = new TransferClient(tls, async () => [...parsed, ...(found ? await found() : [])], { stallMs: bounds.stallMs, deadlineMs: bounds.deadlineMs });
  }
  if (!opts.transferListen) return undefined;
  const { startTransferServer } = await import('../transfer/server.js');
  const m = /^(.*):(\d{1,5})$/.exec(opts.transferListen);
  if (!m) throw new Error(`--transfer-listen is host:port, not ${JSON.stringify(opts.transferListen)}`);
  return startTransferServer({ host: m[1].replace(/^\[|\]$/g, '') || '0.0.0.0', port: Number(m[2]), tls, source: transferSource(ctx.backend, ctx.locks), ...bounds });
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
