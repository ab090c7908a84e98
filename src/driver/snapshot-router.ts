import { busy, conflict, invalid, notFound, precondition, unavailable } from '../errors.js';
import { idFor, isId, parseId, validateName } from '../ids.js';
import { pageAfter } from '../paging.js';
import type { CommandName, CommandPeer, HoldsQuery, Placement } from '../transfer/commands.js';

/**
 * The snapshot router's decisions (cli/serve-router.ts): which node a snapshot call (or a volume's
 * ControllerModifyVolume, from the central csi-resizer) belongs to, for
 * pools whose volumes live on one node each (file, lvm). A central csi-snapshotter is the only one that
 * sees VolumeGroupSnapshotContents; it calls here, and each call is handed whole to the node holding
 * what it names, which answers it as its own (every check, lock and idempotency rule is the holder's).
 * The router keeps nothing: a restart loses no state. What it is told is checked: a node's claim to
 * hold a volume must agree with the node the volume's PersistentVolume is pinned to, an absence is
 * final only once every node the DaemonSet wants answered, and a delete is done only once every node
 * has deleted what it holds.
 */
export interface Nodes {
  holders(q: HoldsQuery, signal: AbortSignal): Promise<Placement>;
  run(peer: CommandPeer, method: CommandName, request: unknown, deadlineMs: number, signal: AbortSignal): Promise<unknown>;
  everywhere(method: CommandName, request: unknown, deadlineMs: number, signal: AbortSignal): Promise<void>;
  /** Every node plugin now, and why that is not all of them. */
  all(): Promise<{ peers: CommandPeer[]; short?: string }>;
}

/** The node a volume's PersistentVolume is pinned to (its node affinity); null when no PV of this driver names it. */
export type PinnedNode = (volumeId: string) => Promise<string | null>;

export interface RouteOptions {
  /** The deadline handed to the holder: the sidecar's own timeout (--timeout of csi-snapshotter). */
  deadlineMs: number;
}

const NONE: HoldsQuery = { volumes: [], snapshots: [], groups: [] };

interface SnapshotEntry {
  snapshot?: { snapshot_id?: string } | null;
}
interface ListAnswer {
  entries?: SnapshotEntry[];
  next_token?: string;
}

export class SnapshotRouter {
  constructor(
    private readonly nodes: Nodes,
    private readonly pinned: PinnedNode,
    private readonly o: RouteOptions,
  ) {}

  /**
   * Where the IDs are. A node claiming a volume its PV pins to another node is not believed (a node
   * plugin that lies would otherwise be handed other nodes' snapshots): its claim is dropped and the
   * placement is not final.
   */
  private async place(q: Partial<HoldsQuery>, signal: AbortSignal): Promise<Placement> {
    const p = await this.nodes.holders({ ...NONE, ...q }, signal);
    const pinOf = async (v: string) =>
      this.pinned(v).catch((err: unknown) => {
        throw unavailable(`the PersistentVolumes cannot be read now to check where volume ${v} is: ${err instanceof Error ? err.message : String(err)}`);
      });
    const wrong: string[] = [];
    for (const v of q.volumes ?? []) {
      const claimants = p.contested?.get(v) ?? (p.found.has(v) ? [p.found.get(v)!] : []);
      if (!claimants.length) continue;
      const pin = await pinOf(v);
      // The one claimant the volume's PV agrees with; a claim it contradicts is dropped (the node lies, or its PV does).
      const agreed = pin === null ? claimants : claimants.filter((c) => c.node === pin);
      p.found.delete(v);
      p.contested?.delete(v);
      if (agreed.length === 1) p.found.set(v, agreed[0]!);
      else if (agreed.length > 1) p.contested = new Map([...(p.contested ?? []), [v, agreed]]);
      for (const c of claimants.filter((x) => !agreed.includes(x))) wrong.push(`node ${c.node} claims volume ${v}, whose PersistentVolume is on node ${pin}`);
    }
    // What two nodes claim and no PV settles: refused, never guessed.
    const [contested, by] = [...(p.contested ?? [])][0] ?? [];
    if (contested) throw unavailable(`nodes ${by!.map((c) => c.node).join(', ')} each claim ${contested}; refusing to guess which answers for it`);
    if (wrong.length) return { found: p.found, missing: [p.missing, ...wrong].filter(Boolean).join('; ') };
    return p;
  }

