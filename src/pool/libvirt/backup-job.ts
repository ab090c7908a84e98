import { log } from '../../log.js';
import { onShutdown } from '../../shutdown-hooks.js';
import { unavailable, internal } from '../../errors.js';
import type { DomainDisk, DomainInfo } from './domains.js';
import { parseInfo, xmlEscape, type Virsh } from './virsh.js';
import { withXmlFile as withXml } from './xml-file.js';

/** One disk of a running domain and the file its copy goes to (made by the caller). */
export interface DiskCopy {
  disk: DomainDisk;
  targetPath: string;
  format: string;
}

/**
 * A point-in-time copy of a disk a running guest is writing: a libvirt push backup job (QEMU's
 * copy-before-write) into an existing file (`targetPath`, made by the caller), waited for to the end.
 */
export async function copyRunningDisk(virsh: Virsh, running: { domain: DomainInfo; disk: DomainDisk }, targetPath: string, format: string, snapshot: string): Promise<void> {
  await copyRunningDisks(virsh, running.domain, [{ disk: running.disk, targetPath, format }], snapshot);
}

/**
 * Point-in-time copies of several disks of one running domain, all of the same instant: one backup
 * job over all of them. libvirt starts it as one QMP transaction (a blockdev-backup per disk, the
 * guest's I/O drained across all of them meanwhile), so no write lands in one copy that was issued
 * after a write missing from another. Disks of the domain not named are left out of the job.
 */
export async function copyRunningDisks(virsh: Virsh, domain: DomainInfo, copies: readonly DiskCopy[], label: string, timeoutMs = 3_600_000): Promise<void> {
  // A domain runs one backup job at a time: snapshots of two of its disks (each under its own volume's lock) take turns here.
  const before = jobs.get(domain.uuid) ?? Promise.resolve();
  const deadline = Date.now() + timeoutMs;
  const mine = before.then(() => runJob(virsh, domain, copies, label, deadline));
  const tail = mine.catch(() => undefined);
  jobs.set(domain.uuid, tail);
  void tail.then(() => {
    if (jobs.get(domain.uuid) === tail) jobs.delete(domain.uuid);
  });
  return mine;
}

const jobs = new Map<string, Promise<unknown>>();
/** How long the job's state may go unread (libvirtd restarting) before the job is aborted and the copy given up. */
const POLL_GIVE_UP_MS = 60_000;

async function runJob(virsh: Virsh, domain: DomainInfo, copies: readonly DiskCopy[], label: string, deadline: number): Promise<void> {
  const named = new Set(copies.map((c) => c.disk.target));
  const others = domain.disks.filter((d) => !named.has(d.target)).map((d) => `    <disk name='${xmlEscape(d.target)}' backup='no'/>`);
  const xml = [
    "<domainbackup mode='push'>",
    '  <disks>',
    ...copies.flatMap((c) => [
      `    <disk name='${xmlEscape(c.disk.target)}' backup='yes' type='file'>`,
      `      <target file='${xmlEscape(c.targetPath)}'/>`,
      `      <driver type='${c.format}'/>`,
      '    </disk>',
    ]),
    ...others,
    '  </disks>',
    '</domainbackup>',
  ].join('\n');
  const dom = domain.uuid;
  log.info('copying a running disk with a backup job', { domain: domain.name, disks: copies.map((c) => c.disk.target).join(','), snapshot: label });
  await withXml(xml, (file) => virsh.run(['backup-begin', '--domain', dom, '--backupxml', file, '--reuse-external']));
  const abort = async (why: string) => {
    await virsh.run(['domjobabort', '--domain', dom]).then(
      () => log.warn('aborted a backup job', { domain: domain.name, snapshot: label, why }),
      (err: unknown) => log.error('cannot abort a backup job', { domain: domain.name, snapshot: label, why, err: String(err) }),
    );
  };
  // Leaving with the job still running would let QEMU write into targets the caller is about to remove.
  const unhook = onShutdown(() => abort('the driver is stopping'));
  try {
    let failingSince = 0;
    for (;;) {
      let active: Record<string, string>;
      try {
        active = parseInfo(await virsh.run(['domjobinfo', '--domain', dom]));
        failingSince = 0;
      } catch (err) {
        // A libvirtd restart or a slow answer: the job goes on in QEMU meanwhile; only a long silence gives it up.
        failingSince ||= Date.now();
        if (Date.now() - failingSince > POLL_GIVE_UP_MS) {
          await abort('its state could not be read');
          throw err;
        }
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if ((active['Job type'] ?? 'None') === 'None') break;
      if (Date.now() > deadline) {
        // Only this process's jobs run here: the domain's jobs queue above, and a job of anyone else makes backup-begin fail.
        await abort('past its deadline');
        throw unavailable(`backup job on ${domain.name} did not finish in time (aborted)`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  } finally {
    unhook();
  }
  const done = parseInfo(await virsh.run(['domjobinfo', '--domain', dom, '--completed']));
  if (done['Job type'] !== 'Completed' || (done.Operation && done.Operation !== 'Backup')) {
    throw internal(`backup job on ${domain.name} ended as ${done['Job type'] ?? 'unknown'} (${done.Operation ?? '?'})`);
  }
}
