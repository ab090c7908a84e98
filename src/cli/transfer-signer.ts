import type { Command } from 'commander';
import { setLogLevel, log } from '../log.js';
import { parseDuration } from '../units.js';

interface SignerFlags {
  namespace?: string;
  signerName: string;
  caSecret: string;
  userCa: boolean;
  trustConfigmap: string;
  nodeServiceAccount: string;
  nodeSelector: string;
  routerServiceAccount?: string;
  routerSelector?: string;
  certLifetime: string;
  caLifetime: string;
  overlap: string;
  resync: string;
  kubeconfig?: string;
  logLevel: string;
  healthAddress?: string;
}

/** `vpool-csi transfer-signer`: the transfer's CA, run once per cluster (the chart's transfer-signer Deployment). */
export function addTransferSignerCommand(program: Command): void {
  program
    .command('transfer-signer')
    .description('issue the node plugins\' transfer certificates (CertificateSigningRequest API) and keep the CAs they trust')
    .option('--namespace <namespace>', 'the driver\'s namespace (default: $POD_NAMESPACE)')
    .option('--signer-name <name>', 'the signer name answered', 'vpool.dev/transfer')
    .option('--ca-secret <name>', 'the Secret (tls.crt, tls.key) holding the CA', 'vpool-csi-transfer-ca')
    .option('--user-ca', 'the CA Secret is the user\'s: never made or rotated here, only read (a change to it is taken up, the old CA trusted for --overlap)', false)
    .option('--trust-configmap <name>', 'the ConfigMap the node plugins read the trusted CAs from', 'vpool-csi-transfer-trust')
    .option('--node-service-account <name>', 'the node plugins\' ServiceAccount (the only requester served)', 'vpool-csi-node')
    .option('--node-selector <selector>', 'the node plugin pods\' labels (a requester\'s pod must carry them)', 'app.kubernetes.io/name=vpool-csi,app.kubernetes.io/component=node')
    .option('--router-service-account <name>', 'the snapshot router\'s ServiceAccount: its pods get a router certificate (no node); unset: none is issued')
    .option('--router-selector <selector>', 'the snapshot router pods\' labels (with --router-service-account)')
    .option('--cert-lifetime <duration>', 'the longest node certificate issued', '24h')
    .option('--ca-lifetime <duration>', 'the life of a CA made here (replaced by itself in its last fifth)', '8760h')
    .option('--overlap <duration>', 'how long a replaced CA is still trusted beside the new one', '48h')
    .option('--resync <duration>', 'how often requests and the CA Secret are looked at', '5s')
    .option('--kubeconfig <file>', 'default: $KUBECONFIG, else the pod\'s service account')
    .option('--health-address <host:port>', 'serve /healthz: 200 while the last pass over the requests succeeded, 503 with the reason when not')
    .option('--log-level <level>', 'error, warn, info or debug', 'info')
    .action(async (o: SignerFlags) => {
      setLogLevel(o.logLevel);
      const namespace = o.namespace ?? process.env.POD_NAMESPACE;
      if (!namespace) throw new Error('--namespace is required (or POD_NAMESPACE)');
      if (!o.routerServiceAccount !== !o.routerSelector) throw new Error('--router-service-account and --router-selector go together');
      const [{ loadKube }, { TransferSigner }] = await Promise.all([import('../cluster/kube.js'), import('../cluster/transfer-signer.js')]);
      const signer = new TransferSigner(loadKube(o.kubeconfig), {
        namespace,
        signerName: o.signerName,
        caSecret: o.caSecret,
        manageCa: !o.userCa,
        trustConfigMap: o.trustConfigmap,
        nodeServiceAccount: o.nodeServiceAccount,
        nodeSelector: o.nodeSelector,
        router: o.routerServiceAccount && o.routerSelector ? { serviceAccount: o.routerServiceAccount, selector: o.routerSelector } : undefined,
        certLifetimeMs: parseDuration(o.certLifetime),
        caLifetimeMs: parseDuration(o.caLifetime),
        overlapMs: parseDuration(o.overlap),
        resyncMs: parseDuration(o.resync),
      });
      await signer.start();
      if (o.healthAddress) {
        const { serveHttp } = await import('../metrics.js');
        await serveHttp(o.healthAddress, {
          health: async () => {
            const why = signer.health();
            if (why) throw new Error(why);
          },
        });
      }
      log.info('transfer signer ready', { namespace, signer: o.signerName, caSecret: o.caSecret, userCa: o.userCa });
      const stop = () => {
        signer.stop();
        process.exit(0);
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
}
