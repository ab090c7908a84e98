import type { OpenPool } from './backends.js';

/** An open pool and the backend it is of (a VolumePool's may differ from --backend). */
export interface ServedOpen {
  kind: string;
  pool: OpenPool;
}

/**
 * The pool this process serves: open from the start (the pool flags), or once a VolumePool is
 * built on this node. Parts that need the pool take this and act when it opens, so none can be
 * wired before the pool exists and miss it; until then it says why it cannot serve.
 */
export class ServedPool {
  private opened?: ServedOpen;
  private reason?: string;
  private readonly listeners: Array<(o: ServedOpen) => void> = [];

  private constructor(opened: ServedOpen | undefined, reason: string | undefined) {
    this.opened = opened;
    this.reason = reason;
  }

  static open(kind: string, pool: OpenPool): ServedPool {
    return new ServedPool({ kind, pool }, undefined);
  }

  static waiting(reason: string): ServedPool {
    return new ServedPool(undefined, reason);
  }

  get current(): ServedOpen | undefined {
    return this.opened;
  }

  /** Why it cannot serve now (not open, or open but its VolumePool failed since), or undefined. */
  get notServing(): string | undefined {
    return this.reason ?? (this.opened ? undefined : 'starting');
  }

  /**
   * Why this node has no pool to serve at all (its VolumePool does not exist or does not select it, the
   * CRD is missing), as opposed to one not open yet: the snapshot router then counts it as holding nothing.
   */
  private nothingHere?: string;

  get holdsNothing(): string | undefined {
    return this.opened ? undefined : this.nothingHere;
  }

  setReason(reason: string | undefined, nothingHere = false): void {
    this.reason = reason;
    this.nothingHere = nothingHere ? reason : undefined;
  }

  /** The pool opened: every part waiting for it starts now. A pool opens once per process. */
  setOpen(kind: string, pool: OpenPool): void {
    if (this.opened) throw new Error('the served pool is already open; restart the driver to serve another');
    this.opened = { kind, pool };
    for (const l of this.listeners.splice(0)) l(this.opened);
  }

  /** Runs fn with the pool when it opens (at once when it is open already). */
  whenOpen(fn: (o: ServedOpen) => void): void {
    if (this.opened) fn(this.opened);
    else this.listeners.push(fn);
  }
}
