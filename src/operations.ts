import { AsyncLocalStorage } from 'node:async_hooks';

/**
 * Copies under way in this driver (a restore or clone made here, a volume received from another node),
 * with how far each has come, for `vpool-csi client` to draw while it waits on the call, and for status.
 * The controller opens one around the backend's create; whoever moves the bytes, however deep, reports
 * through the async context (reportProgress), so no signature between them changes.
 * Failure model: in memory only; a restart forgets them with the work itself (the CO's retry starts
 * again). Bounded by the copies running, which the volume locks bound.
 */
export interface OperationView {
  /** 'copy' (in this pool), 'receive' (from another node) or 'move' (a live volume's extents to its tier). */
  kind: 'copy' | 'receive' | 'move';
  /** The CSI name of the volume being made (the client's --name). */
  name: string;
  volumeId: string;
  /** What it is a copy of: "snapshot snap-...", "volume vol-...". */
  source: string;
  /** The node it comes from, for a receive. */
  fromNode?: string;
  doneBytes: number;
  /** The bytes the copy moves at most (the source's size, or its allocated bytes for a sparse copy). */
  totalBytes: number;
  /** Whether whoever moves the bytes reports them (the libvirt pool's copies do not): until then the bytes say nothing. */
  reported: boolean;
  /** 'sync': every byte is written and the copy waits for the disk to hold them (the page cache's flush). */
  phase: 'copy' | 'sync';
  startedAt: string;
}

export interface ProgressReporter {
  /** How far the copy has come; the total where the reporter knows it better than the controller did. */
  bytes(doneBytes: number, totalBytes?: number): void;
  /** Every byte written; now waiting for the disk. */
  syncing(): void;
}

const running = new Set<OperationView>();
const current = new AsyncLocalStorage<OperationView>();

export async function underOperation<T>(op: Omit<OperationView, 'doneBytes' | 'startedAt' | 'reported' | 'phase'>, fn: () => Promise<T>): Promise<T> {
  const view: OperationView = { ...op, doneBytes: 0, reported: false, phase: 'copy', startedAt: new Date().toISOString() };
  running.add(view);
  try {
    return await current.run(view, fn);
  } finally {
    running.delete(view);
  }
}

/**
 * A reporter bound to the operation this code runs under (taken now, so that callbacks of streams and
 * timers report to it wherever they run), or null when there is none (a CLI command, a test).
 */
export function progressReporter(): ProgressReporter | null {
  const op = current.getStore();
  if (!op) return null;
  return {
    bytes(done, total) {
      op.reported = true;
      if (total !== undefined && total > 0) op.totalBytes = total;
      op.doneBytes = Math.max(op.doneBytes, Math.min(done, op.totalBytes || done));
    },
    syncing() {
      op.phase = 'sync';
    },
  };
}

export function operationsInProgress(): OperationView[] {
  return [...running].map((o) => ({ ...o }));
}
