import * as grpc from '@grpc/grpc-js';
import { socketPath } from './socket-path.js';
import { INSPECT_SERVICE, MAX_BYTES, MAX_PAGE } from './inspect-service.js';
import type { DriverStatus, VolumeDetail } from '../driver/status/types.js';

type Unary<Req, Res> = (req: Req, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: Res) => void) => grpc.ClientUnaryCall;

/** A client of vpool.v1.Inspect (inspect-service.ts) on a driver's CSI socket. */
export function connectInspect(endpoint: string, signal?: AbortSignal) {
  const Client = grpc.makeGenericClientConstructor(INSPECT_SERVICE, 'vpool.v1.Inspect');
  const c = new Client(`unix://${socketPath(endpoint)}`, grpc.credentials.createInsecure(), { 'grpc.max_receive_message_length': MAX_BYTES }) as unknown as Record<string, Unary<unknown, unknown>> & grpc.Client;
  const call = <Req, Res>(name: string, req: Req, deadlineMs = 60_000) =>
    new Promise<Res>((resolve, reject) => {
      const cancel = () => unary.cancel();
      const unary = c[name]!.call(c, req, { deadline: Date.now() + deadlineMs }, (err, res) => {
        signal?.removeEventListener('abort', cancel);
        if (err) reject(err);
        else resolve(res as Res);
      }) as unknown as grpc.ClientUnaryCall;
      if (signal?.aborted) unary.cancel();
      else signal?.addEventListener('abort', cancel, { once: true });
    });
  return {
    status: () => call<object, DriverStatus>('Status', {}),
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
        after = page.next;
      }
    },
    close: () => c.close(),
  };
}

/** The driver is older than this client (no Inspect service): the caller shows what CSI alone says. */
export function isUnimplemented(err: unknown): boolean {
  return err instanceof Error && (err as { code?: number }).code === grpc.status.UNIMPLEMENTED;
}
