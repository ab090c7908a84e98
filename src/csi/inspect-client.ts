import { socketPath } from './socket-path.js';
import { INSPECT_SERVICE, MAX_BYTES, MAX_PAGE } from './inspect-service.js';
import { STATUS, UnaryChannel } from './wire/unary-call.js';
import type { DriverStatus, VolumeDetail } from '../driver/status/types.js';
import type { OperationView } from '../operations.js';

/** A client of vpool.v1.Inspect (inspect-service.ts) on a driver's CSI socket, over the CLI's own HTTP/2 call (wire/unary-call.ts). */
export function connectInspect(endpoint: string, signal?: AbortSignal) {
  const channel = new UnaryChannel(socketPath(endpoint));
  const call = async <Req, Res>(name: keyof typeof INSPECT_SERVICE, req: Req, deadlineMs = 60_000): Promise<Res> => {
    const m = INSPECT_SERVICE[name];
    const answer = await channel.call(m.path, m.requestSerialize(req as never), { deadline: Date.now() + deadlineMs, signal, maxReceiveBytes: MAX_BYTES });
    return m.responseDeserialize(answer) as Res;
  };
  return {
    status: () => call<object, DriverStatus>('Status', {}),
    /** The copies under way; asked every second while a client waits, so it gives up after 2 s. */
    operations: () => call<object, { operations: OperationView[] }>('Operations', {}, 2000),
    volume: (id: string) => call<{ id: string }, VolumeDetail>('Volume', { id }),
    page: (after: string, limit: number) => call<{ after: string; limit: number }, { volumes: VolumeDetail[]; next: string }>('Volumes', { after, limit: Math.min(limit, MAX_PAGE) }),
    /** Every volume, page by page. */
    async volumes(): Promise<VolumeDetail[]> {
      const out: VolumeDetail[] = [];
      let after = '';
      for (;;) {
        const page = await call<{ after: string; limit: number }, { volumes: VolumeDetail[]; next: string }>('Volumes', { after, limit: MAX_PAGE });
        out.push(...page.volumes);
        if (!page.next) return out;
        // IDs are listed in order: a driver whose next page would not move on is not followed round in a circle.
        if (page.next <= after) throw new Error(`the driver's volume pages do not move on (after ${after}, next ${page.next})`);
        after = page.next;
      }
    },
    close: () => channel.close(),
  };
}

/** The driver is older than this client (no Inspect service): the caller shows what CSI alone says. */
export function isUnimplemented(err: unknown): boolean {
  return err instanceof Error && (err as { code?: number }).code === STATUS.UNIMPLEMENTED;
}
