import https from 'node:https';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { DriverError, errorMessage, unavailable, type ErrorKind } from '../errors.js';
import { isId } from '../ids.js';
import { log } from '../log.js';
import type { TransferCredentials } from './credentials.js';
import type { TLSSocket } from 'node:tls';
import { expectPeer, routerFromSan, type RouterIdentity } from './identity.js';

/**
 * Snapshot commands (and ControllerModifyVolume, for the central csi-resizer) over the node-to-node channel, from the snapshot router (cli/serve-router.ts) to
 * the node plugin that holds the volumes. A node-local pool's snapshots are cut where its volumes are,
 * and the one csi-snapshotter that sees VolumeGroupSnapshotContents is central: its calls reach the
 * router, which asks each node what it holds and hands the call to the holder. Only the router's
 * certificate (transfer/identity.ts: a role, no node) may send these; a node's may not.
 *
 *   POST /v1/commands/<Method>      body: the CSI request (JSON, at most 1 MiB)
 *   POST /v1/commands/Holds         body: {"volumes":[id...],"snapshots":[...],"groups":[...]}
 *
 * The answer is 200 with one JSON object: {"ok": <CSI response>} or {"error": {kind, message}}, the
 * holder's own answer to the call; any other status is the channel's refusal (403: this certificate
 * may not; 503: not now).
 */
export { COMMANDS, type CommandName } from './command-groups.js';
import { COMMANDS, type CommandName } from './command-groups.js';

export interface HoldsQuery {
  volumes: string[];
  snapshots: string[];
  groups: string[];
}

/** What a node answers the router from: its own CSI controller, never another node. */
export interface LocalCommands {
  holds(q: HoldsQuery, signal: AbortSignal): Promise<HoldsQuery>;
  /** The node's own answer to a CSI call; throws a DriverError with the kind of its gRPC status. */
  run(method: CommandName, request: unknown, deadlineMs: number, signal: AbortSignal): Promise<unknown>;
}

const MAX_BODY = 1024 * 1024;
/** IDs asked about at once: a group's members and a little more; a request past it is no router's. */
const MAX_IDS = 10_000;
/** The longest a forwarded call may run on the holder: the sidecar's own timeout is shorter (300 s in the chart). */
export const MAX_DEADLINE_MS = 15 * 60_000;
const KINDS: ReadonlySet<ErrorKind> = new Set(['invalid', 'not-found', 'conflict', 'out-of-range', 'exhausted', 'precondition', 'busy', 'unsupported', 'denied', 'unavailable', 'cancelled', 'internal']);

/** The command a URL asks for; null when it is none (another route), 'bad' when malformed. */
export function commandRoute(method: string | undefined, url: string | undefined): { command: CommandName | 'Holds'; deadlineMs: number } | null | 'bad' {
  let u: URL;
  try {
    u = new URL(url ?? '', 'https://peer');
  } catch {
    return null;
  }
  const m = /^\/v1\/commands\/([A-Za-z]+)$/.exec(u.pathname);
  if (!m) return u.pathname.startsWith('/v1/commands/') ? 'bad' : null;
  if (method !== 'POST' || [...u.searchParams.keys()].some((k) => k !== 'deadline')) return 'bad';
  const command = m[1] === 'Holds' ? 'Holds' : (COMMANDS as readonly string[]).includes(m[1]) ? (m[1] as CommandName) : null;
  if (!command) return 'bad';
  const d = u.searchParams.get('deadline') ?? String(MAX_DEADLINE_MS);
  if (!/^\d{1,9}$/.test(d) || Number(d) < 1) return 'bad';
  return { command, deadlineMs: Math.min(Number(d), MAX_DEADLINE_MS) };
}

const ids = (v: unknown, kind: 'vol' | 'snap' | 'group'): string[] | null => (Array.isArray(v) && v.length <= MAX_IDS && v.every((x) => typeof x === 'string' && isId(kind, x)) ? (v as string[]) : null);

