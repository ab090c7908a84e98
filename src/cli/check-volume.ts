import type { Command } from 'commander';
import { parseDuration, parseQuantity } from '../units.js';

/** `vpool-csi check-volume`: the chart's `helm test` (templates/tests/), run in a pod that mounts a claim. */
export function addCheckVolumeCommand(program: Command): void {
  program
    .command('check-volume')
    .description('write and read back a mounted claim, expand it through the cluster and see the filesystem grow (helm test)')
    .requiredOption('--path <dir>', 'where the claim is mounted in this pod')
    .requiredOption('--claim <name>', 'the PersistentVolumeClaim mounted there')
    .option('--namespace <namespace>', 'the claim\'s namespace (default: $POD_NAMESPACE)')
    .option('--grow-to <size>', 'expand the claim to this size (e.g. 2Gi); without it, no expansion')
    .option('--timeout <duration>', 'how long the expansion may take', '5m')
    .option('--kubeconfig <file>', 'default: $KUBECONFIG, else the pod\'s service account')
    .action(async (o: { path: string; claim: string; namespace?: string; growTo?: string; timeout: string; kubeconfig?: string }) => {
      const namespace = o.namespace ?? process.env.POD_NAMESPACE;
      if (!namespace) throw new Error('--namespace is required (or POD_NAMESPACE)');
      const [{ loadKube }, { checkVolume }] = await Promise.all([import('../cluster/kube.js'), import('../cluster/check-volume.js')]);
      const report = await checkVolume(loadKube(o.kubeconfig), {
        path: o.path,
        namespace,
        claim: o.claim,
        growToBytes: o.growTo ? parseQuantity(o.growTo) : 0,
        timeoutMs: parseDuration(o.timeout),
        log: (line) => process.stderr.write(`${line}\n`),
      });
      process.stdout.write(`${JSON.stringify(report)}\n`);
    });
}
