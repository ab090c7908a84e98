import http2 from 'node:http2';
import net from 'node:net';

/**
 * One gRPC unary call over HTTP/2 on a unix socket, as the gRPC wire protocol describes it
 * (PROTOCOL-HTTP2.md: a POST of one length-prefixed message, the status in the trailers or, for a
 * trailers-only answer, in the headers), for the CLI: node's own http2 costs a start a fraction of
 * what loading grpc-js does (bench/footprint.ts). The driver serves with grpc-js; the tests drive it
 * with grpc-js too, so both sides of this are shown against the real thing.
 *
 * Failures are Errors carrying `code` (the gRPC status number) and `details`, as grpc-js's are, so
 * that one describer (cli/call-errors.ts) reads both.
 */

export const STATUS = { OK: 0, CANCELLED: 1, UNKNOWN: 2, DEADLINE_EXCEEDED: 4, RESOURCE_EXHAUSTED: 8, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14 } as const;

/** An HTTP status without a gRPC one, as gRPC's http-grpc-status-mapping.md (and grpc-js) read it. */
function fromHttp(status: number): number {
  if (status === 404) return STATUS.UNIMPLEMENTED;
  if (status === 429 || status === 502 || status === 503 || status === 504) return STATUS.UNAVAILABLE;
  if (status === 400) return STATUS.INTERNAL;
  return STATUS.UNKNOWN;
}

/** A stream the server reset, as grpc-js reads the HTTP/2 error code. */
function fromReset(code: number): { code: number; details: string } {
  if (code === http2.constants.NGHTTP2_REFUSED_STREAM) return { code: STATUS.UNAVAILABLE, details: 'the driver refused the stream (REFUSED_STREAM)' };
  if (code === http2.constants.NGHTTP2_CANCEL) return { code: STATUS.CANCELLED, details: 'the driver cancelled the call' };
  if (code === http2.constants.NGHTTP2_ENHANCE_YOUR_CALM) return { code: STATUS.RESOURCE_EXHAUSTED, details: 'the driver asked this client to calm down (ENHANCE_YOUR_CALM)' };
  return { code: STATUS.INTERNAL, details: `the driver reset the stream with HTTP/2 error ${code}` };
}

/** grpc-timeout takes at most 8 digits: milliseconds while they fit, then seconds, then hours (PROTOCOL-HTTP2.md). */
export function grpcTimeout(ms: number): string {
  const m = Math.max(1, Math.ceil(ms));
  if (m < 1e8) return `${m}m`;
  const s = Math.ceil(m / 1000);
  return s < 1e8 ? `${s}S` : `${Math.min(99_999_999, Math.ceil(s / 3600))}H`;
}

/** Node's timers fire at once past 2^31-1 ms (24.8 days): a longer deadline is waited for in steps. */
const MAX_TIMER_MS = 2 ** 31 - 1;

export class CallError extends Error {
  constructor(
    readonly code: number,
    readonly details: string,
  ) {
    super(`${code} ${details}`);
  }
}

export interface CallOptions {
  /** Milliseconds since the epoch (as grpc-js's deadline), or a Date. */
  deadline?: number | Date;
  signal?: AbortSignal;
  /** The largest answer taken (grpc-js's default is 4 MiB). */
  maxReceiveBytes?: number;
}

/** One HTTP/2 connection to a driver's socket, opened at the first call. */
export class UnaryChannel {
  private session?: http2.ClientHttp2Session;
  private connectError?: Error;

  constructor(private readonly socket: string) {}

  private open(): http2.ClientHttp2Session {
    if (this.session && !this.session.destroyed && !this.session.closed) return this.session;
    this.connectError = undefined;
    const s = http2.connect('http://localhost', { createConnection: () => net.connect(this.socket) });
    // A refused or missing socket ends the session with its errno; the calls under way read it from here.
    s.on('error', (err) => (this.connectError = err));
    this.session = s;
    return s;
  }