/** A Holds body, checked: three lists of well-formed IDs; null when it is anything else. */
export function parseHolds(body: unknown): HoldsQuery | null {
  if (typeof body !== 'object' || body === null || Array.isArray(body)) return null;
  const b = body as Record<string, unknown>;
  if (Object.keys(b).some((k) => !['volumes', 'snapshots', 'groups'].includes(k))) return null;
  const volumes = ids(b.volumes ?? [], 'vol');
  const snapshots = ids(b.snapshots ?? [], 'snap');
  const groups = ids(b.groups ?? [], 'group');
  return volumes && snapshots && groups ? { volumes, snapshots, groups } : null;
}

/** Reads a request body of at most `max` bytes as JSON; throws on more, or on what is not JSON. */
async function readJson(req: IncomingMessage, max: number): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > max) throw new Error(`the body is longer than ${max} bytes`);
    chunks.push(c);
  }
  return JSON.parse(Buffer.concat(chunks).toString('utf8'));
}

/** Serves one authorized command from this node's controller; the holder's answer, or its error, is the body. */
export async function serveCommand(route: { command: CommandName | 'Holds'; deadlineMs: number }, req: IncomingMessage, res: ServerResponse, local: LocalCommands): Promise<void> {
  let body: unknown;
  try {
    body = await readJson(req, MAX_BODY);
  } catch (err) {
    return void res.writeHead(400, { 'x-vpool-error': encodeURIComponent(errorMessage(err)) }).end();
  }
  const gone = new AbortController();
  res.once('close', () => gone.abort(new Error('the router went away')));
  const answer = (o: unknown) => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(o));
  try {
    if (route.command === 'Holds') {
      const q = parseHolds(body);
      if (!q) return void res.writeHead(400, { 'x-vpool-error': 'a Holds body is {volumes, snapshots, groups}: lists of IDs' }).end();
      return void answer({ ok: await local.holds(q, gone.signal) });
    }
    if (typeof body !== 'object' || body === null || Array.isArray(body)) return void res.writeHead(400).end();
    answer({ ok: await local.run(route.command, body, route.deadlineMs, gone.signal) });
  } catch (err) {
    if (gone.signal.aborted) return;
    const kind = err instanceof DriverError ? err.kind : 'internal';
    if (kind === 'internal') log.error('a routed snapshot command failed', { command: route.command, err: String(err) });
    answer({ error: { kind, message: errorMessage(err).slice(0, 4000) } });
  }
}

/** What the listener gives a command's gate: this node's commands, the router check, and its authorization bound. */
export interface CommandGate {
  commands?: LocalCommands;
  /** The commands this node takes (--transfer-router-takes); Holds goes with any. */
  allowed?: ReadonlySet<CommandName>;
  authorizeRouter?(who: RouterIdentity, address: string): Promise<string | null>;
  /** A slot among the authorizations under way (its release), or null when they are at their bound. */
  admit(): (() => void) | null;
  /** Who is asking, for the log. */
  peer(): string;
}

/** A snapshot command: from the snapshot router's certificate only, from its live pod (a node's certificate is refused). */
export async function answerCommand(req: IncomingMessage, c: { command: CommandName | 'Holds'; deadlineMs: number }, res: ServerResponse, g: CommandGate): Promise<void> {
  const socket = req.socket;
  const router = routerFromSan((socket as TLSSocket).getPeerCertificate?.()?.subjectaltname);
  const refuse = (status: number, reason: string) => {
    req.resume();
    res.writeHead(status, { 'x-vpool-error': encodeURIComponent(reason), ...(status === 503 ? { 'retry-after': '2' } : {}) }).end();
  };
  if (!g.commands || !g.authorizeRouter) return refuse(404, 'this node takes no snapshot commands (no --transfer-router-from-cluster)');
  if (!router) {
    log.warn('refused a snapshot command: the certificate is not the snapshot router\'s', { command: c.command, peer: g.peer() });
    return refuse(403, 'snapshot commands are taken from the snapshot router\'s certificate only');
  }
  if (c.command !== 'Holds' && !g.allowed?.has(c.command)) {
    log.warn('refused a router command this node does not take', { command: c.command, pod: `${router.pod.namespace}/${router.pod.name}` });
    return refuse(403, `this node takes no ${c.command} from the router (--transfer-router-takes)`);
  }
  const release = g.admit();
  if (!release) return refuse(503, 'too many requests are being authorized already');
  let reason: string | null;
  try {
    reason = await g.authorizeRouter(router, socket.remoteAddress ?? '');
  } catch (err) {
    log.warn('a snapshot command could not be authorized now', { command: c.command, pod: router.pod.name, err: String(err) });
    return refuse(503, `the snapshot router could not be checked now: ${errorMessage(err)}`);
  } finally {
    release();
  }
  if (reason !== null) {
    log.warn('refused a snapshot command', { command: c.command, pod: `${router.pod.namespace}/${router.pod.name}`, remote: socket.remoteAddress, reason });
    return refuse(403, reason);
  }
  try {
    await serveCommand(c, req, res, g.commands);
  } catch (err) {
    log.error('a snapshot command failed', { command: c.command, err: String(err) });
    res.destroy();
  }
}

