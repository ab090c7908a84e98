import { ioLimitsOf } from './pool/mutable-parameters.js';
import http from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { onRpc } from './csi/rpc.js';
import { commandsStuck, onCommand } from './exec.js';
import { stuckPvReads } from './pool/lvm/pv-headers.js';
import { onSends, onTransfer } from './transfer/events.js';
import { log } from './log.js';
import type { PoolBackend } from './pool/backend.js';

/**
 * Prometheus metrics: RPC latency and errors by method and code, external command latency by
 * command, pool gauges read from the backend at scrape time (never a stale copy), and Node's own
 * process metrics. Registered once per process; the HTTP side is serveHttp below.
 */
export interface Metrics {
  contentType: string;
  /** The exposition text, with the pool read once for this scrape. */
  scrape(): Promise<string>;
}

/** Counts of the last orphan check by kind (volume, snapshot, unfinished_volume, missing_volume); undefined before the first. */
export type OrphanCounts = () => Record<string, number> | undefined;

/** `pool` gives the pool at each scrape (it may open after the metrics do: a VolumePool being built). */
export function createMetrics(pool: () => PoolBackend | undefined, orphans?: OrphanCounts): Metrics {
  const register = new Registry();
  let poolRead: Promise<void> | null = null;
  collectDefaultMetrics({ register, prefix: 'vpool_csi_' });
  const rpcSeconds = new Histogram({
    name: 'vpool_csi_rpc_duration_seconds',
    help: 'CSI RPC latency by method and gRPC code',
    labelNames: ['method', 'code'],
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [register],
  });
  const rpcErrors = new Counter({ name: 'vpool_csi_rpc_errors_total', help: 'CSI RPCs that ended with a code other than OK', labelNames: ['method', 'code'], registers: [register] });
  const commandSeconds = new Histogram({
    name: 'vpool_csi_command_duration_seconds',
    help: 'latency of the external commands the driver runs (lvcreate, mkfs.ext4, virsh, ...) by command and outcome',
    labelNames: ['command', 'result'],
    buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 120],
    registers: [register],
  });
  onRpc((method, code, seconds) => {
    rpcSeconds.observe({ method, code }, seconds);
    if (code !== 'OK') rpcErrors.inc({ method, code });
  });
  onCommand((command, seconds, ok) => commandSeconds.observe({ command, result: ok ? 'ok' : 'error' }, seconds));
  const transferBytes = new Counter({ name: 'vpool_csi_transfer_bytes_total', help: 'data bytes of volumes and snapshots sent to or received from other nodes (restore and clone across nodes)', labelNames: ['direction'], registers: [register] });
  const transferSeconds = new Histogram({
    name: 'vpool_csi_transfer_duration_seconds',
    help: 'duration of transfers to or from other nodes, by direction and outcome',
    labelNames: ['direction', 'result'],
    buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600],
    registers: [register],
  });
  onTransfer((t) => {
    transferBytes.inc({ direction: t.direction }, t.bytes);
    transferSeconds.observe({ direction: t.direction, result: t.ok ? 'ok' : 'error' }, t.seconds);
  });
  const sends = new Gauge({ name: 'vpool_csi_transfer_sends', help: 'sends to other nodes under way at this node (at most --transfer-max-sends)', registers: [register] });
  const turnedAway = new Counter({ name: 'vpool_csi_transfer_sends_turned_away_total', help: 'sends asked of this node while it was at --transfer-max-sends (the peer backs off and asks again)', registers: [register] });
  onSends({ changed: (n) => sends.set(n), turnedAway: () => turnedAway.inc() });
  new Gauge({
    name: 'vpool_csi_commands_stuck',
    help: 'commands left behind after SIGKILL that have not ended (waiting in the kernel on a device that does not answer)',
    registers: [register],
    collect() {
      this.set(commandsStuck());
    },
  });
  new Gauge({
    name: 'vpool_csi_pv_reads_stuck',
    help: "reads of an lvm PV's metadata headers past their deadline that have not come back (a disk of the pool that does not answer)",
    registers: [register],
    collect() {
      this.set(stuckPvReads().length);
    },
  });

  {
    // One read of the pool per scrape, shared by its gauges (prom-client asks each gauge in turn).
    const collect = () => (poolRead ??= readPool());
    const gauge = (name: string, help: string, labelNames: string[]) => new Gauge({ name, help, labelNames, registers: [register], collect });
    const size = gauge('vpool_csi_pool_size_bytes', 'size of the pool', ['backend']);
    const free = gauge('vpool_csi_pool_available_bytes', 'space a new volume can still be given (after the reserve)', ['backend']);
    const volumes = gauge('vpool_csi_pool_volumes', 'volumes in the pool', ['backend']);
    const up = gauge('vpool_csi_pool_up', '1 when the pool answers, 0 when it does not', ['backend']);
    const thinData = gauge('vpool_csi_thin_pool_data_percent', 'thin pool data use', ['thin_pool']);
    const thinMeta = gauge('vpool_csi_thin_pool_metadata_percent', 'thin pool metadata use', ['thin_pool']);
    const tier = gauge('vpool_csi_volume_tier', 'the lvm tier a volume\'s class names (1 for that tier); a volume without one has no series', ['volume', 'tier']);
    const ioLimit = gauge('vpool_csi_volume_io_limit', 'a volume\'s I/O limit its VolumeAttributesClass set (IOPS, or bytes per second), as recorded; a volume without one has no series', ['volume', 'limit']);
    const readPool = async () => {
      const backend = pool();
      if (!backend) return;
      const labels = { backend: backend.kind };
      try {
        const [cap, vols, thin] = await Promise.all([backend.capacity(), backend.listVolumes(), backend.thinPools?.() ?? []]);
        size.set(labels, cap.totalBytes);
        free.set(labels, cap.availableBytes);
        volumes.set(labels, vols.length);
        thinData.reset();
        thinMeta.reset();
        ioLimit.reset();
        for (const v of vols) for (const [limit, n] of Object.entries(ioLimitsOf(v.parameters))) ioLimit.set({ volume: v.id, limit }, n);
        tier.reset();
        for (const v of vols) if (v.parameters.tier) tier.set({ volume: v.id, tier: v.parameters.tier }, 1);
        for (const t of thin) {
          thinData.set({ thin_pool: t.name }, t.dataPercent);
          thinMeta.set({ thin_pool: t.name }, t.metadataPercent);
        }
        up.set(labels, 1);
      } catch (err) {
        log.warn('metrics: the pool did not answer', { error: String(err) });
        up.set(labels, 0);
      }
    };
  }
  if (orphans) {
    const gauge: Gauge = new Gauge({
      name: 'vpool_csi_orphans',
      help: 'what the last orphan check found and left: volumes without a PV, snapshots without a VolumeSnapshotContent, volumes a crashed clone or restore left unfinished, PVs of this node without a volume',
      labelNames: ['kind'],
      registers: [register],
      collect() {
        for (const [kind, n] of Object.entries(orphans() ?? {})) gauge.set({ kind }, n);
      },
    });
  }
  return {
    contentType: register.contentType,
    scrape: async () => {
      poolRead = null;
      return register.metrics();
    },
  };
}

