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

type SendsListener = { changed(sends: number): void; turnedAway(): void };
const sendsListeners: SendsListener[] = [];

/** Sends under way at this node, and sends turned away at its limit (--transfer-max-sends). */
export function onSends(listener: SendsListener): void {
  sendsListeners.push(listener);
}

export function sendsChanged(sends: number): void {
  for (const l of sendsListeners) l.changed(sends);
}

export function sendTurnedAway(): void {
  for (const l of sendsListeners) l.turnedAway();
}
