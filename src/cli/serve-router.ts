import type { Command } from 'commander';
import { log, setLogLevel } from '../log.js';
import { packageVersion } from '../project.js';
import { parseDuration } from '../units.js';
import { TOPOLOGY_KEY } from '../driver/context.js';

interface RouterFlags {
  endpoint: string;
  driverName: string;
  namespace?: string;
  podName?: string;
  nodeSelector: string;
  nodeDaemonset: string;
  topologyKey: string;
  trustConfigmap: string;
  signerName: string;
  certLifetime: string;
  refresh: string;
  timeout: string;
  socketGroup?: string;
  kubeconfig?: string;
  logLevel: string;
}

/**
 * `vpool-csi snapshot-router`: the driver behind a central csi-snapshotter for node-local pools (file,
 * lvm), where group snapshots need one (no node's csi-snapshotter sees a VolumeGroupSnapshotContent).
 * It holds no pool: each call goes to the node plugin holding what it names, over the transfer
 * listener, with a router certificate from the transfer signer (docs/backup.md has the threat model).
 */
export function addSnapshotRouterCommand(program: Command): void {
  program
    .command('snapshot-router')
    .description('file/lvm: serve snapshots and group snapshots to a central csi-snapshotter by handing each call to the node that holds its volumes')
    .option('--endpoint <endpoint>', 'the CSI socket the csi-snapshotter calls', 'unix:///csi/router.sock')
    .option('--driver-name <name>', 'the CSI driver name (the node plugins\')', 'vpool.csi.dev')
    .option('--namespace <namespace>', 'the driver\'s namespace (default: $POD_NAMESPACE)')
    .option('--pod-name <name>', 'this pod\'s name, which its certificate names (default: $POD_NAME)')
    .option('--node-selector <selector>', 'the node plugin pods\' labels: the nodes calls are handed to', 'app.kubernetes.io/name=vpool-csi,app.kubernetes.io/component=node')
    .option('--node-daemonset <name>', 'the node plugins\' DaemonSet (in the namespace): a thing is on no node only once as many plugins as it wants have said so', 'vpool-csi-node')
    .option('--topology-key <key>', 'the node label key the volumes\' PersistentVolumes are pinned by: a node\'s claim to hold a volume must agree', TOPOLOGY_KEY)
    .option('--trust-configmap <name>', 'the ConfigMap whose ca.crt holds the CAs the transfer trusts', 'vpool-csi-transfer-trust')
    .option('--signer-name <name>', 'the signer name of this router\'s certificate request', 'vpool.dev/transfer')
    .option('--cert-lifetime <duration>', 'how long the certificate is asked for (renewed at two thirds)', '24h')
    .option('--refresh <duration>', 'how often the trust bundle is read again', '30s')
    .option('--timeout <duration>', 'the deadline a call is handed to its node with (the csi-snapshotter\'s --timeout)', '300s')
    .option('--socket-group <gid>', 'group of the CSI socket (0660), for a non-root csi-snapshotter')
    .option('--kubeconfig <file>', 'default: $KUBECONFIG, else the pod\'s service account')
    .option('--log-level <level>', 'error, warn, info or debug', 'info')
    .action(async (o: RouterFlags) => {
      setLogLevel(o.logLevel);
      const namespace = o.namespace ?? process.env.POD_NAMESPACE;
      const pod = o.podName ?? process.env.POD_NAME;
      if (!namespace || !pod) throw new Error('--namespace and --pod-name are required (or POD_NAMESPACE and POD_NAME: the chart sets them from the pod)');
      const socketGroup = o.socketGroup === undefined ? undefined : Number(o.socketGroup);
      if (socketGroup !== undefined && !(Number.isInteger(socketGroup) && socketGroup >= 0)) throw new Error(`--socket-group must be a numeric group ID (got ${o.socketGroup})`);
      const deadlineMs = parseDuration(o.timeout);
      if (deadlineMs < 1000) throw new Error(`--timeout is at least 1s, not ${o.timeout}`);
      const [{ loadKube }, { RouterView }, { clusterPeers }, { TransferEnrolment }, { TransferCredentials }, { CommandClient }, { SnapshotRouter }, { routerHandlers }, { startServer }] = await Promise.all([
        import('../cluster/kube.js'),
        import('../cluster/router-view.js'),
        import('../cluster/transfer-peers.js'),
        import('../cluster/transfer-enrol.js'),
        import('../transfer/credentials.js'),
        import('../transfer/commands.js'),
        import('../driver/snapshot-router.js'),
        import('../csi/router-handlers.js'),
        import('../csi/server.js'),
      ]);
      const kube = loadKube(o.kubeconfig);
      const credentials = new TransferCredentials();
      const enrolment = new TransferEnrolment(kube, credentials, {
        node: pod,
        router: { pod },
        namespace,
        trustConfigMap: o.trustConfigmap,
        signerName: o.signerName,
        lifetimeSeconds: Math.round(parseDuration(o.certLifetime) / 1000),
        refreshMs: parseDuration(o.refresh),
      });
      enrolment.start();
      // Every node plugin is a possible holder ('' is no node: none is left out as "this one").
      const view = new RouterView(kube, { driver: o.driverName, namespace, daemonSet: o.nodeDaemonset, topologyKey: o.topologyKey });
      const nodes = new CommandClient(credentials, clusterPeers(kube, { namespace, selector: o.nodeSelector, node: '' }), () => view.expectedNodes());
      const router = new SnapshotRouter(nodes, (v) => view.pinnedNode(v), { deadlineMs });
      const server = await startServer({ mode: 'snapshot-router', handlers: routerHandlers({ driverName: o.driverName, version: packageVersion() }, router) }, o.endpoint, socketGroup);
      log.info('snapshot router ready', { socket: server.socket, namespace, pod, nodes: o.nodeSelector });
      const stop = () => {
        enrolment.stop();
        void server.shutdown().finally(() => process.exit(0));
      };
      process.on('SIGTERM', stop);
      process.on('SIGINT', stop);
    });
}