/** A node plugin's listener, and the node and pod its certificate must name. */
export interface CommandPeer {
  host: string;
  port: number;
  node: string;
  pod: { uid: string; name: string };
}

/** Where the IDs asked about are, as every node answered; `missing` says why an absence is not final. */
export interface Placement {
  found: Map<string, CommandPeer>;
  /** IDs more than one node claims (IDs are made on one node: all but one of them lie, or a copy was made by hand). */
  contested?: Map<string, CommandPeer[]>;
  /** Why some node that may hold an ID did not say (a node plugin not running, one that did not answer); undefined: every one did. */
  missing?: string;
}

/**
 * The router's side: asks every node what it holds, and hands a call to the one that does. Nothing is
 * remembered between calls: each placement is every node's answer now, so a node that restarted, or
 * one that lied once while the holder was silent, is never trusted from memory.
 */
export class CommandClient {
  constructor(
    private readonly credentials: TransferCredentials,
    private readonly peers: (fresh?: boolean) => Promise<CommandPeer[]> | CommandPeer[],
    /** How many node plugins there should be (the DaemonSet's desired count); a pod not listed is a node not asked. */
    private readonly expected: () => Promise<number> | number,
    private readonly askMs = 10_000,
  ) {}

  /** The node plugins listed now, and why that is not all of them (fewer than the DaemonSet wants). */
  private async everyNode(): Promise<{ peers: CommandPeer[]; short?: string }> {
    const [peers, want] = await Promise.all([this.peers(true), this.expected()]).catch((err: unknown) => {
      throw unavailable(`the node plugins cannot be counted now: ${errorMessage(err)}`);
    });
    // A node whose plugin is being replaced (a rolling update), evicted or not yet running holds what it held.
    const nodes = new Set(peers.map((p) => p.node)).size;
    const short = nodes < want ? `${nodes} of the ${want} node plugins are running (a node whose plugin is being replaced, or not yet started, may hold it)` : undefined;
    return { peers, short };
  }

  /** Which node holds each ID asked about, from every node's answer; an ID two nodes claim is `contested`, in neither. */
  async holders(q: HoldsQuery, signal: AbortSignal): Promise<Placement> {
    const all = new Set([...q.volumes, ...q.snapshots, ...q.groups]);
    const { peers, short } = await this.everyNode();
    const failures: string[] = [];
    const claims = new Map<string, CommandPeer[]>();
    await Promise.all(
      peers.map(async (p) => {
        try {
          const held = parseHolds(await this.call(p, '/v1/commands/Holds', q, this.askMs, signal));
          if (!held) throw new Error('it sent a malformed Holds answer');
          const ids = [...held.volumes, ...held.snapshots, ...held.groups];
          // A node claiming what was not asked is no answer to trust, none of it.
          const stray = ids.find((id) => !all.has(id));
          if (stray) throw new Error(`it claims ${stray}, which was not asked about`);
          for (const id of ids) claims.set(id, [...(claims.get(id) ?? []), p]);
        } catch (err) {
          failures.push(`node ${p.node}: ${errorMessage(err)}`);
        }
      }),
    );
    const found = new Map<string, CommandPeer>();
    const contested = new Map<string, CommandPeer[]>();
    for (const [id, ps] of claims) (ps.length > 1 ? contested.set(id, ps) : found.set(id, ps[0]));
    const missing = [short, failures.length ? `not every node answered: ${failures.slice(0, 5).join('; ')}` : undefined].filter(Boolean).join('; ') || undefined;
    return { found, missing, ...(contested.size ? { contested } : {}) };
  }

