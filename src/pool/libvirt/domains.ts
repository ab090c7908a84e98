import { log } from '../../log.js';
import { attr, child, children, parseXml, text, xmlEscape } from './virsh.js';
import { exhausted, precondition } from '../../errors.js';
import type { Libvirt } from './libvirt-api.js';

/** A disk of a domain, as its XML describes it. */
export interface DomainDisk {
  target: string;
  serial?: string;
  sourcePool?: string;
  sourceVolume?: string;
  sourceFile?: string;
  readOnly: boolean;
  shared: boolean;
  /** QEMU's throttling of the disk: libvirt's <iotune> fields that are set (absent: none). */
  iotune: Record<string, number>;
}

export interface DomainInfo {
  uuid: string;
  name: string;
  running: boolean;
  disks: DomainDisk[];
}

/** Where an rbd pool's images are: libvirt cannot attach them as `volume` disks, only as network disks. */
export interface RbdSource {
  /** The Ceph pool (the libvirt pool's source name). */
  cephPool: string;
  hosts: { name: string; port?: string }[];
  auth?: { username: string; secretUuid: string };
}

export interface DiskSpec {
  pool: string;
  volume: string;
  /** Set for rbd pools: the image is attached as a network disk. */
  rbd?: RbdSource & { image: string };
  format: string;
  serial: string;
  readOnly: boolean;
  shared: boolean;
  /** libvirt's cache mode; io='native' goes with the O_DIRECT modes only. */
  cache: string;
  /** <iotune> fields (io-tune.ts); those at 0 are left out. */
  iotune?: Record<string, number>;
}

export function parseDomain(xml: string): DomainInfo {
  const dom = parseXml(xml).domain as Parameters<typeof child>[0];
  const devices = child(dom, 'devices');
  const disks: DomainDisk[] = children(devices, 'disk')
    .filter((d) => (attr(d, 'device') ?? 'disk') === 'disk')
    .map((d) => {
      const source = child(d, 'source');
      const tune = child(d, 'iotune');
      const iotune: Record<string, number> = {};
      if (tune && typeof tune === 'object' && !Array.isArray(tune)) {
        for (const key of Object.keys(tune)) {
          const v = Number(text(tune, key));
          if (Number.isSafeInteger(v) && v > 0) iotune[key] = v;
        }
      }
      return {
        target: attr(child(d, 'target'), 'dev') ?? '',
        serial: text(d, 'serial'),
        sourcePool: attr(source, 'pool'),
        sourceVolume: attr(source, 'volume'),
        sourceFile: attr(source, 'file') ?? attr(source, 'dev') ?? attr(source, 'name'),
        readOnly: child(d, 'readonly') !== undefined,
        shared: child(d, 'shareable') !== undefined,
        iotune,
      };
    });
  const root = dom && typeof dom === 'object' && !Array.isArray(dom) ? dom : undefined;
  const id = attr(root, 'id');
  return { uuid: (text(dom, 'uuid') ?? '').toLowerCase(), name: text(dom, 'name') ?? '', running: id !== undefined && id !== '-1', disks };
}

/** The source lines of a disk: a pool volume, or for rbd the network source libvirt needs instead. */
function sourceXml(d: DiskSpec): string[] {
  if (!d.rbd) return [`  <source pool='${xmlEscape(d.pool)}' volume='${xmlEscape(d.volume)}'/>`];
  const r = d.rbd;
  return [
    ...(r.auth ? [`  <auth username='${xmlEscape(r.auth.username)}'>`, `    <secret type='ceph' uuid='${xmlEscape(r.auth.secretUuid)}'/>`, '  </auth>'] : []),
    `  <source protocol='rbd' name='${xmlEscape(`${r.cephPool}/${r.image}`)}'>`,
    ...r.hosts.map((h) => `    <host name='${xmlEscape(h.name)}'${h.port ? ` port='${xmlEscape(h.port)}'` : ''}/>`),
    '  </source>',
  ];
}

