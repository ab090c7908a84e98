import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DriverError, errorMessage, internal, notFound, unavailable, type ErrorKind } from '../errors.js';
import { isId } from '../ids.js';
import { HEARTBEAT, withHeartbeat } from '../heartbeat.js';
import { log } from '../log.js';
import type { TransferCredentials } from './credentials.js';
import { expectPeer } from './identity.js';

/**
 * SnapshotMetadata over the node-to-node channel. A node-local pool's snapshot is on one node, and
 * a backup tool reaches the driver through one external-snapshot-metadata sidecar, on whichever
 * node its Service sends it: a plugin asked of a snapshot it does not hold forwards the request to
 * the node that does, on the transfer listener (mutual TLS, per-node certificates), and relays the
 * ranges. Only ranges cross: offsets and lengths, never data.
 *
 *   HEAD /v1/metadata/snapshots/<id>                       200: held here; 404: not
 *   GET  /v1/metadata/allocated?snapshot=<id>&from=<n>
 *   GET  /v1/metadata/delta?base=<id>&target=<id>&from=<n>
 *
 * A GET answers 200 with newline-delimited JSON: {"capacity":N} first, then {"r":[s,e,s,e,...]}
 * (at most 1,024 ranges a line), then {"end":true}; an error at any point is {"error":{kind,message}}
 * and the end of the body. A body that ends without either is a cut stream, never a complete answer.
 */

/** `[start, end)`, as the pools' block ranges are (pool/block-ranges.ts, a floor this one does not import). */
type ByteRange = readonly [start: number, end: number];

export interface MetadataRequest {
  op: 'held' | 'allocated' | 'delta';
  snapshot: string;
  base?: string;
  from: number;
}

/** What the holder answers from: its own pool only (a forwarded request is never forwarded again). */
export interface LocalMetadata {
  holds(snapshotId: string): Promise<boolean>;
  allocated(snapshotId: string, from: number, signal: AbortSignal): Promise<{ capacityBytes: number; ranges: AsyncIterable<ByteRange> }>;
  delta(baseId: string, targetId: string, from: number, signal: AbortSignal): Promise<{ capacityBytes: number; ranges: AsyncIterable<ByteRange> }>;
}

const PER_LINE = 1024;
/** How long a forwarded stream may bring nothing: as long as the CSI stream's own stall bound (csi/rpc.ts). */
const STREAM_IDLE_MS = 300_000;
/** Ranges found are sent within this, and a line at least this often while nothing is found. */
const FLUSH_MS = 5_000;
const HEARTBEAT_MS = 30_000;
/** A line of the answer is at most 1,024 ranges (about 40 KiB): a longer one is no answer of a holder. */
const MAX_LINE = 256 * 1024;

const KINDS: ReadonlySet<ErrorKind> = new Set(['invalid', 'not-found', 'conflict', 'out-of-range', 'exhausted', 'precondition', 'busy', 'unsupported', 'denied', 'unavailable', 'cancelled', 'internal']);

/** The metadata request a URL asks for; null when it is none (another route), 'bad' when malformed. */
export function metadataRoute(method: string | undefined, url: string | undefined): MetadataRequest | null | 'bad' {
  let u: URL;
  try {
    u = new URL(url ?? '', 'https://peer');
  } catch {
    return null;
  }
  if (!u.pathname.startsWith('/v1/metadata/')) return null;
  const keys = [...u.searchParams.keys()];
  const snap = (v: string | null) => (v !== null && isId('snap', v) ? v : null);
  const from = (): number | null => {
    const f = u.searchParams.get('from') ?? '';
    return /^\d{1,16}$/.test(f) && Number.isSafeInteger(Number(f)) ? Number(f) : null;
  };
  const held = /^\/v1\/metadata\/snapshots\/([^/]+)$/.exec(u.pathname);
  if (held && method === 'HEAD' && !keys.length) {
    let id: string;
    try {
      id = decodeURIComponent(held[1]!);
    } catch {
      return 'bad';
    }
    return snap(id) ? { op: 'held', snapshot: id, from: 0 } : 'bad';
  }
  if (method !== 'GET') return 'bad';
  if (u.pathname === '/v1/metadata/allocated' && keys.every((k) => k === 'snapshot' || k === 'from')) {
    const s = snap(u.searchParams.get('snapshot'));
    const f = from();
    return s && f !== null ? { op: 'allocated', snapshot: s, from: f } : 'bad';
  }
  if (u.pathname === '/v1/metadata/delta' && keys.every((k) => k === 'base' || k === 'target' || k === 'from')) {
    const b = snap(u.searchParams.get('base'));
    const t = snap(u.searchParams.get('target'));
    const f = from();
    return b && t && f !== null ? { op: 'delta', snapshot: t, base: b, from: f } : 'bad';
  }
  return 'bad';
}

