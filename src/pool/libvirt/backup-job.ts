import { log } from '../../log.js';
import { unavailable, internal } from '../../errors.js';
import type { DomainDisk, DomainInfo } from './domains.js';
import { parseInfo, xmlEscape, type Virsh } from './virsh.js';
import { withXmlFile as withXml } from './xml-file.js';

/**
 * A point-in-time copy of a disk a running guest is writing: a libvirt push backup job (QEMU's
 * copy-before-write) into an existing file (`targetPath`, made by the caller), waited for to the end.
 */
export async function copyRunningDisk(virsh: Virsh, running: { domain: DomainInfo; disk: DomainDisk }, targetPath: string, format: string, snapshot: string): Promise<void> {
  const others = running.domain.disks.filter((d) => d.target !== running.disk.target).map((d) => `    <disk name='${xmlEscape(d.target)}' backup='no'/>`);
  const xml = [
    "<domainbackup mode='push'>",
    '  <disks>',
    `    <disk name='${xmlEscape(running.disk.target)}' backup='yes' type='file'>`,
    `      <target file='${xmlEscape(targetPath)}'/>`,
    `      <driver type='${format}'/>`,
    '    </disk>',
    ...others,
    '  </disks>',
    '</domainbackup>',
  ].join('\n');
  const dom = running.domain.uuid;
  log.info('copying a running disk with a backup job', { domain: running.domain.name, disk: running.disk.target, snapshot });
  await withXml(xml, (file) => virsh.run(['backup-begin', '--domain', dom, '--backupxml', file, '--reuse-external']));
  const deadline = Date.now() + 3_600_000;
  for (;;) {
    const active = parseInfo(await virsh.run(['domjobinfo', '--domain', dom]));
    if ((active['Job type'] ?? 'None') === 'None') break;
    if (Date.now() > deadline) throw unavailable(`backup job on ${running.domain.name} did not finish within an hour`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const done = parseInfo(await virsh.run(['domjobinfo', '--domain', dom, '--completed']));
  if (done['Job type'] !== 'Completed' || (done.Operation && done.Operation !== 'Backup')) {
    throw internal(`backup job on ${running.domain.name} ended as ${done['Job type'] ?? 'unknown'} (${done.Operation ?? '?'})`);
  }
}
