import type { Command } from 'commander';
import { formatBytes } from '../units.js';
import { describeFailure, EXIT } from './call-errors.js';
import { connectInspect, isUnimplemented } from '../csi/inspect-client.js';
import { humanDuration } from './view/age.js';
import { chooseFormat, machine, UsageError } from './view/output.js';
import type { DriverStatus, PoolStatusReport } from '../driver/status/types.js';
import type { OperationView } from '../operations.js';

/** Exit code of `vpool-csi status` when something needs a person (the ATTENTION lines). */
export const NEEDS_ATTENTION = 5;

const isError = (x: object | undefined): x is { error: string } => !!x && 'error' in x;

/** The status screen: `kubectl describe`'s layout (a label, its value, sections indented), one screen for the node. */
export function renderStatus(s: DriverStatus, now: number): string {
  const out: string[] = [];
  const row = (label: string, value: string) => out.push(`${`${label}:`.padEnd(14)}${value}`);
  const d = s.driver;
  row('Driver', `${d.name} ${d.version}, ${d.mode} mode, node ${d.nodeId}, up ${humanDuration(now - Date.parse(d.startedAt))}`);
  row('Ready', d.ready ? 'yes' : `no: ${d.notReadyBecause}`);
  row('Backend', d.backend);
  if (!s.pool) row('Pool', d.ready ? 'none in this process (hypervisor mode: the controller holds it)' : '<not open>');
  else if (isError(s.pool)) row('Pool', `did not answer: ${s.pool.error}`);
  else pool(s.pool, row, out);
  if (s.volumes) row('Volumes', isError(s.volumes) ? `could not be listed: ${s.volumes.error}` : `${s.volumes.atLeast ? 'at least ' : ''}${s.volumes.count} (${s.volumes.attached} attached, ${s.volumes.staged} mounted here, ${s.volumes.abnormal} unhealthy${s.volumes.limited ? `, ${s.volumes.limited} with I/O limits` : ''})`);
  if (s.snapshots) row('Snapshots', isError(s.snapshots) ? `could not be listed: ${s.snapshots.error}` : `${s.snapshots.count}${s.snapshots.groups ? ` (${s.snapshots.groups} group snapshots)` : ''}`);
  row('Transfers', s.transfers ? `${s.transfers.sending} sending to other nodes` : 'off (no --transfer-listen)');
  if (s.copies) {
    row('Copies', s.copies.length ? `${s.copies.length} under way:` : 'none under way');
    for (const c of s.copies) out.push(`  ${copyLine(c, now)}`);
  }
  if (!s.orphans) row('Orphans', 'not checked (--orphan-check-interval 0)');
  else if ('pending' in s.orphans) row('Orphans', 'the first check has not run yet');
  else {
    const found = Object.entries(s.orphans.counts).filter(([, n]) => n > 0);
    row('Orphans', found.length ? found.map(([k, n]) => `${n} ${k.replace(/_/g, ' ')}`).join(', ') : 'none found');
  }
  if (!s.recentProblems.length) row('Problems', 'none logged since the start');
  else {
    row('Problems', `the last ${s.recentProblems.length}, newest last:`);
    for (const p of s.recentProblems) out.push(`  ${humanDuration(now - Date.parse(p.at))} ago${p.where ? `  ${p.where}` : ''}${p.code ? `  ${p.code}` : ''}  ${p.message}`);
  }
  if (s.attention.length) {
    out.push('', 'ATTENTION:');
    for (const a of s.attention) out.push(`  - ${a}`);
  } else out.push('', 'All is well.');
  return out.join('\n') + '\n';
}

function pool(p: PoolStatusReport, row: (l: string, v: string) => void, out: string[]): void {
  row('Pool', p.location);
  const share = p.totalBytes > 0 ? ` (${Math.round((p.availableBytes / p.totalBytes) * 100)}%)` : '';
  row('Space', `${formatBytes(p.totalBytes)} total, ${formatBytes(p.availableBytes)} free for new volumes${share} after a reserve of ${formatBytes(p.reserveBytes)}`);
  for (const t of p.thinPools) row('Thin pool', `${t.name}: data ${t.dataPercent}%, metadata ${t.metadataPercent}%`);
  if (p.devices.length) {
    out.push('Devices:');
    for (const dev of p.devices) {
      const free = dev.freeBytes === undefined ? '' : `, ${formatBytes(dev.freeBytes)} free`;
      out.push(`  ${dev.name}  ${formatBytes(dev.sizeBytes)}${free}${dev.fsType ? `, ${dev.fsType}` : ''}${dev.missing ? '  MISSING' : ''}`);
    }
  }
}

/** `vpool-csi status`: one screen for the node, from the running driver's Inspect service. */
export function addStatusCommand(program: Command): void {
  program
    .command('status')
    .description(`the node at a glance: driver, pool, space, volumes, snapshots, transfers, orphans, the last problems (exit ${NEEDS_ATTENTION} when something needs attention)`)
    .option('--endpoint <unix:///path>', 'CSI socket', process.env.VPOOL_CSI_ENDPOINT ?? 'unix:///run/vpool-csi/csi.sock')
    .option('-o, --output <format>', 'table, json or yaml (default: table on a terminal, json otherwise)')
    .option('-v, --verbose', 'on failure, also print the raw gRPC status')
    .action(async (o: { endpoint: string; output?: string; verbose?: boolean }) => {
      const format = chooseFormat(o.output, !!process.stdout.isTTY);
      if (format === 'name' || format === 'wide') throw new UsageError(`-o ${format}: status prints table, json or yaml`);
      const i = connectInspect(o.endpoint);
      let s: DriverStatus;
      try {
        s = await i.status();
      } catch (err) {
        const f = isUnimplemented(err) ? { message: `the driver at ${o.endpoint} is older than this command (no status service): upgrade it`, exitCode: EXIT.error } : describeFailure(err, o.endpoint.replace(/^unix:\/\//, ''));
        if (o.verbose && 'raw' in f && f.raw) process.stderr.write(`${f.raw}\n`);
        process.stderr.write(`vpool-csi: ${f.message}\n`);
        process.exitCode = f.exitCode;
        return;
      } finally {
        i.close();
      }
      process.stdout.write(format === 'table' ? renderStatus(s, Date.now()) : await machine(s, format, false));
      if (s.attention.length) process.exitCode = NEEDS_ATTENTION;
    });
}

/** One copy under way as a person reads it: what, from where, how far, for how long. */
export function copyLine(c: OperationView, now: number): string {
  const share = c.totalBytes > 0 ? Math.min(100, Math.floor((c.doneBytes / c.totalBytes) * 100)) : 0;
  const how = c.phase === 'sync' ? 'all written, waiting for the disk' : c.reported ? `${share}% (${formatBytes(c.doneBytes)} of ${formatBytes(c.totalBytes)})` : `${formatBytes(c.totalBytes)}, progress not reported by this pool`;
  return `${c.name} (${c.volumeId}): ${c.kind === 'receive' ? `receiving ${c.source} from ${c.fromNode ?? 'another node'}` : c.kind === 'move' ? `moving to ${c.source}` : `copying ${c.source}`}, ${how}, for ${humanDuration(now - Date.parse(c.startedAt))}`;
}