/** Serves one authorized metadata request from this node's pool, at the reader's pace (the socket's backpressure). */
export async function serveMetadata(r: MetadataRequest, res: ServerResponse, local: LocalMetadata): Promise<void> {
  if (r.op === 'held') {
    res.writeHead((await local.holds(r.snapshot)) ? 200 : 404).end();
    return;
  }
  const gone = new AbortController();
  res.once('close', () => gone.abort(new Error('the reader went away')));
  res.writeHead(200, { 'content-type': 'application/x-ndjson' });
  const line = async (o: unknown) => {
    if (!res.write(`${JSON.stringify(o)}\n`)) {
      // A reader that takes nothing for a stall window is given up: its slot and open images are freed.
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => res.destroy(new Error('the reader took nothing for 300 s')), STREAM_IDLE_MS);
        const done = () => (clearTimeout(timer), res.off('drain', done), res.off('close', done), resolve());
        res.once('drain', done);
        res.once('close', done);
      });
    }
    if (gone.signal.aborted) throw gone.signal.reason;
  };
  try {
    // Not holding the snapshot asked about (the target of a delta) is "ask elsewhere"; any other answer is the answer.
    if (!(await local.holds(r.snapshot))) {
      res.write(`${JSON.stringify({ error: { kind: 'not-found', message: `snapshot ${r.snapshot} is not on this node`, moved: true } })}\n`);
      res.end();
      return;
    }
    const stream = r.op === 'allocated' ? await local.allocated(r.snapshot, r.from, gone.signal) : await local.delta(r.base!, r.snapshot, r.from, gone.signal);
    await line({ capacity: stream.capacityBytes });
    let batch: number[] = [];
    let sent = Date.now();
    // While the pool computes (an ext4 delta reads both images), what was found goes out every few seconds and an
    // empty line at least every HEARTBEAT_MS: the forwarder's idle bound measures a silent holder, not a slow one.
    for await (const item of withHeartbeat(stream.ranges, HEARTBEAT_MS)) {
      if (item !== HEARTBEAT) batch.push(item[0], item[1]);
      if (batch.length >= 2 * PER_LINE || (Date.now() - sent >= FLUSH_MS && batch.length) || item === HEARTBEAT) {
        await line({ r: batch });
        batch = [];
        sent = Date.now();
      }
    }
    if (batch.length) await line({ r: batch });
    await line({ end: true });
  } catch (err) {
    if (gone.signal.aborted) return;
    const kind = err instanceof DriverError ? err.kind : 'internal';
    if (kind === 'internal') log.error('a forwarded snapshot metadata request failed', { ...r, err: String(err) });
    res.write(`${JSON.stringify({ error: { kind, message: errorMessage(err).slice(0, 2000) } })}\n`);
  }
  res.end();
}

/** A peer's listener and the node and pod its certificate must name. */
export interface MetadataPeer {
  host: string;
  port: number;
  node: string;
  pod: { uid: string; name: string };
}

/**
 * The forwarding side: finds which peer holds a snapshot (the one peer whose HEAD answers 200; the
 * answer is remembered and checked again by the GET, which a peer that no longer holds it answers
 * not-found), and relays its answer.
 */
export class MetadataClient {
  private readonly holders = new Map<string, string>();

  constructor(
    private readonly credentials: TransferCredentials,
    private readonly peers: (fresh?: boolean) => Promise<MetadataPeer[]> | MetadataPeer[],
    private readonly timeoutMs = 10_000,
  ) {}