export interface HttpEndpoints {
  metrics?: Metrics;
  /** Resolves when the driver can serve; rejects with the reason when it cannot. */
  health?: () => Promise<void>;
}

/** `:9808`, `0.0.0.0:9808`, `127.0.0.1:9808` or `[::1]:9808` → host and port. */
export function parseAddress(address: string): { host: string | undefined; port: number } {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([A-Za-z0-9.-]*)):(\d{1,5})$/.exec(address);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new Error(`${JSON.stringify(address)} is not host:port (e.g. :9808 or 127.0.0.1:9808)`);
  return { host: m[1] ?? (m[2] || undefined), port };
}

/** Serves /metrics and /healthz on one address. */
export async function serveHttp(address: string, endpoints: HttpEndpoints): Promise<http.Server> {
  const { host, port } = parseAddress(address);
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    const reply = (code: number, body: string, type = 'text/plain; charset=utf-8') => {
      res.writeHead(code, { 'content-type': type });
      res.end(body);
    };
    if (req.method !== 'GET') return reply(405, 'GET only\n');
    if (path === '/metrics' && endpoints.metrics) {
      const m = endpoints.metrics;
      m.scrape().then((text) => reply(200, text, m.contentType), (err: unknown) => reply(500, `${String(err)}\n`));
      return;
    }
    if (path === '/healthz' && endpoints.health) {
      endpoints.health().then(() => reply(200, 'ok\n'), (err: unknown) => reply(503, `${err instanceof Error ? err.message : String(err)}\n`));
      return;
    }
    reply(404, 'not found\n');
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