  call(path: string, message: Buffer, options: CallOptions = {}): Promise<Buffer> {
    const maxReceive = options.maxReceiveBytes ?? 4 * 1024 * 1024;
    return new Promise<Buffer>((resolve, reject) => {
      let settled = false;
      let timer: NodeJS.Timeout | undefined;
      const finish = (err: CallError | null, value?: Buffer) => {
        if (settled) return;
        settled = true;
        if (timer) clearTimeout(timer);
        options.signal?.removeEventListener('abort', onAbort);
        if (err) reject(err);
        else resolve(value!);
      };
      const session = this.open();
      const headers: http2.OutgoingHttpHeaders = {
        ':method': 'POST',
        ':path': path,
        'content-type': 'application/grpc',
        te: 'trailers',
        'user-agent': 'vpool-csi-cli',
      };
      const deadline = options.deadline === undefined ? undefined : Number(options.deadline);
      if (deadline !== undefined) headers['grpc-timeout'] = grpcTimeout(deadline - Date.now());
      const stream = session.request(headers);
      const onAbort = () => {
        stream.close(http2.constants.NGHTTP2_CANCEL);
        finish(new CallError(STATUS.CANCELLED, 'Cancelled on client'));
      };
      if (options.signal?.aborted) return onAbort();
      options.signal?.addEventListener('abort', onAbort, { once: true });
      if (deadline !== undefined) {
        const wait = () => {
          const left = deadline - Date.now();
          if (left > 0) {
            timer = setTimeout(wait, Math.min(left, MAX_TIMER_MS));
            return;
          }
          stream.close(http2.constants.NGHTTP2_CANCEL);
          finish(new CallError(STATUS.DEADLINE_EXCEEDED, 'Deadline exceeded'));
        };
        wait();
      }
      let head: http2.IncomingHttpHeaders = {};
      let trailers: http2.IncomingHttpHeaders | undefined;
      const chunks: Buffer[] = [];
      let received = 0;
      stream.on('response', (h) => (head = h));
      stream.on('trailers', (t) => (trailers = t));
      stream.on('data', (chunk: Buffer) => {
        received += chunk.length;
        if (received > maxReceive + 5) {
          stream.close(http2.constants.NGHTTP2_CANCEL);
          finish(new CallError(STATUS.RESOURCE_EXHAUSTED, `Received message larger than max (${received - 5} vs. ${maxReceive})`));
          return;
        }
        chunks.push(chunk);
      });
      // Reported by 'close' below: a connection that never came up fails its streams with its errno.
      let streamError: Error | undefined;
      stream.on('error', (err) => (streamError = err));
      stream.on('close', () => {
        if (settled) return;
        const status = trailers?.['grpc-status'] ?? head['grpc-status'];
        if (status === undefined) {
          const httpStatus = head[':status'];
          if (httpStatus !== undefined && Number(httpStatus) !== 200) return finish(new CallError(fromHttp(Number(httpStatus)), `Received HTTP status code ${httpStatus}`));
          const cause = (streamError as { cause?: unknown } | undefined)?.cause;
          const lost = (cause instanceof Error ? cause : undefined) ?? this.connectError;
          // The driver answered (headers came) or reset this one stream on a live connection: it is there, so this is not "no driver".
          if (!lost && httpStatus !== undefined) return finish(new CallError(STATUS.UNKNOWN, 'the driver answered without a gRPC status'));
          if (!lost && stream.rstCode && stream.rstCode !== http2.constants.NGHTTP2_NO_ERROR) {
            const r = fromReset(stream.rstCode);
            return finish(new CallError(r.code, r.details));
          }
          const why = lost ?? streamError ?? new Error('the connection ended without an answer');
          const errno = (why as NodeJS.ErrnoException).code;
          return finish(new CallError(STATUS.UNAVAILABLE, `No connection established. Last error: ${errno && !why.message.includes(errno) ? `${errno} ` : ''}${why.message}`));
        }
        const code = /^[0-9]{1,2}$/.test(String(status)) && Number(status) <= 16 ? Number(status) : STATUS.UNKNOWN;
        if (code !== STATUS.OK) return finish(new CallError(code, grpcMessage(trailers?.['grpc-message'] ?? head['grpc-message'])));
        const body = Buffer.concat(chunks);
        if (body.length < 5) return finish(new CallError(STATUS.INTERNAL, 'the answer carries no message'));
        if (body[0] !== 0) return finish(new CallError(STATUS.INTERNAL, 'the answer is compressed, which this client did not offer'));
        const length = body.readUInt32BE(1);
        if (body.length < 5 + length) return finish(new CallError(STATUS.INTERNAL, 'the answer is shorter than its length says'));
        finish(null, body.subarray(5, 5 + length));
      });
      const frame = Buffer.alloc(5 + message.length);
      frame.writeUInt32BE(message.length, 1);
      message.copy(frame, 5);
      stream.end(frame);
    });
  }

  /** Ends the connection at once, calls under way included: a CLI closes it when it has its answers, or when it stops waiting (Ctrl-C, a deadline) on a driver that may never answer. */
  close(): void {
    this.session?.destroy();
  }
}

/** grpc-message is percent-encoded (PROTOCOL-HTTP2.md). */
function grpcMessage(v: string | string[] | undefined): string {
  const s = Array.isArray(v) ? v.join(',') : (v ?? '');
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