  /** The ranges of a snapshot another node holds; NOT_FOUND when no peer holds it. */
  async allocated(snapshotId: string, from: number, signal: AbortSignal): Promise<{ capacityBytes: number; ranges: AsyncIterable<ByteRange> }> {
    return this.relay(snapshotId, `/v1/metadata/allocated?snapshot=${encodeURIComponent(snapshotId)}&from=${from}`, signal);
  }

  async delta(baseId: string, targetId: string, from: number, signal: AbortSignal): Promise<{ capacityBytes: number; ranges: AsyncIterable<ByteRange> }> {
    return this.relay(targetId, `/v1/metadata/delta?base=${encodeURIComponent(baseId)}&target=${encodeURIComponent(targetId)}&from=${from}`, signal);
  }

  private async relay(snapshotId: string, path: string, signal: AbortSignal): Promise<{ capacityBytes: number; ranges: AsyncIterable<ByteRange> }> {
    const remembered = this.holders.has(snapshotId);
    const peer = await this.holder(snapshotId, false, signal);
    const opened = await this.open(peer, path, signal, remembered);
    if (opened !== 'moved') return opened;
    // Remembered, but no longer there: every peer is asked again.
    this.holders.delete(snapshotId);
    const again = await this.open(await this.holder(snapshotId, true, signal), path, signal, false);
    if (again === 'moved') throw internal('a peer answered not-found where moved was not expected');
    return again;
  }

  /** The peer holding the snapshot: remembered, or the one whose HEAD says so. */
  private async holder(snapshotId: string, fresh: boolean, signal: AbortSignal): Promise<MetadataPeer> {
    const peers = await this.peers(fresh);
    const known = this.holders.get(snapshotId);
    const remembered = known ? peers.find((p) => p.node === known) : undefined;
    if (remembered) return remembered;
    const failures: string[] = [];
    // Every peer at once, each bounded: the one that holds it answers 200, the rest 404.
    const answers = await Promise.all(
      peers.map(async (p) => {
        try {
          const res = await this.request(p, 'HEAD', `/v1/metadata/snapshots/${encodeURIComponent(snapshotId)}`, signal);
          res.resume();
          if (res.statusCode === 200) return p;
          if (res.statusCode !== 404) failures.push(`node ${p.node} answered ${res.statusCode}${res.headers['x-vpool-error'] ? `: ${safeDecode(String(res.headers['x-vpool-error']))}` : ''}`);
        } catch (err) {
          failures.push(`node ${p.node}: ${errorMessage(err)}`);
        }
        return null;
      }),
    );
    const claimed = answers.filter((p): p is MetadataPeer => p !== null);
    // Snapshot IDs are unique to the node that made them: two nodes claiming one is a node that lies (or a copy made by hand).
    if (claimed.length > 1) throw unavailable(`nodes ${claimed.map((p) => p.node).join(', ')} each claim snapshot ${snapshotId}; refusing to guess which answers for it`);
    const found = claimed[0];
    if (found) {
      if (this.holders.size > 4096) this.holders.clear();
      this.holders.set(snapshotId, found.node);
      return found;
    }
    // Unsure is not absent: a node that did not answer may hold it.
    if (failures.length) throw unavailable(`snapshot ${snapshotId} is not in this node's pool, and not every other node could be asked: ${failures.slice(0, 5).join('; ')}`);
    throw notFound(`snapshot ${snapshotId} is on no node of this driver (asked ${peers.length} other node${peers.length === 1 ? '' : 's'})`);
  }

