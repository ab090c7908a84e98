import { errorMessage } from '../errors.js';
import { isId } from '../ids.js';
import { log } from '../log.js';
import type { PoolBackend } from '../pool/backend.js';
import { statusOf, type Kube } from './kube.js';

/**
 * The label external-snapshotter's csi-snapshotter, run with --node-deployment as the chart runs it,
 * selects VolumeSnapshotContents by (cmd/csi-snapshotter/main.go: a label selector
 * `snapshot.storage.kubernetes.io/managed-by=$NODE_NAME` on its informer). The snapshot controller
 * sets it on the contents it makes for snapshots of a node's volumes; a content made by hand (a
 * pre-provisioned snapshot: an import, a backup brought back) carries none, so no node's snapshotter
 * ever looks at it and it never becomes ready.
 */
export const MANAGED_BY = 'snapshot.storage.kubernetes.io/managed-by';
const API = { group: 'snapshot.storage.k8s.io', version: 'v1', plural: 'volumesnapshotcontents' };

interface Content {
  metadata: { name: string; resourceVersion?: string; deletionTimestamp?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  spec?: { driver?: string; source?: { snapshotHandle?: string; volumeHandle?: string } };
  status?: { snapshotHandle?: string };
}

/**
 * Set by the snapshot-controller on the member contents it makes for a VolumeGroupSnapshot
 * (external-snapshotter v8.3.0 pkg/utils VolumeGroupSnapshotHandleAnnotation): their snapshot is the
 * member's handle in status.snapshotHandle, and they carry no node label either.
 */
const GROUP_HANDLE = 'groupsnapshot.storage.k8s.io/volumeGroupSnapshotHandle';

/** The snapshot a content names: an import's handle (spec), or a group member's (status, on a content the snapshot-controller made for a group). */
function handleOf(c: Content): string | undefined {
  return c.spec?.source?.snapshotHandle ?? (c.metadata.annotations?.[GROUP_HANDLE] ? c.status?.snapshotHandle : undefined);
}

export interface SnapshotImportOptions {
  driver: string;
  /** This node's name, as the node's csi-snapshotter has it ($NODE_NAME, the chart's --node-id). */
  node: string;
  intervalMs: number;
}

/**
 * Makes imported snapshots work with node-local pools: every VolumeSnapshotContent of this driver
 * that names an existing snapshot by its handle and that no node manages is labelled for this node
 * when this node's pool holds that snapshot. This node's csi-snapshotter then takes it up (ListSnapshots
 * with the handle, here) and marks it ready. A content whose snapshot is on no node stays as it is.
 * Group members' contents are labelled the same way: the label is also how a restore on another node
 * finds the node holding a snapshot (cluster/transfer-access.ts), and the snapshot-controller sets
 * none on them.
 */
export class SnapshotImport {
  private timer?: NodeJS.Timeout;
  private running: Promise<number> | null = null;

  constructor(
    private readonly backend: PoolBackend,
    private readonly kube: Kube,
    private readonly opts: SnapshotImportOptions,
  ) {}

  start(): void {
    void this.runOnce();
    this.timer = setInterval(() => void this.runOnce(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** One pass; the number of contents labelled for this node. */
  runOnce(): Promise<number> {
    this.running ??= this.pass().finally(() => (this.running = null));
    return this.running;
  }

  private async pass(): Promise<number> {
    let contents: Content[];
    try {
      // Only the unlabelled ones: the API server filters, so a cluster's thousands of managed contents cost nothing here.
      contents = ((await this.kube.custom.listClusterCustomObject({ ...API, labelSelector: `!${MANAGED_BY}` })) as { items: Content[] }).items;
    } catch (err) {
      if (statusOf(err) !== 404) log.warn('cannot list VolumeSnapshotContents to find imported snapshots', { error: errorMessage(err) });
      return 0;
    }
    let labelled = 0;
    for (const c of contents) {
      const handle = handleOf(c);
      // The handle is written by hand (or by whoever may write statuses): only something shaped like one of our snapshot IDs is looked up.
      if (c.spec?.driver !== this.opts.driver || !handle || !isId('snap', handle) || c.metadata.deletionTimestamp || c.metadata.labels?.[MANAGED_BY]) continue;
      if (!(await this.backend.getSnapshot(handle).catch(() => null))) continue;
      const body = { ...c, metadata: { ...c.metadata, labels: { ...c.metadata.labels, [MANAGED_BY]: this.opts.node } } };
      try {
        // A whole-object write at the resourceVersion read: a content changed meanwhile is a 409, taken up by the next pass.
        await this.kube.custom.replaceClusterCustomObject({ ...API, name: c.metadata.name, body });
        labelled++;
        log.info('an imported snapshot is on this node: its VolumeSnapshotContent is now managed here', { content: c.metadata.name, snapshot: handle, node: this.opts.node });
      } catch (err) {
        if (statusOf(err) !== 409 && statusOf(err) !== 404) log.warn('cannot label an imported VolumeSnapshotContent', { content: c.metadata.name, error: errorMessage(err) });
      }
    }
    return labelled;
  }
}
