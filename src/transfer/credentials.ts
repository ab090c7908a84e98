/** This node's transfer key and certificate, and the CAs it trusts (PEM), as they are now. */
export interface TransferMaterial {
  key: string;
  cert: string;
  /** Every CA accepted for peers: the current one and, during a rotation, the one before it. */
  trust: string[];
}

/**
 * The transfer's TLS material, changed while the plugin runs (a renewed certificate, a rotated CA):
 * the listener takes each change for its next handshakes and the client for its next request, so
 * neither a renewal nor a rotation restarts anything. Until the first certificate arrives there is
 * none: the listener refuses handshakes and the client has nothing to ask with.
 */
export class TransferCredentials {
  private current: TransferMaterial | null = null;
  private readonly listeners: Array<(m: TransferMaterial) => void> = [];
  private waiters: Array<(m: TransferMaterial) => void> = [];

  get material(): TransferMaterial | null {
    return this.current;
  }

  set(m: TransferMaterial): void {
    this.current = m;
    for (const l of this.listeners) l(m);
    const waiting = this.waiters;
    this.waiters = [];
    for (const w of waiting) w(m);
  }

  onChange(l: (m: TransferMaterial) => void): void {
    this.listeners.push(l);
  }

  /** The material once there is some. */
  ready(): Promise<TransferMaterial> {
    return this.current ? Promise.resolve(this.current) : new Promise((r) => this.waiters.push(r));
  }
}
