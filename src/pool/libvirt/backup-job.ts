import { log } from '../../log.js';
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
  for (;;) {
    const active = parseInfo(await virsh.run(['domjobinfo', '--domain', dom]));
    if ((active['Job type'] ?? 'None') === 'None') break;
    if (Date.now() > deadline) {
      // Stopped before the caller removes its targets: a job left running would write into deleted files.
      // (Only this process's jobs run here: the domain's jobs queue above, and a job of anyone else makes backup-begin fail.)
      await virsh.run(['domjobabort', '--domain', dom]).catch((err) => log.error('cannot abort a backup job past its hour', { domain: domain.name, err: String(err) }));
      throw unavailable(`backup job on ${domain.name} did not finish in time (aborted)`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  const done = parseInfo(await virsh.run(['domjobinfo', '--domain', dom, '--completed']));
  if (done['Job type'] !== 'Completed' || (done.Operation && done.Operation !== 'Backup')) {
    throw internal(`backup job on ${domain.name} ended as ${done['Job type'] ?? 'unknown'} (${done.Operation ?? '?'})`);
  }
}