  /**
   * The same call on every node, each answering for what it holds (a delete: the holder deletes, the
   * rest have nothing to delete): done only once every node the DaemonSet wants said so. The first
   * error any node answers is the answer.
   */
  async everywhere(method: CommandName, request: unknown, deadlineMs: number, signal: AbortSignal): Promise<void> {
    const { peers, short } = await this.everyNode();
    if (short) throw unavailable(`${method} is answered once every node has: ${short}`);
    const results = await Promise.allSettled(peers.map((p) => this.run(p, method, request, deadlineMs, signal)));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  }

  /** Every node plugin now, and why that is not all of them (a listing over all of them). */
  async all(): Promise<{ peers: CommandPeer[]; short?: string }> {
    return this.everyNode();
  }

  /** The holder's answer to a CSI call; its error as the same kind, prefixed with the node. */
  async run(peer: CommandPeer, method: CommandName, request: unknown, deadlineMs: number, signal: AbortSignal): Promise<unknown> {
    const d = Math.max(1, Math.min(Math.round(deadlineMs), MAX_DEADLINE_MS));
    // The channel's own wait: the holder's deadline, and a little for the answer to come back.
    return this.call(peer, `/v1/commands/${method}?deadline=${d}`, request, d + 5_000, signal);
  }

  private async call(peer: CommandPeer, path: string, body: unknown, timeoutMs: number, signal: AbortSignal): Promise<unknown> {
    const m = this.credentials.material;
    if (!m) throw unavailable('the snapshot router has no certificate yet (its certificate request is not answered)');
    const payload = Buffer.from(JSON.stringify(body));
    const res = await new Promise<IncomingMessage>((resolve, reject) => {
      const req = https.request({
        host: peer.host,
        port: peer.port,
        method: 'POST',
        path,
        headers: { 'content-type': 'application/json', 'content-length': payload.length },
        ca: m.trust,
        cert: m.cert,
        key: m.key,
        checkServerIdentity: expectPeer(peer, 'listener'),
        minVersion: 'TLSv1.3',
        agent: false,
        timeout: timeoutMs,
        signal,
      });
      req.once('response', resolve);
      req.once('timeout', () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
      // A node that does not even take the connection is known for silent at once, not after the call's whole deadline.
      req.once('socket', (socket) => {
        const connecting = setTimeout(() => req.destroy(new Error(`no connection within ${this.askMs} ms`)), this.askMs);
        socket.once('secureConnect', () => clearTimeout(connecting));
        socket.once('close', () => clearTimeout(connecting));
      });
      req.once('error', reject);
      req.end(payload);
    }).catch((err: unknown) => {
      throw unavailable(`node ${peer.node} did not answer: ${errorMessage(err)}`);
    });
    const chunks: Buffer[] = [];
    let size = 0;
    try {
      for await (const c of res as AsyncIterable<Buffer>) {
        size += c.length;
        if (size > 64 * MAX_BODY) throw new Error('its answer is longer than 64 MiB');
        chunks.push(c);
      }
    } catch (err) {
      res.destroy();
      throw unavailable(`node ${peer.node}: ${errorMessage(err)}`);
    }
    const reason = res.headers['x-vpool-error'] ? `: ${safeDecode(String(res.headers['x-vpool-error']))}` : '';
    if (res.statusCode === 403) throw new DriverError('denied', `node ${peer.node} refused the snapshot router${reason}`);
    if (res.statusCode !== 200) throw unavailable(`node ${peer.node} answered ${res.statusCode}${reason}`);
    let o: { ok?: unknown; error?: { kind?: string; message?: string } };
    try {
      o = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof o;
    } catch {
      throw unavailable(`node ${peer.node} sent an answer that is not JSON`);
    }
    if (o.error) {
      const kind = KINDS.has(o.error.kind as ErrorKind) ? (o.error.kind as ErrorKind) : 'internal';
      throw new DriverError(kind, `node ${peer.node}: ${String(o.error.message ?? 'an error')}`);
    }
    if (!('ok' in o)) throw unavailable(`node ${peer.node} sent neither an answer nor an error`);
    return o.ok;
  }
}

function safeDecode(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    return s;
  }
}
