import type { DriverContext } from '../driver/context.js';
import { denied, errorMessage, unavailable } from '../errors.js';
import { parseDuration, parseQuantity } from '../units.js';
import type { ServeOptions } from './serve.js';

/** The signer name the chart's transfer signer answers, and the ConfigMap it keeps the trusted CAs in. */
export const DEFAULT_SIGNER_NAME = 'vpool.dev/transfer';

/**
 * The cross-node transfer (transfer/): the listener peers read from, and the client for sources this
 * node lacks. Both need the Kubernetes API: the node's credential comes from the CSR API, each read
 * is authorized by the claim it is for, and the peers are the driver's node plugin pods. The code is
 * loaded only when asked for. The listener starts once the first certificate is issued (the CSI
 * socket does not wait for it); a read before the pool is open is answered "not here".
 */
export async function startTransfer(opts: ServeOptions, ctx: DriverContext): Promise<{ close(): Promise<void> } | undefined> {
  const selector = opts.transferPeersFromCluster;
  if (!opts.transferListen && !selector) return undefined;
  if (!selector) throw new Error('--transfer-listen needs --transfer-peers-from-cluster (the node plugin pods\' label selector: peers are found, and checked, by it)');
  const namespace = process.env.POD_NAMESPACE;
  if (!namespace) throw new Error('the transfer needs POD_NAMESPACE (the chart sets it from the pod)');
  const [{ loadKube }, { clusterPeers }, { TransferAccess, Refusal, Mismatch }, { TransferEnrolment }, { TransferCredentials }, { TransferClient }, { transferSource }] = await Promise.all([
    import('../cluster/kube.js'),
    import('../cluster/transfer-peers.js'),
    import('../cluster/transfer-access.js'),
    import('../cluster/transfer-enrol.js'),
    import('../transfer/credentials.js'),
    import('../transfer/client.js'),
    import('../driver/transfer.js'),
  ]);
  const kube = loadKube(opts.kubeconfig);
  const credentials = new TransferCredentials();
  const enrolment = new TransferEnrolment(kube, credentials, {
    node: ctx.nodeId,
    namespace,
    trustConfigMap: opts.transferTrustConfigmap,
    signerName: opts.transferSignerName,
    lifetimeSeconds: Math.round(parseDuration(opts.transferCertLifetime) / 1000),
    refreshMs: parseDuration(opts.transferRefresh),
  });
  enrolment.start();
  const access = new TransferAccess(kube, { driver: ctx.driverName, namespace, nodeSelector: selector });
  const peers = clusterPeers(kube, { namespace, selector, node: ctx.nodeId });
  ctx.transfer = new TransferClient(credentials, peers, (kind, id, claim) => access.holder(kind, id, claim).catch((err: unknown) => Promise.reject(err instanceof Mismatch ? denied(errorMessage(err)) : err instanceof Refusal ? unavailable(errorMessage(err)) : err)), { stallMs: parseDuration(opts.transferStallTimeout) });
  if (!opts.transferListen) return { close: async () => enrolment.stop() };
  const { startTransferServer } = await import('../transfer/server.js');
  const m = /^(.*):(\d{1,5})$/.exec(opts.transferListen);
  if (!m) throw new Error(`--transfer-listen is host:port, not ${JSON.stringify(opts.transferListen)}`);
  const server = startTransferServer({
    host: m[1].replace(/^\[|\]$/g, '') || '0.0.0.0',
    port: Number(m[2]),
    credentials,
    authorize: async (r) => {
      try {
        await access.authorize(r.who, r.address, r.kind, r.id, r.claim);
        return null;
      } catch (err) {
        if (err instanceof Refusal) return err.message;
        throw err;
      }
    },
    source: transferSource(() => ctx.backend, ctx.locks),
    bytesPerSecond: parseQuantity(opts.transferRate),
    stallMs: parseDuration(opts.transferStallTimeout),
  });
  return {
    close: async () => {
      enrolment.stop();
      await (await server).close();
    },
  };
}
