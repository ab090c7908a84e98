import { snapshotLock, volumeLock } from '../locks.js';
import { errorMessage } from '../errors.js';
import type { KeyedLocks } from '../locks.js';
import { log } from '../log.js';
import type { PoolBackend } from '../pool/backend.js';
import { EventRecorder } from './events.js';
import type { Kube } from './kube.js';
import { orphanCounts, reconcileOrphans, type OrphanReport } from './orphans.js';

export interface OrphanCheckOptions {
  driver: string;
  node: string;
  topology: Record<string, string>;
  intervalMs: number;
  /** Delete orphans older than this; undefined: report only (dry run). */
  deleteAfterMs?: number;
}

/**
 * The periodic orphan check of a running driver: the same reconcileOrphans as `vpool-csi
 * reconcile`, under the driver's own volume and snapshot locks, one run at a time.
 */
export class OrphanChecks {
  private timer?: NodeJS.Timeout;
  private running: Promise<void> | null = null;
  last?: OrphanReport;

  constructor(
    private readonly backend: PoolBackend,
    private readonly kube: Kube,
    private readonly locks: KeyedLocks,
    private readonly opts: OrphanCheckOptions,
  ) {}

  start(): void {
    // The first check waits one interval: at startup the provisioner may still be catching up.
    this.timer = setInterval(() => void this.runOnce(), this.opts.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  counts(): Record<string, number> | undefined {
    return this.last && orphanCounts(this.last);
  }

  runOnce(): Promise<void> {
    this.running ??= this.check().finally(() => (this.running = null));
    return this.running;
  }

  private async check(): Promise<void> {
    const [key, value] = Object.entries(this.opts.topology)[0] ?? ['', ''];
    try {
      this.last = await reconcileOrphans(this.backend, this.kube, {
        driver: this.opts.driver,
        node: this.opts.node,
        topologyKey: key,
        topologyValue: value,
        dryRun: this.opts.deleteAfterMs === undefined,
        gracePeriodMs: this.opts.deleteAfterMs ?? 0,
        locked: (kind, id, fn) => this.locks.with([kind === 'volume' ? volumeLock(id) : snapshotLock(id)], fn),
        events: new EventRecorder(this.kube, 'vpool-csi-orphans', this.opts.node),
      });
      const c = orphanCounts(this.last);
      log[c.volume + c.snapshot + c.unfinished_volume + c.missing_volume ? 'warn' : 'info']('orphan check', { ...c, dryRun: this.last.dryRun, deleted: [...this.last.volumes, ...this.last.snapshots, ...this.last.unfinished].filter((i) => i.action === 'deleted').map((i) => i.id) });
    } catch (e) {
      log.error('orphan check failed', { error: errorMessage(e) });
    }
  }
}
