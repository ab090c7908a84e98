import { readFileSync } from 'node:fs';
import path from 'node:path';
import { PROJECT_ROOT } from '../../project.js';
import type { CsiClient } from '../client.js';
import { socketPath } from '../socket-path.js';
import { WireCodec, type WireDescriptor } from './codec.js';
import { UnaryChannel } from './unary-call.js';

/** The CSI calls a person makes from the command line: every unary call of the five services. */
export type CsiCalls = Omit<CsiClient, 'getMetadataAllocated' | 'getMetadataDelta' | 'streamMetadataDelta'>;

let codec: WireCodec | undefined;
let descriptor: WireDescriptor | undefined;

function load(): { codec: WireCodec; descriptor: WireDescriptor } {
  if (!codec) {
    descriptor = JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'dist', 'src', 'csi', 'csi-wire.json'), 'utf8')) as WireDescriptor;
    codec = new WireCodec(descriptor);
  }
  return { codec, descriptor: descriptor! };
}

/**
 * The CLI's CSI client: the same calls as connectCsi (client.ts), coded by the CLI's own codec and sent
 * over one HTTP/2 connection (unary-call.ts) instead of through protobufjs and grpc-js. `signal` cancels
 * every call under way.
 */
export function connectCsiWire(endpoint: string, signal?: AbortSignal): CsiCalls {
  const { codec, descriptor } = load();
  const channel = new UnaryChannel(socketPath(endpoint));
  const calls: Record<string, unknown> = { close: () => channel.close() };
  for (const [service, methods] of Object.entries(descriptor.services)) {
    if (!service.startsWith('csi.v1.')) continue;
    for (const [method, m] of Object.entries(methods)) {
      if (m.responseStream) continue;
      calls[method.charAt(0).toLowerCase() + method.slice(1)] = async (req: object, options?: { deadline?: number | Date }) =>
        codec.decode(m.response, await channel.call(`/${service}/${method}`, codec.encode(m.request, req), { deadline: options?.deadline, signal }));
    }
  }
  return calls as unknown as CsiCalls;
}
