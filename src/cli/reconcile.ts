import { Option, type Command } from 'commander';
import os from 'node:os';
import path from 'node:path';
import type { Kube } from '../cluster/kube.js';
import type { BackendOptions } from './backends.js';
import type { VolumePool } from '../cluster/volume-pool.js';
import { TOPOLOGY_KEY } from '../driver/context.js';
import { parseDuration } from '../units.js';
import { chooseFormat, printList } from './view/output.js';
import { orphanRows, orphanView } from './view/admin-views.js';

interface ReconcileFlags {
  dryRun?: boolean;
  gracePeriod: string;
  backend: 'file' | 'lvm';
  poolDir?: string;
  vg?: string;
  poolFromCluster?: string;
  nodeId?: string;
  driverName: string;
  kubeconfig?: string;
  events: boolean;
  /** Unlike the client's, json by default: a reconcile runs from cron and scripts more than by hand. */
  output: string;
  headers: boolean;
}

/** The pool the flags name, or the one a VolumePool holds; the reserve does not matter to a reconcile. */
async function poolToReconcile(f: ReconcileFlags, kube: Kube): Promise<BackendOptions> {
  if (f.poolFromCluster) {
    const [{ GROUP, PLURAL, poolSettings, VERSION }, { poolOptions }] = await Promise.all([import('../cluster/volume-pool.js'), import('./serve-cluster.js')]);
    const pool = (await kube.custom.getClusterCustomObject({ group: GROUP, version: VERSION, plural: PLURAL, name: f.poolFromCluster })) as VolumePool;
    return poolOptions(poolSettings(pool));
  }
  if (f.backend === 'lvm') {
    if (!f.vg) throw new Error('--vg is required with --backend lvm');
    return { kind: 'lvm', vg: f.vg, reserveBytes: 0, overprovisionRatio: 1 };
  }
  if (!f.poolDir) throw new Error('--pool-dir is required with --backend file');
  return { kind: 'file', poolDir: path.resolve(f.poolDir), reserveBytes: 0 };
}

/** `vpool-csi reconcile`: this node's pool against the cluster's PVs and VolumeSnapshotContents. */
export function addReconcileCommand(program: Command): void {
  program
    .command('reconcile')
    .description('report (and without --dry-run delete) volumes and snapshots of this node\'s pool that no PersistentVolume or VolumeSnapshotContent names, and PVs whose volume is gone')
    .option('--dry-run', 'report only; delete nothing')
    .option('--grace-period <duration>', 'orphans younger than this are never deleted (a PV may still be on its way)', '1h')
    .addOption(new Option('--backend <kind>', 'pool backend').choices(['file', 'lvm']).default('file'))
    .option('--pool-dir <dir>', 'file backend: the pool directory')
    .option('--vg <name>', 'lvm backend: the volume group')
    .option('--pool-from-cluster <volumepool>', 'take the pool from this VolumePool instead')
    .option('--node-id <id>', 'this node\'s ID, as in the PVs\' topology (default: the hostname)')
    .option('--driver-name <name>', 'the CSI driver name in the PVs', 'vpool.csi.dev')
    .option('--kubeconfig <file>', 'default: $KUBECONFIG, else the pod\'s service account')
    .option('--no-events', 'do not send Kubernetes Events')
    .option('-o, --output <format>', 'json, yaml, table, wide or name', 'json')
    .option('--no-headers', 'a table without its header line')
    .action(async (f: ReconcileFlags) => {
      const graceMs = parseDuration(f.gracePeriod);
      // The cluster client is loaded by the commands that talk to the cluster only.
      const [{ loadKube }, { reconcileOrphans }, { EventRecorder }, { openBackend }] = await Promise.all([
        import('../cluster/kube.js'),
        import('../cluster/orphans.js'),
        import('../cluster/events.js'),
        import('./backends.js'),
      ]);
      const kube = loadKube(f.kubeconfig);
      const node = f.nodeId || os.hostname();
      // As a node-side process: no sweep, since a driver may be running on this pool with creates in progress.
      const opened = await openBackend(await poolToReconcile(f, kube), 'node');
      if (!opened.backend) throw new Error('this backend has no pool to reconcile here');
      const report = await reconcileOrphans(opened.backend, kube, {
        driver: f.driverName,
        node,
        topologyKey: TOPOLOGY_KEY,
        topologyValue: node,
        dryRun: !!f.dryRun,
        gracePeriodMs: graceMs,
        events: f.events ? new EventRecorder(kube, 'vpool-csi-reconcile', node) : undefined,
      });
      const format = chooseFormat(f.output, !!process.stdout.isTTY);
      const printed = await printList(orphanView(), orphanRows(report), report, { format, headers: f.headers, width: process.stdout.isTTY ? process.stdout.columns : undefined, now: Date.now() }, false);
      process.stdout.write(printed.stdout);
      process.stderr.write(printed.stderr);
      if (report.volumes.concat(report.snapshots, report.unfinished).some((i) => i.action.startsWith('delete failed'))) process.exitCode = 1;
    });
}