  /** The node holding `id`; NOT_FOUND (`absent`) when every node said it is on none, UNAVAILABLE when some did not say. */
  private need(p: Placement, id: string, absent: string): CommandPeer {
    const peer = p.found.get(id);
    if (peer) return peer;
    if (p.missing) throw unavailable(`${absent} on any node that answered, and not every node could say: ${p.missing}`);
    throw notFound(`${absent} on any node of this driver`);
  }

  private forward(peer: CommandPeer, method: CommandName, req: unknown, signal: AbortSignal): Promise<unknown> {
    return this.nodes.run(peer, method, req, this.o.deadlineMs, signal);
  }

  async createSnapshot(req: { name: string; source_volume_id: string }, signal: AbortSignal): Promise<unknown> {
    const name = validateName('name', req.name);
    const volume = parseId('vol', 'source_volume_id', req.source_volume_id);
    if (!volume) throw notFound(`source volume ${req.source_volume_id} does not exist`);
    // The snapshot's ID is its name's: a name taken on another node (for another volume) is ALREADY_EXISTS, as on one node.
    const id = idFor('snap', name);
    const p = await this.place({ volumes: [volume], snapshots: [id] }, signal);
    const holder = this.need(p, volume, `source volume ${volume} is not`);
    const taken = p.found.get(id);
    if (taken && taken.node !== holder.node) throw conflict(`snapshot ${name} exists on node ${taken.node}, for another volume than ${volume} (on ${holder.node})`);
    return this.forward(holder, 'CreateSnapshot', req, signal);
  }

  async deleteSnapshot(req: { snapshot_id: string }, signal: AbortSignal): Promise<unknown> {
    if (!parseId('snap', 'snapshot_id', req.snapshot_id)) return {};
    // Every node deletes what it holds: done once all have (a node not asked may hold it; no claim is trusted for a delete).
    await this.nodes.everywhere('DeleteSnapshot', req, this.o.deadlineMs, signal);
    return {};
  }

  async listSnapshots(req: { snapshot_id: string; source_volume_id: string; max_entries: number; starting_token: string }, signal: AbortSignal): Promise<unknown> {
    if (req.max_entries < 0) throw invalid('max_entries must not be negative');
    if (req.snapshot_id || req.source_volume_id) {
      // Filtered: the holder's listing, its tokens passed through as they are (the same holder answers the next page).
      const snap = req.snapshot_id ? parseId('snap', 'snapshot_id', req.snapshot_id) : null;
      const vol = req.source_volume_id ? parseId('vol', 'source_volume_id', req.source_volume_id) : null;
      if ((req.snapshot_id && !snap) || (req.source_volume_id && !vol)) return { entries: [], next_token: '' };
      const id = snap ?? vol!;
      const p = await this.place(snap ? { snapshots: [snap] } : { volumes: [vol!] }, signal);
      const peer = p.found.get(id);
      if (peer) return this.forward(peer, 'ListSnapshots', req, signal);
      // "None" is an answer only once every node gave it; otherwise the sidecar would take a member for gone.
      if (p.missing) throw unavailable(`${id} is on no node that answered, and not every node could say: ${p.missing}`);
      return { entries: [], next_token: '' };
    }
    // Every node's, merged in ID order; the token is the last ID returned.
    if (req.starting_token && !isId('snap', req.starting_token)) throw busy(`starting_token ${JSON.stringify(req.starting_token.slice(0, 64))} is not a token this router issued`);
    const { peers, short } = await this.nodes.all();
    if (short) throw unavailable(`a listing over every node needs every node: ${short}`);
    const entries: SnapshotEntry[] = [];
    await Promise.all(
      peers.map(async (p) => {
        let token = '';
        do {
          const page = (await this.forward(p, 'ListSnapshots', { max_entries: 0, starting_token: token, snapshot_id: '', source_volume_id: '' }, signal)) as ListAnswer;
          entries.push(...(page.entries ?? []));
          token = page.next_token ?? '';
        } while (token);
      }),
    );
    const page = pageAfter(entries, (e) => e.snapshot?.snapshot_id ?? '', req.starting_token, req.max_entries);
    return { entries: page.items, next_token: page.more && page.items.length ? (page.items[page.items.length - 1].snapshot?.snapshot_id ?? '') : '' };
  }

