import type { Command } from 'commander';

interface TakeOptions {
  out: string;
  source: string;
  endpoint?: string;
  snapshotId?: string;
  service?: string;
  ca?: string;
  tokenFile?: string;
  namespace?: string;
  snapshot?: string;
  snapshotHandle?: string;
  baseId?: string;
  maxResults?: string;
}

interface RestoreOptions {
  from: string;
  to: string;
  upto?: string;
}

/** Runs `work` so that Ctrl-C (or SIGTERM) stops it: the command says what is left (`left`) and exits 130. */
async function interruptible(left: string, work: (signal: AbortSignal) => Promise<void>): Promise<void> {
  const stop = new AbortController();
  const on = () => stop.abort(new Error('interrupted'));
  process.once('SIGINT', on);
  process.once('SIGTERM', on);
  await work(stop.signal).catch((err: unknown) => {
    if (!stop.signal.aborted) throw err;
    process.stderr.write(`vpool-csi: interrupted; ${left}\n`);
    process.exit(130);
  });
}

/**
 * `vpool-csi backup`: incremental backups through the SnapshotMetadata API, as a backup application
 * makes them: a full backup of a snapshot's allocated blocks, then increments of the blocks changed
 * since the snapshot backed up before, read from a volume restored from the snapshot (attached to the
 * backup's pod as a block device), written to a directory; and a restore of a full backup plus its
 * increments onto a blank volume.
 */
export function addBackupCommands(program: Command): void {
  const backup = program.command('backup').description('back up snapshots through the SnapshotMetadata API (changed-block tracking), and restore them');
  backup
    .command('take')
    .description('back up one snapshot into --out: in full, or (with --base-id) the blocks changed since a snapshot the backup holds')
    .requiredOption('--out <dir>', 'the backup directory (made if missing)')
    .requiredOption('--source <device>', 'the snapshot\'s data: a volume restored from it, as a block device (or an image file)')
    .option('--endpoint <unix:///path>', 'ask the driver\'s CSI socket directly (on the node), by snapshot ID')
    .option('--snapshot-id <id>', 'with --endpoint: the snapshot (its CSI ID)')
    .option('--service <host:port>', 'ask the Kubernetes SnapshotMetadata API (the external-snapshot-metadata sidecar; its SnapshotMetadataService\'s address)')
    .option('--ca <file>', 'with --service: the CA of the service (the SnapshotMetadataService\'s caCert, PEM)')
    .option('--token-file <file>', 'with --service: a ServiceAccount token for the service\'s audience (read again for each call)')
    .option('--namespace <ns>', 'with --service: the VolumeSnapshot\'s namespace')
    .option('--snapshot <name>', 'with --service: the VolumeSnapshot')
    .option('--snapshot-handle <id>', 'with --service: the snapshot\'s CSI handle (its VolumeSnapshotContent\'s status.snapshotHandle), recorded so a later increment can name it as its base')
    .option('--base-id <id>', 'back up only what changed since this snapshot (its CSI ID or handle), which the backup must hold')
    .option('--max-results <n>', 'ranges per message of the metadata stream (0: the server\'s choice)', '0')
    .action(async (o: TakeOptions) => {
      const { take } = await import('../backup/take.js');
      await interruptible('nothing of this run is kept', (signal) => take(o, signal));
    });
  backup
    .command('restore')
    .description('write a full backup and its increments, up to a snapshot, onto a blank volume')
    .requiredOption('--from <dir>', 'the backup directory')
    .requiredOption('--to <device>', 'a blank volume (it reads zeros where the backup holds nothing), as a block device or an image file')
    .option('--upto <snapshot>', 'the snapshot to restore (default: the last backed up)')
    .action(async (o: RestoreOptions) => {
      const { restore } = await import('../backup/restore.js');
      await interruptible('the volume holds a partial restore', (signal) => restore(o, signal));
    });
}
