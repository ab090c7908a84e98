/** One transfer as it ended: which way, how many data bytes, how long, and whether it completed. */
export interface TransferEnd {
  direction: 'sent' | 'received';
  bytes: number;
  seconds: number;
  ok: boolean;
}

type Listener = (t: TransferEnd) => void;
const listeners: Listener[] = [];

/** Metrics subscribe here rather than the transfer importing them (as exec's onCommand). */
export function onTransfer(listener: Listener): void {
  listeners.push(listener);
}

export function transferEnded(t: TransferEnd): void {
  for (const l of listeners) l(t);
}
