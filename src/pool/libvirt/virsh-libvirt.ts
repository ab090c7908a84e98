import type { Affect, EventWatch, Libvirt, PoolInfo } from './libvirt-api.js';
import { parseInfo, Virsh } from './virsh.js';
import { withXmlFile } from './xml-file.js';

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
const affectArgs = (a: Affect) => [...(a.live ? ['--live'] : []), ...(a.config ? ['--config'] : [])];

/**
 * libvirt through virsh, a process and a connection per call: for URIs the RPC client does not
 * speak (qemu+ssh://, qemu+tls://, a session daemon), where the connection is libvirt's to make.
 */
export class VirshLibvirt implements Libvirt {
  readonly transport = 'virsh' as const;
  readonly virsh: Virsh;

  constructor(
    readonly uri: string,
    timeoutMs = 120_000,
  ) {
    this.virsh = new Virsh(uri, timeoutMs);
  }

  async hostname(): Promise<string> {
    return (await this.virsh.run(['hostname'])).trim();
  }

  poolXml(pool: string): Promise<string | null> {
    return this.virsh.maybe(['pool-dumpxml', '--pool', pool]);
  }

  async poolInfo(pool: string): Promise<PoolInfo> {
    const info = parseInfo(await this.virsh.run(['pool-info', '--pool', pool, '--bytes']));
    const state = info.State ?? 'unknown';
    return { state, running: state === 'running', capacity: Number(info.Capacity ?? 0), allocation: Number(info.Allocation ?? 0), available: Number(info.Available ?? 0) };
  }

  async volumeNames(pool: string): Promise<string[]> {
    const out = await this.virsh.run(['vol-list', '--pool', pool]);
    return out
      .split('\n')
      .map((l) => l.trim().split(/\s+/)[0])
      .filter((n): n is string => !!n);
  }

  volumeXml(pool: string, name: string): Promise<string | null> {
    return this.virsh.maybe(['vol-dumpxml', '--vol', name, '--pool', pool]);
  }

  async createVolume(pool: string, xml: string): Promise<void> {
    await withXmlFile(xml, (file) => this.virsh.run(['vol-create', '--pool', pool, '--file', file]));
  }

  async createVolumeFrom(pool: string, xml: string, source: string, timeoutMs: number): Promise<void> {
    await withXmlFile(xml, (file) => this.virsh.run(['vol-create-from', '--pool', pool, '--file', file, '--vol', source, '--inputpool', pool], { timeoutMs }));
  }

  async resizeVolume(pool: string, name: string, capacity: number): Promise<void> {
    await this.virsh.run(['vol-resize', '--vol', name, '--pool', pool, '--capacity', String(capacity)]);
  }

  async wipeVolume(pool: string, name: string, algorithm: string, timeoutMs: number): Promise<void> {
    await this.virsh.run(['vol-wipe', '--vol', name, '--pool', pool, '--algorithm', algorithm], { timeoutMs });
  }

  async deleteVolume(pool: string, name: string, opts: { withSnapshots?: boolean } = {}): Promise<void> {
    await this.virsh.run(['vol-delete', '--vol', name, '--pool', pool, ...(opts.withSnapshots ? ['--delete-snapshots'] : [])]);
  }

  domainXml(domain: string, inactive = false): Promise<string | null> {
    return this.virsh.maybe(['dumpxml', '--domain', domain, ...(inactive ? ['--inactive'] : [])]);
  }

  async domainUuids(): Promise<string[]> {
    return (await this.virsh.run(['list', '--all', '--uuid']))
      .split('\n')
      .map((l) => l.trim())
      .filter((l) => UUID_RE.test(l));
  }

  async attachDevice(domain: string, xml: string, affect: Affect): Promise<void> {
    await withXmlFile(xml, (file) => this.virsh.run(['attach-device', '--domain', domain, '--file', file, ...affectArgs(affect)]));
  }

  async detachDevice(domain: string, xml: string, affect: Affect): Promise<void> {
    await withXmlFile(xml, (file) => this.virsh.run(['detach-device', '--domain', domain, '--file', file, ...affectArgs(affect)]));
  }

  async blockResize(domain: string, target: string, bytes: number): Promise<void> {
    await this.virsh.run(['blockresize', '--domain', domain, '--path', target, '--size', `${bytes}B`]);
  }

  async setBlockIoTune(domain: string, target: string, fields: Record<string, number>, affect: Affect): Promise<void> {
    const options = Object.entries(fields).flatMap(([f, v]) => [`--${f.replace(/_/g, '-')}`, String(v)]);
    await this.virsh.run(['blkdeviotune', '--domain', domain, '--device', target, ...options, ...affectArgs(affect)]);
  }

  deviceRemoved(domain: string, timeoutMs: number): EventWatch {
    return this.virsh.events(domain, 'device-removed', timeoutMs);
  }

  close(): void {}
}
