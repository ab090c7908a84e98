import { EventRecorder } from '../cluster/events.js';
import type { Kube } from '../cluster/kube.js';
import { OrphanChecks } from '../cluster/orphan-checks.js';
import { PoolAgent } from '../cluster/pool-agent.js';
import { SnapshotImport } from '../cluster/snapshot-import.js';
import type { PoolSettings } from '../cluster/volume-pool.js';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import { deviceMapperAvailable, LvmCli } from '../pool/lvm/lvm-cli.js';
import type { PoolBackend } from '../pool/backend.js';
import type { BackendOptions } from './backends.js';

/**
 * What a node plugin of a node-local pool does with the Kubernetes API, loaded only when it has
 * one: build and report every VolumePool that selects the node (whenever the CRD is installed),
 * serve one of them when asked to, check for orphans, and take up imported snapshots it holds.
 */
export interface ClusterOptions {
  kube: Kube;
  node: string;
  /** Build and report VolumePools. */
  volumePools: boolean;
  resyncMs: number;
  /** The VolumePool to serve (--pool-from-cluster). */
  serve?: string;
  /** Called with the served VolumePool's pool once it is usable here; throws when the pool cannot be opened. */
  openServed?: (pool: BackendOptions) => Promise<PoolBackend | undefined>;
  /** Tells the driver why the served pool cannot serve yet (undefined: it serves). */
  setPending?: (reason: string | undefined, nothingHere?: boolean) => void;
  orphans?: { driver: string; topology: Record<string, string>; intervalMs: number; deleteAfterMs?: number; locks: ConstructorParameters<typeof OrphanChecks>[2] };
  /** Label imported VolumeSnapshotContents whose snapshot this node holds, for this node's csi-snapshotter. */
  snapshotImport?: { driver: string; intervalMs: number };
}

export interface ClusterRun {
  /** Starts the orphan checks and snapshot imports on this pool: the caller's, when its pool opens. */
  poolOpened(backend: PoolBackend | undefined): void;
  orphanCounts(): Record<string, number> | undefined;
}

/** The pool a VolumePool describes, as the factory takes it. */
export function poolOptions(s: PoolSettings): BackendOptions {
  return s.backend === 'lvm'
    ? { kind: 'lvm', vg: s.volumeGroup, reserveBytes: s.reserveBytes, overprovisionRatio: s.overprovisionRatio }
    : { kind: 'file', poolDir: s.directory, reserveBytes: s.reserveBytes };
}

export async function startCluster(o: ClusterOptions): Promise<ClusterRun> {
  let orphans: OrphanChecks | undefined;
  let imports: SnapshotImport | undefined;
  const run: ClusterRun = {
    poolOpened(backend) {
      if (!backend) return;
      if (o.snapshotImport && !imports) {
        imports = new SnapshotImport(backend, o.kube, { driver: o.snapshotImport.driver, node: o.node, intervalMs: o.snapshotImport.intervalMs });
        imports.start();
      }
      if (!o.orphans || orphans) return;
      orphans = new OrphanChecks(backend, o.kube, o.orphans.locks, { driver: o.orphans.driver, node: o.node, topology: o.orphans.topology, intervalMs: o.orphans.intervalMs, deleteAfterMs: o.orphans.deleteAfterMs });
      orphans.start();
    },
    orphanCounts: () => orphans?.counts(),
  };
  if (!o.volumePools && !o.serve) return run;

  let served: PoolSettings | undefined;
  let backend: PoolBackend | undefined;
  let opening = false;
  const events = new EventRecorder(o.kube, 'vpool-csi-node', o.node);
  const nodeRef = { apiVersion: 'v1', kind: 'Node', name: o.node };
  let told = '';
  // A named pool that cannot serve says so everywhere at once: Probe, the log, an Event on the Node (once per reason).
  const pending = (reason: string | undefined, nothingHere = false) => {
    o.setPending?.(reason, nothingHere);
    if (!reason || reason === told) return;
    told = reason;
    log.warn('not serving yet', { pool: o.serve, reason });
    void events.record(nodeRef, 'Warning', 'VolumePoolNotServed', `${o.node}: ${reason}`).catch((e) => log.warn('event not recorded', { error: errorMessage(e) }));
  };

  const agent = new PoolAgent(o.kube, {
    node: o.node,
    lvm: new LvmCli({ activation: deviceMapperAvailable() }),
    resyncMs: o.resyncMs,
    served: o.serve,
    only: o.volumePools ? undefined : o.serve,
    onReconciled: (pool, settings, observed) => {
      if (pool !== o.serve) return;
      if (!settings || observed.phase === 'Failed') return pending(`VolumePool ${pool} failed on this node: ${observed.lastError ?? 'see its status'}`);
      if (backend) {
        if (settings.backend !== served?.backend || settings.volumeGroup !== served?.volumeGroup || settings.directory !== served?.directory) log.warn('VolumePool now names another pool; restart the driver to serve it', { pool });
        backend.applySettings?.({ reserveBytes: settings.reserveBytes, overprovisionRatio: settings.overprovisionRatio });
        return;
      }
      if (opening) return;
      opening = true;
      void o.openServed!(poolOptions(settings)).then(
        (b) => {
          backend = b;
          served = settings;
          told = '';
          pending(undefined);
          log.info('serving the pool of VolumePool', { pool, backend: settings.backend, vg: settings.volumeGroup, directory: settings.backend === 'file' ? settings.directory : undefined });
        },
        (e: unknown) => pending(`the pool of VolumePool ${pool} cannot be opened: ${errorMessage(e)}`),
      ).finally(() => (opening = false));
    },
  });
  await agent.start();
  if (o.serve) {
    // Missing, unselected or without a CRD: nothing is reconciled, so nothing else would say it.
    let said = false;
    const check = () => {
      if (backend) return;
      const name = o.serve!;
      const reason = agent.crdMissing
        ? `the VolumePool CRD is not installed, so VolumePool ${name} cannot be served`
        : !agent.listed
          ? 'waiting for the VolumePools to be listed'
          : !agent.get(name)
            ? `VolumePool ${name} does not exist`
            : agent.selectsNode(name) === false
              ? `VolumePool ${name} does not select node ${o.node} (spec.nodeSelector)`
              : undefined;
      // None of these builds a pool here: the node holds nothing of the driver's (what the snapshot router asks).
      if (reason) pending(reason, reason !== 'waiting for the VolumePools to be listed');
      else if (said) pending(`VolumePool ${name} is being built on this node`);
      said = reason !== undefined;
    };
    check();
    setInterval(check, 10_000).unref();
  }
  return run;
}
