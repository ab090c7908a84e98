/**
 * kubectl-vpool: `kubectl vpool pools|volumes|orphans`, the driver seen from the Kubernetes API. One
 * file on PATH (dist/kubectl-plugin/kubectl-vpool, bundled by scripts/bundle-kubectl-plugin.mjs), Node.js 20 or later.
 * Reads only, through kubectl (api.ts); honours KUBECONFIG, --kubeconfig, --context and -n/-A.
 */
import { parseArgs } from 'node:util';
import { chooseFormat, printList, UsageError, type ListView, type OutputOptions } from '../cli/view/output.js';
import { ApiError, currentNamespace, list, type ApiOptions } from './api.js';
import { orphanRows, orphanView, poolRows, poolView, volumeRows, volumeView, type KubeEvent, type PersistentVolume, type Pod, type SnapshotContent, type StorageCapacity, type StorageClass, type VolumeAttachment, type VolumePool } from './views.js';

const USAGE = `kubectl vpool: vpool-csi's pools, volumes and orphans, from the Kubernetes API

  kubectl vpool pools              each node's pool: backend, size, free, volumes, health
  kubectl vpool volumes [-n NS|-A] the driver's claims: PV, node, size, attachments, pods, snapshots
  kubectl vpool orphans            what the node plugins found in their pools with no PV or VolumeSnapshotContent

Flags: --kubeconfig FILE, --context NAME, -n/--namespace NS, -A/--all-namespaces,
       -o/--output table|wide|json|yaml|name, --no-headers, --driver NAME (default vpool.csi.dev),
       --request-timeout SECONDS (default 30)
Exit codes: 0 done, 2 usage, 4 a read of the API failed.
`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      kubeconfig: { type: 'string' },
      context: { type: 'string' },
      namespace: { type: 'string', short: 'n' },
      'all-namespaces': { type: 'boolean', short: 'A' },
      output: { type: 'string', short: 'o' },
      'no-headers': { type: 'boolean' },
      driver: { type: 'string', default: 'vpool.csi.dev' },
      'request-timeout': { type: 'string', default: '30' },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help || positionals.length === 0) {
    process.stdout.write(USAGE);
    return values.help ? 0 : 2;
  }
  const [what, ...rest] = positionals;
  if (rest.length) throw new UsageError(`unexpected ${rest.join(' ')}`);
  const timeoutSeconds = Number(values['request-timeout']);
  if (!Number.isInteger(timeoutSeconds) || timeoutSeconds < 1) throw new UsageError('--request-timeout: a whole number of seconds');
  const api: ApiOptions = { kubectl: process.env.KUBECTL ?? 'kubectl', kubeconfig: values.kubeconfig, context: values.context, timeoutSeconds };
  // kubectl's own defaults: a table for anyone, whatever standard output is.
  const out: OutputOptions = { format: chooseFormat(values.output ?? 'table', true), headers: !values['no-headers'], width: process.stdout.isTTY ? process.stdout.columns : undefined, now: Date.now() };
  const driver = values.driver!;
  const show = async <R>(view: ListView<R>, rows: R[]) => {
    const p = await printList(view, rows, { items: rows }, out, false);
    process.stdout.write(p.stdout);
    process.stderr.write(p.stderr);
    return 0;
  };
  switch (what) {
    case 'pools': {
      const [pools, capacities, classes] = await Promise.all([
        list<VolumePool>(api, '/apis/vpool.dev/v1alpha1/volumepools', true),
        list<StorageCapacity>(api, '/apis/storage.k8s.io/v1/csistoragecapacities', true),
        list<StorageClass>(api, '/apis/storage.k8s.io/v1/storageclasses'),
      ]);
      return show(poolView(), poolRows(pools, capacities, classes, driver));
    }
    case 'volumes': {
      const all = !!values['all-namespaces'];
      const namespace = all ? undefined : (values.namespace ?? (await currentNamespace(api)));
      const podsPath = namespace === undefined ? '/api/v1/pods' : `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods`;
      const [pvs, attachments, contents, pods] = await Promise.all([
        list<PersistentVolume>(api, '/api/v1/persistentvolumes'),
        list<VolumeAttachment>(api, '/apis/storage.k8s.io/v1/volumeattachments', true),
        list<SnapshotContent>(api, '/apis/snapshot.storage.k8s.io/v1/volumesnapshotcontents', true),
        list<Pod>(api, podsPath, true),
      ]);
      return show(volumeView(out.now, all), volumeRows(pvs, attachments, contents, pods, driver, namespace));
    }
    case 'orphans': {
      // Orphans are Events on Node objects (and VolumeMissing on a PV): cluster-scoped objects' Events live in "default".
      const events = await list<KubeEvent>(api, '/api/v1/namespaces/default/events');
      return show(orphanView(out.now), orphanRows(events));
    }
    default:
      throw new UsageError(`unknown command ${JSON.stringify(what)}: pools, volumes or orphans`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    const usage = err instanceof UsageError || (err instanceof TypeError && (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS'));
    process.stderr.write(`kubectl vpool: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(usage ? 2 : err instanceof ApiError ? 4 : 1);
  },
);