  /** The answer of the holder, its capacity read; 'moved' when it answers that it holds no such snapshot. */
  private async open(peer: MetadataPeer, path: string, signal: AbortSignal, remembered: boolean): Promise<{ capacityBytes: number; ranges: AsyncIterable<ByteRange> } | 'moved'> {
    const res = await this.request(peer, 'GET', path, signal, STREAM_IDLE_MS).catch((err: unknown) => {
      throw unavailable(`node ${peer.node} holds the snapshot and did not answer: ${errorMessage(err)}`);
    });
    if (res.statusCode !== 200) {
      res.resume();
      const reason = res.headers['x-vpool-error'] ? `: ${safeDecode(String(res.headers['x-vpool-error']))}` : '';
      throw res.statusCode === 403 ? new DriverError('denied', `node ${peer.node} refused the forwarded request${reason}`) : unavailable(`node ${peer.node} answered ${res.statusCode}${reason}`);
    }
    const lines = boundedLines(res, MAX_LINE)[Symbol.asyncIterator]();
    const next = async (): Promise<Record<string, unknown>> => {
      const { value, done } = await lines.next().catch((err: unknown) => {
        throw unavailable(`the answer of node ${peer.node}: ${errorMessage(err)}`);
      });
      if (done) throw unavailable(`the answer of node ${peer.node} ended before it was complete`);
      try {
        return JSON.parse(value) as Record<string, unknown>;
      } catch {
        throw unavailable(`node ${peer.node} sent a line that is not JSON`);
      }
    };
    const fail = (e: unknown): never => {
      const { kind, message } = (e ?? {}) as { kind?: string; message?: string };
      throw new DriverError(KINDS.has(kind as ErrorKind) ? (kind as ErrorKind) : 'internal', `node ${peer.node}: ${String(message ?? 'an error')}`);
    };
    const first = await next();
    if (first.error) {
      res.destroy();
      // Moved: the holder remembered no longer holds it (a base missing there is the answer, not a move).
      if ((first.error as { moved?: boolean }).moved === true) {
        if (remembered) return 'moved';
        throw unavailable(`node ${peer.node} said it held snapshot ${path.split(/[=&]/)[1]} and now does not`);
      }
      fail(first.error);
    }
    if (typeof first.capacity !== 'number' || !Number.isSafeInteger(first.capacity) || first.capacity < 0) throw unavailable(`node ${peer.node} sent no capacity`);
    const capacityBytes: number = first.capacity;
    async function* ranges(): AsyncGenerator<ByteRange> {
      let last = -1;
      try {
        for (;;) {
          const m = await next();
          if (m.end === true) return;
          if (m.error) fail(m.error);
          const r = m.r;
          if (!Array.isArray(r) || r.length % 2) throw unavailable(`node ${peer.node} sent a malformed line`);
          for (let i = 0; i < r.length; i += 2) {
            const s = r[i] as number;
            const e = r[i + 1] as number;
            // What the peer sends is checked as the spec's rules: ascending, apart, within the volume.
            if (!Number.isSafeInteger(s) || !Number.isSafeInteger(e) || s < last || e <= s || e > capacityBytes) throw unavailable(`node ${peer.node} sent ranges out of order or past the volume`);
            last = e;
            yield [s, e];
          }
        }
      } finally {
        res.destroy();
      }
    }
    return { capacityBytes, ranges: ranges() };
  }

  private request(peer: MetadataPeer, method: 'HEAD' | 'GET', path: string, signal: AbortSignal, timeoutMs = this.timeoutMs): Promise<IncomingMessage> {
    const m = this.credentials.material;
    if (!m) return Promise.reject(unavailable('this node has no transfer certificate yet (its certificate request is not answered)'));
    return new Promise((resolve, reject) => {
      const req = https.request({
        host: peer.host,
        port: peer.port,
        method,
        path,
        ca: m.trust,
        cert: m.cert,
        key: m.key,
        checkServerIdentity: expectPeer(peer, 'peer'),
        minVersion: 'TLSv1.3',
        agent: false,
        timeout: timeoutMs,
        signal,
      });
      req.once('response', resolve);
      // An idle socket: for a GET, a holder silent for longer than a stream may be (it compares data between ranges).
      req.once('timeout', () => req.destroy(new Error(`nothing came for ${timeoutMs} ms`)));
      req.once('error', reject);
      req.end();
    });
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}

/** The lines of a body, each at most `max` bytes: a longer one ends the body with an error. */
async function* boundedLines(body: AsyncIterable<Buffer>, max: number): AsyncGenerator<string> {
  let pending = '';
  for await (const chunk of body) {
    pending += chunk.toString('utf8');
    let i: number;
    while ((i = pending.indexOf('\n')) >= 0) {
      yield pending.slice(0, i);
      pending = pending.slice(i + 1);
    }
    if (pending.length > max) throw new Error(`a line longer than ${max} bytes`);
  }
  if (pending.length) yield pending;
}