function tuneLines(iotune: Record<string, number> | undefined): string[] {
  const set = Object.entries(iotune ?? {}).filter(([, v]) => v > 0);
  return set.length ? ['  <iotune>', ...set.map(([f, v]) => `    <${f}>${v}</${f}>`), '  </iotune>'] : [];
}

export function diskXml(d: DiskSpec, target: string): string {
  // io='native' needs O_DIRECT (cache none or directsync) and a local file or device.
  const io = !d.rbd && (d.cache === 'none' || d.cache === 'directsync') ? " io='native'" : '';
  return [
    `<disk type='${d.rbd ? 'network' : 'volume'}' device='disk'>`,
    `  <driver name='qemu' type='${xmlEscape(d.format)}' cache='${xmlEscape(d.cache)}'${io} discard='unmap'/>`,
    ...sourceXml(d),
    `  <target dev='${xmlEscape(target)}' bus='virtio'/>`,
    `  <serial>${xmlEscape(d.serial)}</serial>`,
    ...(d.readOnly ? ['  <readonly/>'] : []),
    ...(d.shared ? ['  <shareable/>'] : []),
    ...tuneLines(d.iotune),
    '</disk>',
  ].join('\n');
}

/**
 * QEMU opens rbd images with a block module packaged apart from QEMU (Debian's qemu-block-extra);
 * without it the hot-plug fails with "Unknown driver 'rbd'" (blockdev-add) or "Unknown protocol"
 * (older QEMU), which says nothing about what to install.
 */
