#!/usr/bin/env node
import { Command, Option } from 'commander';
import { packageVersion } from './project.js';
import type { ServeOptions } from './cli/serve.js';

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

const program = new Command('vpool-csi').description('CSI driver serving block volumes from a node-local pool').version(packageVersion());

function addServeCommand(program: Command): void {
  program
    .command('serve')
    .description('serve the CSI Identity, Controller and Node services on a unix socket')
    .option('--endpoint <unix:///path>', 'CSI socket', 'unix:///run/vpool-csi/csi.sock')
    .option('--driver-name <name>', 'CSI driver name', 'vpool.csi.dev')
    .option('--node-id <id>', 'this node\'s ID (default: the hostname; with --backend libvirt, the VM\'s product UUID)')
    .addOption(new Option('--backend <kind>', 'pool backend').choices(['file', 'lvm', 'libvirt']).default('file'))
    .option('--pool-dir <dir>', 'file backend: directory that holds the volume files')
    .option('--vg <name>', 'lvm backend: the volume group made by `vpool-csi pool init`')
    .option('--overprovision-ratio <ratio>', 'lvm backend: thin pools promise up to this many times their size', '1.0')
    .option('--libvirt-uri <uri>', 'libvirt backend: the hypervisor (qemu:///system, qemu+ssh://host/system, ...)', 'qemu:///system')
    .addOption(new Option('--libvirt-transport <how>', 'libvirt backend: auto (one held connection to the local qemu:///system daemon, virsh for other URIs), rpc or virsh').choices(['auto', 'rpc', 'virsh']).default('auto'))
    .option('--libvirt-keepalive-interval <duration>', 'libvirt backend (rpc): ping libvirtd after this long without a word from it (0: no keepalive)', '5s')
    .option('--libvirt-keepalive-count <n>', 'libvirt backend (rpc): pings in a row left unanswered before the connection is declared dead and calls fail UNAVAILABLE', '3')
    .option('--libvirt-pool <name>', 'libvirt backend: the storage pool volumes are made in')
    .option('--ceph-conf <path>', 'libvirt backend, rbd pool, controller: a ceph.conf of the cluster; with --ceph-user and --ceph-keyring the controller makes, clones, flattens and sizes images with librbd (Debian librbd1; docs/libvirt.md, Ceph)')
    .option('--ceph-user <name>', 'libvirt backend, rbd pool: the controller\'s cephx user, without "client." (mon \'profile rbd\', osd \'profile rbd pool=<pool>\')')
    .option('--ceph-keyring <path>', 'libvirt backend, rbd pool: the keyring holding that user\'s key')
    .option('--hypervisor <name>', 'libvirt backend: topology value of the hypervisor (controller default: its hostname; required on nodes)')
    .option('--disk-cache <mode>', 'libvirt backend: cache mode of hot-plugged disks (none, directsync, writeback, ...)', 'none')
    .option('--attach-timeout <seconds>', 'libvirt backend: how long a node waits for a hot-plugged disk, and the controller for a guest to release one', '60')
    .addOption(new Option('--mode <mode>', 'which services to serve (resizer: only what external-resizer asks, beside file/lvm pools that grow on the node)').choices(['all', 'controller', 'node', 'resizer']).default('all'))
    .option('--socket-group <gid>', 'group of the CSI socket (0660), so that non-root sidecars in that group can use it')
    .option('--reserve <bytes>', 'free space the pool never hands out (e.g. 1Gi)', '0')
    .option('--default-size <bytes>', 'size of a volume created without a capacity range', '1Gi')
    .option('--allowed-root <dir>', 'directory under which staging and target paths must lie (repeatable)', collect)
    .option('--max-volumes-per-node <n>', 'reported in NodeGetInfo; 0 means no limit', '0')
    .option('--metrics-address <host:port>', 'serve Prometheus metrics at http://<host:port>/metrics (e.g. :9808)')
    .option('--health-address <host:port>', 'serve /healthz (200 when the pool answers, 503 with the reason when not); may equal --metrics-address')
    .option('--kubeconfig <file>', 'the Kubernetes API for VolumePools and orphan checks (default: $KUBECONFIG, else the pod\'s service account)')
    .addOption(new Option('--volume-pools <when>', 'file/lvm node plugins: build and report every VolumePool that selects this node (auto: whenever the Kubernetes API is reachable and the CRD installed)').choices(['auto', 'off']).default('auto'))
    .option('--pool-from-cluster <volumepool>', 'file/lvm: serve this VolumePool\'s pool with its settings instead of the pool flags (not ready until it is built here)')
    .option('--pool-resync <duration>', 'how often VolumePools are looked at again without a change (status, new disks matching a glob)', '5m')
    .option('--orphan-check-interval <duration>', 'compare the pool with the cluster\'s PVs and VolumeSnapshotContents this often and report orphans (0: never)', '0')
    .option('--orphan-delete-after <duration>', 'also delete orphans older than this (default: report only)')
    .option('--snapshot-import-interval <duration>', 'file/lvm with the Kubernetes API: how often to look for imported VolumeSnapshotContents (no node label) whose snapshot this node holds, and label them for this node\'s csi-snapshotter (0: never)', '30s')
    .option('--transfer-listen <host:port>', 'file/lvm: serve this node\'s volumes and snapshots to the nodes whose claims restore or clone them, at this address, over mutual TLS')
    .option('--transfer-peers-from-cluster <selector>', 'file/lvm: the node plugin pods (this label selector in $POD_NAMESPACE): peers are found at their container port named "transfer", and readers checked against them')
    .option('--transfer-router-from-cluster <selector>', 'file/lvm: take the router pods\' calls on the transfer listener (snapshot and group snapshot calls, ControllerModifyVolume: --transfer-router-takes; this label selector in $POD_NAMESPACE; their router certificate, from their own address)')
    .option('--transfer-router-takes <features>', 'which router calls this node takes: snapshots (snapshot and group snapshot calls of a central csi-snapshotter), modify (the csi-resizer\'s ControllerModifyVolume), or both, comma-separated', 'snapshots')
    .option('--transfer-trust-configmap <name>', 'the ConfigMap (in $POD_NAMESPACE) whose ca.crt holds the CAs the transfer trusts; kept by `vpool-csi transfer-signer`', 'vpool-csi-transfer-trust')
    .option('--transfer-signer-name <name>', 'the signer name of this node\'s transfer certificate request (CertificateSigningRequest API)', 'vpool.dev/transfer')
    .option('--transfer-cert-lifetime <duration>', 'how long a transfer certificate is asked for (renewed at two thirds)', '24h')
    .option('--transfer-refresh <duration>', 'how often the trust bundle is read again (a rotated CA is taken up within this)', '30s')
    .option('--transfer-rate <bytes>', 'bytes per second one transfer may send (e.g. 100Mi; 0: no limit)', '0')
    .option('--transfer-stall-timeout <duration>', 'a transfer that moves less than 1 MiB in this window (a cut link, a peer gone without a word, a peer trickling) is given up on both sides', '60s')
    .option('--transfer-timeout <duration>', 'the most one transfer may take, from its request to its end, on both sides (then given up like a stall)', '6h')
    .option('--transfer-max-sends <n>', 'sends to peers at once; a peer asking past it is told to come back (it waits and asks again)', '4')
    .option('--cgroup-root <dir>', 'file/lvm nodes: the host\'s cgroup filesystem, where the pods\' I/O limits are set (cgroup v2 io.max, or v1 blkio)', '/sys/fs/cgroup')
    .option('--kubepods-cgroup <path>', 'file/lvm nodes: the kubelet\'s kubepods cgroup under the cgroup root, where pod cgroups are looked for (repeatable; default kubepods.slice and kubepods, for the systemd and cgroupfs drivers)', collect)
    .option('--log-level <level>', 'error, warn, info or debug', 'info')
    .action(async (opts: ServeOptions) => {
      // Each command loads its own code: `--version` and `client` do not pay for the pools, the cluster client or metrics.
      const { serve } = await import('./cli/serve.js');
      await serve({ ...opts, allowedRoot: opts.allowedRoot?.length ? opts.allowedRoot : ['/var/lib/kubelet'] });
    });
}

