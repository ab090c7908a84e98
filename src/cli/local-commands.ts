import { connectCsi, isServiceError } from '../csi/client.js';
import { kindOfStatus } from '../csi/rpc.js';
import { DriverError, unavailable } from '../errors.js';
import type { CommandName, HoldsQuery, LocalCommands } from '../transfer/commands.js';
import type { TransferSource } from '../transfer/server.js';

/**
 * What this node answers the snapshot router (transfer/commands.ts): each command is this node's own
 * CSI controller's answer, asked over its own socket, so a routed call passes every check, lock and
 * capability a local one does (and is logged as one). "Held" is what this pool holds: volumes and
 * snapshots by the transfer's lookups, groups by this controller's GetVolumeGroupSnapshot.
 */
export function localCommands(endpoint: string, source: TransferSource, state: { isOpen(): boolean; holdsNothing(): string | undefined }): LocalCommands {
  let client: ReturnType<typeof connectCsi> | undefined;
  const csi = () => (client ??= connectCsi(endpoint));
  const call = async (method: CommandName | 'GetVolumeGroupSnapshot', request: unknown, deadlineMs: number, signal: AbortSignal): Promise<unknown> => {
    const c = csi();
    const options = { deadline: Date.now() + deadlineMs };
    const run: Record<CommandName, (r: never, o: typeof options) => Promise<unknown>> = {
      CreateSnapshot: c.createSnapshot,
      DeleteSnapshot: c.deleteSnapshot,
      ListSnapshots: c.listSnapshots,
      CreateVolumeGroupSnapshot: c.createVolumeGroupSnapshot,
      DeleteVolumeGroupSnapshot: c.deleteVolumeGroupSnapshot,
      GetVolumeGroupSnapshot: c.getVolumeGroupSnapshot,
      ControllerModifyVolume: c.controllerModifyVolume,
    };
    signal.throwIfAborted();
    try {
      return await run[method](request as never, options);
    } catch (err) {
      if (isServiceError(err)) throw new DriverError(kindOfStatus(err.code), err.details);
      throw err;
    }
  };
  return {
    async holds(q: HoldsQuery, signal: AbortSignal): Promise<HoldsQuery> {
      // No pool here at all (its VolumePool selects another node): nothing held, for good. Not open yet (being
      // built, failing): "not now", never "not here", which the router takes as final.
      if (!state.isOpen() && state.holdsNothing()) return { volumes: [], snapshots: [], groups: [] };
      if (!state.isOpen()) throw unavailable('this node\'s pool is not open yet');
      const has = async (kind: 'volume' | 'snapshot', id: string) => (await source.size(kind, id)) !== null;
      const group = async (id: string) =>
        call('GetVolumeGroupSnapshot', { group_snapshot_id: id, snapshot_ids: [] }, 30_000, signal).then(
          () => true,
          (err: unknown) => {
            // Not found here, or a pool that makes no groups: not held here.
            if (err instanceof DriverError && (err.kind === 'not-found' || err.kind === 'unsupported')) return false;
            throw err;
          },
        );
      const keep = async <T>(ids: string[], test: (id: string) => Promise<boolean>) => {
        const out: string[] = [];
        for (const id of ids) {
          signal.throwIfAborted();
          if (await test(id)) out.push(id);
        }
        return out;
      };
      return { volumes: await keep(q.volumes, (id) => has('volume', id)), snapshots: await keep(q.snapshots, (id) => has('snapshot', id)), groups: await keep(q.groups, group) };
    },
    run: async (method, request, deadlineMs, signal) => {
      // A node with no pool here has nothing to delete and nothing to list (the router sends deletes and
      // unfiltered listings to every node); anything else is never handed to it (it claims nothing).
      if (!state.isOpen() && state.holdsNothing()) {
        if (method === 'DeleteSnapshot' || method === 'DeleteVolumeGroupSnapshot') return {};
        if (method === 'ListSnapshots') return { entries: [], next_token: '' };
      }
      return call(method, request, deadlineMs, signal);
    },
  };
}