export function rbdModuleMissing(disk: DiskSpec, err: unknown): Error | null {
  if (!disk.rbd || !/Unknown (driver|protocol) '?rbd/i.test(String(err))) return null;
  return precondition(`the hypervisor's QEMU cannot open rbd images: it lacks its rbd block module (Debian and Ubuntu: install qemu-block-extra; RHEL: qemu-kvm-block-rbd); libvirt said: ${String(err instanceof Error ? err.message : err).trim()}`);
}

/** vdb, vdc, … vdz, vdaa, vdab, …: the first virtio target name neither XML uses (vda is the boot disk by habit). */
export function freeTarget(used: Set<string>): string {
  const letters = 'abcdefghijklmnopqrstuvwxyz';
  for (let i = 1; i < 26 * 27; i++) {
    const suffix = i < 26 ? letters[i] : letters[Math.floor(i / 26) - 1] + letters[i % 26];
    const t = `vd${suffix}`;
    if (!used.has(t)) return t;
  }
  throw exhausted('the domain has no free virtio target name');
}

/** The hypervisor's domains, read from libvirt on every call (libvirt is the source of truth). */
export class Domains {
  constructor(private readonly libvirt: Libvirt) {}

  /** A domain by UUID or name, with its live definition when running; null when libvirt has none. */
  async get(nodeId: string): Promise<DomainInfo | null> {
    const xml = await this.libvirt.domainXml(nodeId);
    return xml === null ? null : parseDomain(xml);
  }

  /** Every domain (running or not); one dumpxml each, a few at a time. */
  async all(): Promise<DomainInfo[]> {
    const uuids = await this.libvirt.domainUuids();
    const out: DomainInfo[] = [];
    for (let i = 0; i < uuids.length; i += 8) {
      const batch = await Promise.all(uuids.slice(i, i + 8).map((u) => this.get(u)));
      for (const d of batch) if (d) out.push(d); // undefined meanwhile: not there
    }
    return out;
  }

  /** Hot-plugs a disk: live and persistent when the domain runs, persistent only when it does not. */
  async attach(dom: DomainInfo, disk: DiskSpec): Promise<string> {
    const used = new Set(dom.disks.map((d) => d.target));
    if (dom.running) {
      // The persistent definition may hold disks the live one does not (attached with --config only).
      const inactive = await this.libvirt.domainXml(dom.uuid, true);
      if (inactive) for (const d of parseDomain(inactive).disks) used.add(d.target);
    }
    const target = freeTarget(used);
    try {
      await this.libvirt.attachDevice(dom.uuid, diskXml(disk, target), { live: dom.running, config: true });
    } catch (err) {
      throw rbdModuleMissing(disk, err) ?? err;
    }
    return target;
  }

  /**
   * Detaches a disk from the definition and, when running, asks the guest to release it, then waits
   * (bounded) until the live definition no longer has it: a guest that has not let go still uses it.
   * libvirt itself waits a few seconds for the guest inside the detach, which is enough for most; a
   * slower guest is waited for on libvirt's device-removed event. On the held RPC connection the
   * event is watched from before the detach (its registration answered first), so it cannot be missed; over
   * virsh a watch is a process, started only when the guest was slow. A once-a-second read of the
   * live definition backs the event up (a watch that ended with its connection, or started late).
   */
  async detach(dom: DomainInfo, target: string, waitMs: number): Promise<boolean> {
    const inactive = dom.running ? await this.libvirt.domainXml(dom.uuid, true) : null;
    const inConfig = !dom.running || (inactive !== null && parseDomain(inactive).disks.some((d) => d.target === target));
    const liveHas = dom.running && dom.disks.some((d) => d.target === target);
    const started = Date.now();
    const deadline = started + waitMs;
    const early = liveHas && this.libvirt.transport === 'rpc' ? this.libvirt.deviceRemoved(dom.uuid, waitMs + 1000) : null;
    try {
      // Registered before the detach (one round trip), or the event could come first; a watch that
      // could not be registered leaves the once-a-second read.
      if (early?.ready) await early.ready;
      // libvirt finds the disk to detach by its target alone (as virsh detach-disk does).
      if (liveHas || inConfig) await this.libvirt.detachDevice(dom.uuid, `<disk device='disk'><target dev='${xmlEscape(target)}'/></disk>`, { live: liveHas, config: inConfig });
      if (!liveHas) return true;
      const released = async () => {
        const now = await this.get(dom.uuid);
        return !now || !now.running || !now.disks.some((d) => d.target === target);
      };
      if (await released()) return true;
      const removed = early ?? this.libvirt.deviceRemoved(dom.uuid, Math.max(1000, deadline - Date.now()));
      try {
        let event: Promise<string | null> = removed.next();
        for (;;) {
          const left = deadline - Date.now();
          if (left <= 0) return false;
          let timer: NodeJS.Timeout | undefined;
          const woke = await Promise.race([event.then((line) => (line === null ? 'ended' : 'event')), new Promise<'poll'>((r) => (timer = setTimeout(() => r('poll'), Math.min(1000, left))))]);
          clearTimeout(timer);
          if (woke === 'event') event = removed.next();
          // A watch that ended (its connection or process gone) leaves the once-a-second read.
          if (woke === 'ended') event = new Promise(() => undefined);
          if (await released()) {
            log.info('a slow guest released the disk', { domain: dom.name, target, via: woke === 'event' ? 'event' : 'poll', ms: Date.now() - started });
            return true;
          }
        }
      } finally {
        if (removed !== early) await removed.stop();
      }
    } finally {
      await early?.stop();
    }
  }

  /**
   * Sets a disk's throttling wherever the domain has it: live while it runs (QEMU throttles at once,
   * the guest sees nothing else change) and in the persistent definition, so a restart keeps it.
   */
  async setTune(dom: DomainInfo, target: string, fields: Record<string, number>): Promise<void> {
    const inactive = dom.running ? await this.libvirt.domainXml(dom.uuid, true) : null;
    const inConfig = !dom.running || (inactive !== null && parseDomain(inactive).disks.some((d) => d.target === target));
    const live = dom.running && dom.disks.some((d) => d.target === target);
    if (live || inConfig) await this.libvirt.setBlockIoTune(dom.uuid, target, fields, { live, config: inConfig });
  }

  /** Tells a running domain its disk grew, so the guest sees the new size at once. */
  async blockResize(dom: DomainInfo, target: string, bytes: number): Promise<void> {
    await this.libvirt.blockResize(dom.uuid, target, bytes);
  }
}
