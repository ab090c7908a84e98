import { busy, invalid, notFound, precondition } from '../errors.js';
import { isId, parseId, validateName } from '../ids.js';
import { pageAfter } from '../paging.js';
import type { CommandName, CommandPeer, HoldsQuery } from '../transfer/commands.js';

/**
 * The snapshot router's decisions (cli/serve-router.ts): which node a snapshot call belongs to, for
 * pools whose volumes live on one node each (file, lvm). A central csi-snapshotter is the only one that
 * sees VolumeGroupSnapshotContents; it calls here, and each call is handed whole to the node holding
 * what it names, which answers it as its own (every check, lock and idempotency rule is the holder's).
 * The router keeps nothing: a restart loses no state, and a call it cannot place is answered as the
 * spec asks for an object that exists nowhere, or UNAVAILABLE when a node that may hold it did not say.
 */
export interface Nodes {
  holders(q: HoldsQuery, signal: AbortSignal): Promise<Map<string, CommandPeer>>;
  run(peer: CommandPeer, method: CommandName, request: unknown, deadlineMs: number, signal: AbortSignal): Promise<unknown>;
  /** Every node plugin now (for a listing over all of them). */
  all(): Promise<CommandPeer[]>;
}

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
    private readonly o: RouteOptions,
  ) {}

  private async holderOf(q: Partial<HoldsQuery>, signal: AbortSignal): Promise<CommandPeer | undefined> {
    const found = await this.nodes.holders({ ...NONE, ...q }, signal);
    return [...found.values()][0];
  }

  private forward(peer: CommandPeer, method: CommandName, req: unknown, signal: AbortSignal): Promise<unknown> {
    return this.nodes.run(peer, method, req, this.o.deadlineMs, signal);
  }

  async createSnapshot(req: { name: string; source_volume_id: string }, signal: AbortSignal): Promise<unknown> {
    validateName('name', req.name);
    const volume = parseId('vol', 'source_volume_id', req.source_volume_id);
    const peer = volume ? await this.holderOf({ volumes: [volume] }, signal) : undefined;
    if (!peer) throw notFound(`source volume ${req.source_volume_id} is on no node of this driver`);
    return this.forward(peer, 'CreateSnapshot', req, signal);
  }

  async deleteSnapshot(req: { snapshot_id: string }, signal: AbortSignal): Promise<unknown> {
    const id = parseId('snap', 'snapshot_id', req.snapshot_id);
    const peer = id ? await this.holderOf({ snapshots: [id] }, signal) : undefined;
    // On no node (every node said so): deleted already, which the spec answers OK.
    return peer ? this.forward(peer, 'DeleteSnapshot', req, signal) : {};
  }

  async listSnapshots(req: { snapshot_id: string; source_volume_id: string; max_entries: number; starting_token: string }, signal: AbortSignal): Promise<unknown> {
    if (req.snapshot_id || req.source_volume_id) {
      // Filtered: the holder's listing, its tokens passed through as they are (the same holder answers the next page).
      const snap = req.snapshot_id ? parseId('snap', 'snapshot_id', req.snapshot_id) : null;
      const vol = req.source_volume_id ? parseId('vol', 'source_volume_id', req.source_volume_id) : null;
      if ((req.snapshot_id && !snap) || (req.source_volume_id && !vol)) return { entries: [], next_token: '' };
      const peer = await this.holderOf(snap ? { snapshots: [snap] } : { volumes: [vol!] }, signal);
      return peer ? this.forward(peer, 'ListSnapshots', req, signal) : { entries: [], next_token: '' };
    }
    // Every node's, merged in ID order; the token is the last ID returned.
    if (req.max_entries < 0) throw invalid('max_entries must not be negative');
    if (req.starting_token && !isId('snap', req.starting_token)) throw busy(`starting_token ${JSON.stringify(req.starting_token.slice(0, 64))} is not a token this router issued`);
    const entries: SnapshotEntry[] = [];
    await Promise.all(
      (await this.nodes.all()).map(async (p) => {
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
    validateName('name', req.name);
    const ids = req.source_volume_ids.map((v, i) => {
      const id = parseId('vol', `source_volume_ids[${i}]`, v);
      if (!id) throw notFound(`source volume ${v} does not exist`);
      return id;
    });
    if (!ids.length) throw invalid('source_volume_ids is required');
    const found = await this.nodes.holders({ ...NONE, volumes: ids }, signal);
    const missing = ids.filter((id) => !found.has(id));
    if (missing.length) throw notFound(`source volume${missing.length > 1 ? 's' : ''} ${missing.slice(0, 5).join(', ')} ${missing.length > 1 ? 'are' : 'is'} on no node of this driver`);
    const byNode = new Map<string, string[]>();
    for (const id of ids) byNode.set(found.get(id)!.node, [...(byNode.get(found.get(id)!.node) ?? []), id]);
    if (byNode.size > 1) {
      // The spec's "cannot snapshot multiple volumes together": one node's pool cuts a group, no two can make one instant.
      throw precondition(`the volumes are on ${byNode.size} nodes (${[...byNode].map(([n, v]) => `${n}: ${v.slice(0, 3).join(', ')}${v.length > 3 ? ', ...' : ''}`).join('; ')}); a group snapshot is cut on one node, so its volumes must all be on one node`);
    }
    return this.forward(found.get(ids[0])!, 'CreateVolumeGroupSnapshot', req, signal);
  }

  async deleteGroup(req: { group_snapshot_id: string }, signal: AbortSignal): Promise<unknown> {
    const id = parseId('group', 'group_snapshot_id', req.group_snapshot_id);
    const peer = id ? await this.holderOf({ groups: [id] }, signal) : undefined;
    return peer ? this.forward(peer, 'DeleteVolumeGroupSnapshot', req, signal) : {};
  }

  async getGroup(req: { group_snapshot_id: string }, signal: AbortSignal): Promise<unknown> {
    const id = parseId('group', 'group_snapshot_id', req.group_snapshot_id);
    const peer = id ? await this.holderOf({ groups: [id] }, signal) : undefined;
    if (!peer) throw notFound(`group snapshot ${req.group_snapshot_id} is on no node of this driver`);
    return this.forward(peer, 'GetVolumeGroupSnapshot', req, signal);
  }
}
