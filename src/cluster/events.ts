import { randomBytes } from 'node:crypto';
import { errorMessage } from '../errors.js';
import { log } from '../log.js';
import type { Kube } from './kube.js';

export interface InvolvedObject {
  apiVersion: string;
  kind: string;
  name: string;
  uid?: string;
  namespace?: string;
}

/**
 * Kubernetes Events (core/v1), as `kubectl describe` shows them. A reconciler runs again and again;
 * an Event is sent when its message for that object and reason changes, not on every pass, so
 * that a standing problem is one Event and not a flood. Sending is best-effort: a failure is logged
 * and never fails the work it reports on.
 */
export class EventRecorder {
  private readonly last = new Map<string, string>();

  constructor(
    private readonly kube: Kube,
    private readonly component: string,
    private readonly host: string,
  ) {}

  async record(obj: InvolvedObject, type: 'Normal' | 'Warning', reason: string, message: string): Promise<boolean> {
    const key = `${obj.kind}/${obj.namespace ?? ''}/${obj.name}/${obj.uid ?? ''}/${reason}`;
    if (this.last.get(key) === message) return false;
    this.last.set(key, message);
    if (this.last.size > 10_000) this.last.delete(this.last.keys().next().value as string);
    // Events of cluster-scoped objects live in "default", as the API server's own do.
    const namespace = obj.namespace ?? 'default';
    const now = new Date();
    try {
      await this.kube.core.createNamespacedEvent({
        namespace,
        body: {
          metadata: { name: `${obj.name}.${now.getTime().toString(16)}${randomBytes(3).toString('hex')}`, namespace },
          involvedObject: { apiVersion: obj.apiVersion, kind: obj.kind, name: obj.name, uid: obj.uid, namespace: obj.namespace },
          type,
          reason,
          message: message.slice(0, 1024),
          source: { component: this.component, host: this.host },
          reportingComponent: this.component,
          reportingInstance: this.host,
          firstTimestamp: now,
          lastTimestamp: now,
          count: 1,
        },
      });
      return true;
    } catch (e) {
      this.last.delete(key);
      log.warn('could not send an Event', { reason, object: obj.name, error: errorMessage(e) });
      return false;
    }
  }

  /** Forgets what was said about an object, so that the same message is sent again if it recurs. */
  forget(name: string): void {
    for (const k of this.last.keys()) if (k.split('/')[2] === name) this.last.delete(k);
  }
}
