import { readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { DriverContext } from '../csi/context.js';
import { PROJECT_ROOT } from '../csi/proto.js';
import { startServer, type Mode } from '../csi/server.js';
import { DEFAULT_SIZING } from '../csi/sizing.js';
import { KeyedLocks } from '../locks.js';
import { log, setLogLevel } from '../log.js';
import { PathPolicy } from '../node/paths.js';
import { FileAttacher } from '../pool/file/file-attacher.js';
import { FilePool } from '../pool/file/file-pool.js';
import { parseQuantity } from '../units.js';
import type { Attacher, PoolBackend } from '../pool/backend.js';
import { deviceMapperAvailable, LvmCli } from '../pool/lvm/lvm-cli.js';
import { LvmAttacher } from '../pool/lvm/lvm-attacher.js';
import { LvmPool } from '../pool/lvm/lvm-pool.js';
import { validateVgName } from '../pool/lvm/pool-admin.js';

export interface ServeOptions {
  endpoint: string;
  driverName: string;
  nodeId?: string;
  backend: string;
  poolDir?: string;
  vg?: string;
  overprovisionRatio: string;
  mode: string;
  reserve: string;
  defaultSize: string;
  allowedRoot: string[];
  maxVolumesPerNode: string;
  logLevel: string;
}

export function packageVersion(): string {
  return (JSON.parse(readFileSync(path.join(PROJECT_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
}

async function openBackend(opts: ServeOptions): Promise<{ backend: PoolBackend; attacher: Attacher }> {
  const reserve = parseQuantity(opts.reserve);
  if (opts.backend === 'file') {
    if (!opts.poolDir) throw new Error('--pool-dir is required with --backend file');
    const pool = await FilePool.open(path.resolve(opts.poolDir), reserve, { sweep: opts.mode !== 'node' });
    return { backend: pool, attacher: new FileAttacher(pool) };
  }
  if (opts.backend === 'lvm') {
    if (!opts.vg) throw new Error('--vg is required with --backend lvm');
    const ratio = Number(opts.overprovisionRatio);
    if (!(ratio >= 1) || !Number.isFinite(ratio)) throw new Error(`--overprovision-ratio must be a number ≥ 1 (got ${opts.overprovisionRatio})`);
    const activation = deviceMapperAvailable();
    if (!activation) log.warn('no device-mapper in this kernel: LVs are created with activation disabled; the node side cannot stage them');
    const lvm = new LvmCli({ activation });
    const pool = await LvmPool.open(lvm, { vg: validateVgName(opts.vg), reserveBytes: reserve, overprovisionRatio: ratio });
    return { backend: pool, attacher: new LvmAttacher(lvm, opts.vg) };
  }
  throw new Error(`--backend ${opts.backend} is not supported (file or lvm)`);
}

export async function serve(opts: ServeOptions): Promise<void> {
  setLogLevel(opts.logLevel);
  if (!['all', 'controller', 'node'].includes(opts.mode)) throw new Error(`--mode must be all, controller or node (got ${opts.mode})`);
  if (!/^[A-Za-z0-9][A-Za-z0-9.-]{0,62}$/.test(opts.driverName)) throw new Error(`--driver-name ${opts.driverName} is not a valid CSI driver name`);
  const nodeId = opts.nodeId || os.hostname();
  const { backend: pool, attacher } = await openBackend(opts);
  const ctx: DriverContext = {
    driverName: opts.driverName,
    version: packageVersion(),
    nodeId,
    backend: pool,
    attacher,
    paths: await PathPolicy.create(opts.allowedRoot.map((r) => path.resolve(r))),
    locks: new KeyedLocks(),
    sizing: { ...DEFAULT_SIZING, defaultBytes: parseQuantity(opts.defaultSize) },
    maxVolumesPerNode: Number(opts.maxVolumesPerNode),
  };
  const server = await startServer(ctx, opts.mode as Mode, opts.endpoint);
  log.info('serving', { socket: server.socket, driver: ctx.driverName, version: ctx.version, node: nodeId, mode: opts.mode, backend: pool.kind, pool: opts.poolDir ?? opts.vg, allowedRoots: ctx.paths.allowedRoots });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info('draining in-flight calls', { signal });
    void server.shutdown().then(() => {
      log.info('stopped', { signal });
      process.exit(0);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