// Each command's definitions are loaded when it is named, so that a person's `vpool-csi client ...`
// reads and builds only the client's (bench/footprint.ts); help, completion (made from the whole tree)
// and an unknown name (commander suggests the nearest) get them all.
const COMMANDS: Record<string, () => Promise<void>> = {
  serve: async () => addServeCommand(program),
  client: async () => (await import('./cli/client.js')).addClientCommands(program),
  status: async () => (await import('./cli/status.js')).addStatusCommand(program),
  pool: async () => (await import('./cli/pool.js')).addPoolCommands(program),
  reconcile: async () => (await import('./cli/reconcile.js')).addReconcileCommand(program),
  'check-volume': async () => (await import('./cli/check-volume.js')).addCheckVolumeCommand(program),
  'transfer-signer': async () => (await import('./cli/transfer-signer.js')).addTransferSignerCommand(program),
  'snapshot-router': async () => (await import('./cli/serve-router.js')).addSnapshotRouterCommand(program),
  backup: async () => (await import('./cli/backup.js')).addBackupCommands(program),
  completion: async () => (await import('./cli/completion.js')).addCompletionCommand(program),
};
const named = process.argv[2];
const wanted = named === '--version' || named === '-V' ? [] : named && named !== 'completion' && Object.hasOwn(COMMANDS, named) ? [named] : Object.keys(COMMANDS);
for (const name of wanted) await COMMANDS[name]!();

// A mistake on the command line exits 2 (docs/cli.md), as commander's own usage errors are made to.
const USAGE = 2;
const usageExits = (c: Command): void => {
  c.exitOverride((err) => process.exit(err.exitCode === 0 ? 0 : USAGE));
  c.commands.forEach(usageExits);
};
usageExits(program);

program.parseAsync(process.argv).catch((err: unknown) => {
  process.stderr.write(`vpool-csi: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(err instanceof Error && err.name === 'UsageError' ? USAGE : 1);
});
