import { notFound, precondition, unavailable } from '../../errors.js';
import type { Attachment, PublishSpec, PublishState, ControllerAttacher } from '../backend.js';
import type { LibvirtPool } from './libvirt-pool.js';
import { SERIAL_RE, serialFor } from './names.js';
import { tuneMatches, tuneOf } from './io-tune.js';
import type { DomainInfo } from './domains.js';

export interface PublisherOptions {
  /** libvirt disk cache mode: none (O_DIRECT, with io='native') unless the pool's filesystem refuses O_DIRECT. */
  diskCache: string;
  /** How long ControllerUnpublishVolume waits for the guest to let go of a disk. */
  detachWaitMs: number;
}

/**
 * Hypervisor mode: a node is a libvirt domain (its ID the domain's UUID, which the guest reads
 * from /sys/class/dmi/id/product_uuid, or its name), and publishing a volume hot-plugs it into the
 * domain as a virtio disk whose serial the node looks for. The domains' own definitions are the
 * record of what is attached where.
 */
export class LibvirtAttacher implements ControllerAttacher {
  constructor(
    private readonly pool: LibvirtPool,
    private readonly opts: PublisherOptions,
  ) {}

  async resolveNode(nodeId: string): Promise<string | null> {
    return (await this.pool.domains.get(nodeId))?.uuid ?? null;
  }

  async attachments(volumeId: string): Promise<Attachment[]> {
    const v = await this.pool.find('vol', volumeId);
    if (!v) return [];
    return (await this.pool.disks.attached(v)).map(({ domain, disk }) => ({ nodeId: domain.uuid, readOnly: disk.readOnly, shared: disk.shared }));
  }

  async publishedNodes(volumeIds: string[]): Promise<Map<string, string[]>> {
    const domains = await this.pool.domains.all();
    return new Map(volumeIds.map((id) => [id, domains.filter((d) => d.disks.some((disk) => this.pool.disks.isVolume(disk, id))).map((d) => d.uuid)]));
  }

  async publish(volumeId: string, nodeId: string, spec: PublishSpec, decide: (state: PublishState) => boolean): Promise<Record<string, string>> {
    const serial = serialFor(volumeId);
    const context = { serial, devicePath: `/dev/disk/by-id/virtio-${serial}` };
    const found = await this.pool.findWithLimits(volumeId);
    if (!found) throw notFound(`volume ${volumeId} does not exist`);
    const { v, limits } = found;
    // One scan of the domains answers everything: which is the node, where the volume is, how full the node is.
    const domains = await this.pool.domains.all();
    const dom = domains.find((d) => d.uuid === nodeId.toLowerCase() || d.name === nodeId);
    if (!dom) throw notFound(`node ${nodeId} is not a domain of ${this.pool.libvirt.uri}`);
    const attachments = domains.flatMap((d) => this.pool.disks.of(d, v).map((disk) => ({ nodeId: d.uuid, readOnly: disk.readOnly, shared: disk.shared })));
    const nodeVolumes = dom.disks.filter((d) => d.serial !== undefined && SERIAL_RE.test(d.serial)).length;
    if (!decide({ nodeId: dom.uuid, attachments, nodeVolumes })) {
      // Attached already (a retry): its throttling is made what the record says now.
      await this.retune(volumeId, dom, limits);
      return context;
    }
    // QEMU locks a qcow2 image to one writer (its metadata is the writer's): only raw shares.
    if (spec.shared && v.parsed.format !== 'raw') throw precondition(`volume ${volumeId} is ${v.parsed.format}: several nodes can write only a raw volume (StorageClass format: raw)`);
    // An rbd pool names its images as libvirt names the volumes.
    const rbd = this.pool.rbd;
    await this.pool.domains.attach(dom, {
      pool: this.pool.poolName,
      volume: v.name,
      rbd: rbd ? { ...rbd, image: v.name } : undefined,
      format: v.parsed.format,
      serial,
      readOnly: spec.readOnly,
      shared: spec.shared,
      cache: this.opts.diskCache,
      // Every attach carries the volume's limits: a disk is never throttled less than its class says, not even for a moment.
      iotune: tuneOf(limits),
    });
    // A modify in another controller process (a rolling update) between the record read above and the
    // attach did not see this disk: what it recorded is set now.
    const now = await this.pool.findWithLimits(volumeId);
    if (now) {
      const after = await this.pool.domains.get(dom.uuid);
      if (after) await this.retune(volumeId, after, now.limits);
    }
    return context;
  }

  /** Sets the volume's disks in the domain to the recorded limits where libvirt reports others. */
  private async retune(volumeId: string, dom: DomainInfo, limits: Record<string, string>): Promise<void> {
    for (const disk of dom.disks.filter((d) => this.pool.disks.isVolume(d, volumeId))) {
      if (!tuneMatches(disk.iotune, limits)) await this.pool.domains.setTune(dom, disk.target, tuneOf(limits));
    }
  }

  async unpublish(volumeId: string, nodeId: string): Promise<void> {
    const dom = await this.pool.domains.get(nodeId);
    if (!dom) return; // no such node: nothing can be attached to it
    for (const disk of dom.disks.filter((d) => this.pool.disks.isVolume(d, volumeId))) {
      const gone = await this.pool.domains.detach(dom, disk.target, this.opts.detachWaitMs);
      if (!gone) {
        throw unavailable(`domain ${dom.name} has not released ${disk.target} (volume ${volumeId}) within ${this.opts.detachWaitMs / 1000} s; the guest may still be using it, retry later`);
      }
    }
  }
}