  async createGroup(req: { name: string; source_volume_ids: string[] }, signal: AbortSignal): Promise<unknown> {
    const name = validateName('name', req.name);
    if (!req.source_volume_ids.length) throw invalid('source_volume_ids is required');
    const ids = req.source_volume_ids.map((v, i) => {
      const id = parseId('vol', `source_volume_ids[${i}]`, v);
      if (!id) throw notFound(`source volume ${v} does not exist`);
      return id;
    });
    const groupId = idFor('group', name);
    const p = await this.place({ volumes: [...new Set(ids)], groups: [groupId] }, signal);
    const missing = ids.filter((id) => !p.found.has(id));
    if (missing.length) this.need(p, missing[0]!, `source volume${missing.length > 1 ? 's' : ''} ${missing.slice(0, 5).join(', ')} ${missing.length > 1 ? 'are' : 'is'} not`);
    const byNode = new Map<string, string[]>();
    for (const id of ids) byNode.set(p.found.get(id)!.node, [...(byNode.get(p.found.get(id)!.node) ?? []), id]);
    if (byNode.size > 1) {
      // The spec's "cannot snapshot multiple volumes together": one node's pool cuts a group, no two can make one instant.
      throw precondition(`the volumes are on ${byNode.size} nodes (${[...byNode].map(([n, v]) => `${n}: ${v.slice(0, 3).join(', ')}${v.length > 3 ? ', ...' : ''}`).join('; ')}); a group snapshot is cut on one node, so its volumes must all be on one node`);
    }
    const holder = p.found.get(ids[0]!)!;
    const taken = p.found.get(groupId);
    if (taken && taken.node !== holder.node) throw conflict(`group snapshot ${name} exists on node ${taken.node}, for other volumes`);
    return this.forward(holder, 'CreateVolumeGroupSnapshot', req, signal);
  }

  async deleteGroup(req: { group_snapshot_id: string }, signal: AbortSignal): Promise<unknown> {
    if (!parseId('group', 'group_snapshot_id', req.group_snapshot_id)) return {};
    // As a snapshot's delete: every node clears what it holds of the group, a half-made one included.
    await this.nodes.everywhere('DeleteVolumeGroupSnapshot', req, this.o.deadlineMs, signal);
    return {};
  }

  /** ControllerModifyVolume of the central csi-resizer: the holder of the volume changes it (its checks, its lock, its pods' limits). */
  async modifyVolume(req: { volume_id: string; mutable_parameters: Record<string, string> }, signal: AbortSignal): Promise<unknown> {
    const volume = parseId('vol', 'volume_id', req.volume_id);
    if (!volume) throw notFound(`volume ${req.volume_id} does not exist`);
    const holder = this.need(await this.place({ volumes: [volume] }, signal), volume, `volume ${volume} is not`);
    return this.forward(holder, 'ControllerModifyVolume', req, signal);
  }

  async getGroup(req: { group_snapshot_id: string }, signal: AbortSignal): Promise<unknown> {
    const id = parseId('group', 'group_snapshot_id', req.group_snapshot_id);
    if (!id) throw notFound(`group snapshot ${req.group_snapshot_id} does not exist`);
    const peer = this.need(await this.place({ groups: [id] }, signal), id, `group snapshot ${id} is not`);
    return this.forward(peer, 'GetVolumeGroupSnapshot', req, signal);
  }
}
