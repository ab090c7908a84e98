import type { Command } from 'commander';
import { connectCsiWire, type CsiCalls } from '../csi/wire/csi-client.js';
import { connectInspect, isUnimplemented } from '../csi/inspect-client.js';
import { socketPath } from '../csi/socket-path.js';
import type { VolumeCapability } from '../../gen/csi/v1/VolumeCapability.js';
import { formatBytes, parseQuantity } from '../units.js';
import { describeFailure, EXIT } from './call-errors.js';
import { capabilityRow, capabilityView, capacityView, nodeView, pluginView, snapshotView, usageView, volumeDetailView, volumeView, type VolumeRow } from './view/csi-views.js';
import { chooseFormat, printDone, printList, UsageError, type OutputOptions, type Printed } from './view/output.js';
import { whileWaiting, type WorkSample } from './waiting.js';
import type { Snapshot__Output } from '../../gen/csi/v1/Snapshot.js';

interface Common {
  endpoint: string;
  output?: string;
  headers: boolean;
  verbose?: boolean;
}

interface CapabilityFlags {
  block?: boolean;
  fsType?: string;
  mountFlag?: string[];
  accessMode: string;
}

const collect = (value: string, previous: string[] | undefined) => [...(previous ?? []), value];

function keyValues(pairs: string[] | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const p of pairs ?? []) {
    const i = p.indexOf('=');
    if (i <= 0) throw new UsageError(`expected key=value, got ${JSON.stringify(p)}`);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

function capability(f: CapabilityFlags): VolumeCapability {
  const access_mode = { mode: f.accessMode as NonNullable<VolumeCapability['access_mode']>['mode'] };
  return f.block ? { block: {}, access_mode } : { mount: { fs_type: f.fsType ?? '', mount_flags: f.mountFlag ?? [] }, access_mode };
}

function bytes(v: string | undefined, flag = '--size'): string | undefined {
  if (v === undefined) return undefined;
  try {
    return String(parseQuantity(v));
  } catch (err) {
    throw new UsageError(`${flag}: ${(err as Error).message}`);
  }
}

/** What a command prints: the response in the format asked for. */
type Present = (o: OutputOptions) => Promise<Printed>;
type Action<O> = (c: CsiCalls, opts: O) => Promise<Present>;

const done = (kind: string, id: string, what: string, raw: unknown): Present => (o) => printDone(kind, id, what, raw, o);

/** Every page of a listing, in the driver's order (by ID), unless one page was asked for (--max, --token). */
async function allPages<E>(page: (token: string) => Promise<{ entries: E[]; next_token: string }>, first: string, one: boolean): Promise<{ entries: E[]; next_token: string }> {
  const entries: E[] = [];
  let token = first;
  for (;;) {
    const r = await page(token);
    entries.push(...r.entries);
    if (one || !r.next_token) return { entries, next_token: r.next_token };
    token = r.next_token;
  }
}

const machineFormat = (o: OutputOptions) => o.format === 'json' || o.format === 'yaml';
/** The commands whose call may take long (a copy, an attach, a mkfs, a resize): they show that they wait. */
const LONG_CALLS = new Set(['create-volume', 'delete-volume', 'controller-publish', 'controller-unpublish', 'controller-expand', 'create-snapshot', 'delete-snapshot', 'stage', 'unstage', 'publish', 'unpublish', 'expand']);
/** Ctrl-C of the command under way: cancels its calls to the driver (one command runs per process). */
let interrupted: AbortSignal | undefined;

/** Asks the driver's Inspect service; null from a driver that has none (older than this client). */
async function inspected<T>(endpoint: string, ask: (i: ReturnType<typeof connectInspect>) => Promise<T>): Promise<T | null> {
  const i = connectInspect(endpoint, interrupted);
  try {
    return await ask(i);
  } catch (err) {
    if (isUnimplemented(err)) return null;
    throw err;
  } finally {
    i.close();
  }
}

/** How far the driver has come with a restore or clone this create-volume asked for (the Inspect service's copies, matched by the volume's name). */
function copyProbe(endpoint: string, o: { name?: string; fromSnapshot?: string; fromVolume?: string }): { probe: () => Promise<WorkSample | null>; close(): void } | null {
  if (!o.name || (!o.fromSnapshot && !o.fromVolume)) return null;
  const i = connectInspect(endpoint, interrupted);
  let unsupported = false;
  return {
    probe: async () => {
      if (unsupported) return null;
      try {
        const op = (await i.operations()).operations.find((c) => c.name === o.name);
        // A copy whose bytes nobody reports (the libvirt pool's) keeps the plain waiting line.
        if (!op?.reported) return null;
        return { doing: op.kind === 'receive' ? `receiving ${op.source} from ${op.fromNode ?? 'another node'}` : op.kind === 'move' ? `moving to ${op.source}` : `copying ${op.source}`, doneBytes: op.doneBytes, totalBytes: op.totalBytes, syncing: op.phase === 'sync', startedAt: op.startedAt };
      } catch (err) {
        if (isUnimplemented(err)) unsupported = true;
        return null;
      }
    },
    close: () => i.close(),
  };
}

/** `vpool-csi client <rpc>`: every RPC of the driver from the command line; tables for a person, JSON or YAML for a program. */
export function addClientCommands(program: Command): void {
  const client = program
    .command('client')
    .description('call the CSI RPCs of a running driver')
    .option('--endpoint <unix:///path>', 'CSI socket', process.env.VPOOL_CSI_ENDPOINT ?? 'unix:///run/vpool-csi/csi.sock')
    .option('-o, --output <format>', 'table, wide, json, yaml or name (default: table on a terminal, json otherwise)')
    .option('--no-headers', 'tables without their header line')
    .option('-v, --verbose', 'on failure, also print the raw gRPC status');

  const add = <O extends object>(name: string, description: string, configure: (c: Command) => Command, action: Action<O>) => {
    const cmd = configure(client.command(name).description(description));
    cmd.action(async (opts: O) => {
      const common = client.opts<Common>();
      const out: OutputOptions = {
        format: chooseFormat(common.output, !!process.stdout.isTTY),
        headers: common.headers,
        width: process.stdout.isTTY ? process.stdout.columns : undefined,
        now: Date.now(),
      };
      const interrupt = new AbortController();
      let interruptedBy = '';
      const onSignal = (signal: NodeJS.Signals) => {
        interruptedBy = signal;
        interrupt.abort();
      };
      process.once('SIGINT', onSignal);
      process.once('SIGTERM', onSignal);
      interrupted = interrupt.signal;
      try {
        socketPath(common.endpoint);
      } catch (err) {
        throw new UsageError((err as Error).message);
      }
      const c = connectCsiWire(common.endpoint, interrupt.signal);
      let printed: Printed;
      try {
        const work = (async () => (await action(c, opts))(out))();
        // Reads answer at once; a call that makes, copies, attaches or grows may take long: say that it waits.
        const copy = name === 'create-volume' ? copyProbe(common.endpoint, opts as { name?: string; fromSnapshot?: string; fromVolume?: string }) : null;
        try {
          printed = await (LONG_CALLS.has(name) ? whileWaiting(name, work, process.stderr, 10_000, copy?.probe) : work);
        } finally {
          copy?.close();
        }
      } catch (err) {
        if (err instanceof UsageError) throw err;
        if (interrupt.signal.aborted) {
          process.stderr.write(`vpool-csi: interrupted: ${name} was cancelled; the driver stops it where it can, and running the same command again is safe (CSI calls are idempotent)\n`);
          process.exitCode = 128 + (interruptedBy === 'SIGTERM' ? 15 : 2);
          return;
        }
        const f = describeFailure(err, common.endpoint.replace(/^unix:\/\//, ''));
        if (common.verbose && f.raw) process.stderr.write(`${f.raw}\n`);
        process.stderr.write(`vpool-csi: ${f.message}\n`);
        process.exitCode = f.exitCode;
        return;
      } finally {
        process.removeListener('SIGINT', onSignal);
        process.removeListener('SIGTERM', onSignal);
        c.close();
      }
      process.stdout.write(printed.stdout);
      process.stderr.write(printed.stderr);
    });
  };
  const capFlags = (c: Command) =>
    c
      .option('--block', 'raw block access instead of a filesystem')
      .option('--fs-type <type>', 'ext4 or xfs')
      .option('--mount-flag <flag>', 'mount option (repeatable)', collect)
      .option('--access-mode <mode>', 'CSI access mode', 'SINGLE_NODE_WRITER');
  const count = (v: string | undefined, flag: string) => {
    if (v === undefined) return 0;
    if (!/^[0-9]+$/.test(v)) throw new UsageError(`${flag} ${v}: a whole number is expected`);
    return Number(v);
  };

  add('info', 'GetPluginInfo', (c) => c, async (c) => {
    const r = await c.getPluginInfo({});
    return (o) => printList(pluginView(), [r], r, o);
  });
  add('plugin-capabilities', 'GetPluginCapabilities', (c) => c, async (c) => {
    const r = await c.getPluginCapabilities({});
    return (o) => printList(capabilityView(), r.capabilities.map((x) => capabilityRow('PLUGIN', x as Record<string, unknown>)), r, o);
  });
  add('probe', 'Probe', (c) => c, async (c) => {
    const r = await c.probe({});
    const ready = r.ready === null || r.ready === undefined ? 'ready (no answer given: taken as ready)' : r.ready.value ? 'ready' : 'not ready';
    return done('driver', 'probe', ready, r);
  });

  add<CapabilityFlags & { name: string; size?: string; limit?: string; param?: string[]; fromSnapshot?: string; fromVolume?: string }>(
    'create-volume',
    'CreateVolume',
    (c) => capFlags(c.requiredOption('--name <name>', 'CSI volume name').option('--size <bytes>', 'required bytes (e.g. 1Gi)').option('--limit <bytes>', 'limit bytes').option('--param <key=value>', 'StorageClass parameter (repeatable)', collect).option('--from-snapshot <id>', 'restore from a snapshot').option('--from-volume <id>', 'clone a volume')),
    async (c, o) => {
      const r = await c.createVolume({
        name: o.name,
        capacity_range: { required_bytes: bytes(o.size), limit_bytes: bytes(o.limit, '--limit') },
        volume_capabilities: [capability(o)],
        parameters: keyValues(o.param),
        volume_content_source: o.fromSnapshot ? { snapshot: { snapshot_id: o.fromSnapshot } } : o.fromVolume ? { volume: { volume_id: o.fromVolume } } : null,
      });
      return done('volume', r.volume!.volume_id, `created (${formatBytes(Number(r.volume!.capacity_bytes))})`, r);
    },
  );
  add<{ id: string }>('delete-volume', 'DeleteVolume', (c) => c.requiredOption('--id <volume-id>'), async (c, o) => done('volume', o.id, 'deleted', await c.deleteVolume({ volume_id: o.id })));
  add<CapabilityFlags & { id: string }>('validate', 'ValidateVolumeCapabilities', (c) => capFlags(c.requiredOption('--id <volume-id>')), async (c, o) => {
    const r = await c.validateVolumeCapabilities({ volume_id: o.id, volume_capabilities: [capability(o)] });
    return done('volume', o.id, r.confirmed ? 'supports these capabilities' : `does not support these capabilities${r.message ? `: ${r.message}` : ''}`, r);
  });
  add<{ max?: string; token?: string }>(
    'list-volumes',
    'ListVolumes (every page, unless --max or --token asks for one); tables add what the driver knows beyond CSI (age, allocation, mounts)',
    (c) => c.option('--max <n>', 'max_entries: one page of at most n').option('--token <t>', 'starting_token'),
    async (c, o) => {
      const max = count(o.max, '--max');
      const onePage = max > 0 || o.token !== undefined;
      return async (out) => {
        if (!machineFormat(out)) {
          // The Inspect service pages as ListVolumes does (after the token, which is the last ID of the page before).
          const page = await inspected(client.opts<Common>().endpoint, (i) => (onePage ? i.page(o.token ?? '', max || 1000) : i.volumes().then((volumes) => ({ volumes, next: '' }))));
          if (page) {
            const p = await printList(volumeDetailView(out.now), page.volumes, page, out);
            return page.next ? { ...p, stderr: `${p.stderr}(more: --token ${page.next})\n` } : p;
          }
        }
        const r = await allPages((t) => c.listVolumes({ max_entries: max, starting_token: t }), o.token ?? '', onePage);
        const p = await printList(volumeView(), r.entries.filter((e) => e.volume).map((e) => e as VolumeRow), r, out);
        return r.next_token && !machineFormat(out) ? { ...p, stderr: `${p.stderr}(more: --token ${r.next_token})\n` } : p;
      };
    },
  );
  add<{ id: string }>('get-volume', 'ControllerGetVolume; a table adds what the driver knows beyond CSI', (c) => c.requiredOption('--id <volume-id>'), async (c, o) => {
    return async (out) => {
      if (!machineFormat(out)) {
        const detail = await inspected(client.opts<Common>().endpoint, (i) => i.volume(o.id));
        if (detail) return printList(volumeDetailView(out.now), [detail], detail, out);
      }
      const r = await c.controllerGetVolume({ volume_id: o.id });
      return printList(volumeView(), [r as VolumeRow], r, out);
    };
  });
  add<{ param?: string[] }>('capacity', 'GetCapacity', (c) => c.option('--param <key=value>', 'parameter (repeatable)', collect), async (c, o) => {
    const parameters = keyValues(o.param);
    const r = await c.getCapacity({ parameters });
    const row = { available: Number(r.available_capacity), maximum: r.maximum_volume_size ? Number(r.maximum_volume_size.value) : undefined, minimum: r.minimum_volume_size ? Number(r.minimum_volume_size.value) : undefined, parameters };
    return (out) => printList(capacityView(), [row], r, out);
  });
  add('controller-capabilities', 'ControllerGetCapabilities', (c) => c, async (c) => {
    const r = await c.controllerGetCapabilities({});
    return (o) => printList(capabilityView(), r.capabilities.map((x) => capabilityRow('CONTROLLER', x as Record<string, unknown>)), r, o);
  });
  add<CapabilityFlags & { id: string; node: string; readonly?: boolean }>(
    'controller-publish',
    'ControllerPublishVolume (hypervisor mode: hot-plug into the node VM)',
    (c) => capFlags(c.requiredOption('--id <volume-id>').requiredOption('--node <node-id>', 'domain UUID or name').option('--readonly')),
    async (c, o) => done('volume', o.id, `attached to ${o.node}${o.readonly ? ' (read-only)' : ''}`, await c.controllerPublishVolume({ volume_id: o.id, node_id: o.node, readonly: !!o.readonly, volume_capability: capability(o) })),
  );
  add<{ id: string; node?: string }>('controller-unpublish', 'ControllerUnpublishVolume', (c) => c.requiredOption('--id <volume-id>').option('--node <node-id>', 'default: every node'), async (c, o) =>
    done('volume', o.id, `detached from ${o.node ?? 'every node'}`, await c.controllerUnpublishVolume({ volume_id: o.id, node_id: o.node ?? '' })),
  );
  add<{ id: string; size: string; block?: boolean }>(
    'controller-expand',
    'ControllerExpandVolume',
    (c) => c.requiredOption('--id <volume-id>').requiredOption('--size <bytes>').option('--block', 'the volume is used as a raw block device'),
    async (c, o) => {
      const r = await c.controllerExpandVolume({
        volume_id: o.id,
        capacity_range: { required_bytes: bytes(o.size) },
        volume_capability: o.block ? { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } } : null,
      });
      return done('volume', o.id, `expanded to ${formatBytes(Number(r.capacity_bytes))}${r.node_expansion_required ? '; the node grows it when it next stages or publishes it (NodeExpandVolume)' : ''}`, r);
    },
  );
  add<{ name: string; source: string }>('create-snapshot', 'CreateSnapshot', (c) => c.requiredOption('--name <name>').requiredOption('--source <volume-id>'), async (c, o) => {
    const r = await c.createSnapshot({ name: o.name, source_volume_id: o.source });
    return done('snapshot', r.snapshot!.snapshot_id, `created (${formatBytes(Number(r.snapshot!.size_bytes))}, ${r.snapshot!.ready_to_use ? 'ready' : 'not ready yet'})`, r);
  });
  add<{ id: string }>('delete-snapshot', 'DeleteSnapshot', (c) => c.requiredOption('--id <snapshot-id>'), async (c, o) => done('snapshot', o.id, 'deleted', await c.deleteSnapshot({ snapshot_id: o.id })));
  add<{ id?: string; source?: string; max?: string; token?: string }>(
    'list-snapshots',
    'ListSnapshots (every page, unless --max or --token asks for one)',
    (c) => c.option('--id <snapshot-id>').option('--source <volume-id>').option('--max <n>', 'max_entries: one page of at most n').option('--token <t>', 'starting_token'),
    async (c, o) => {
      const max = count(o.max, '--max');
      const r = await allPages((t) => c.listSnapshots({ snapshot_id: o.id ?? '', source_volume_id: o.source ?? '', max_entries: max, starting_token: t }), o.token ?? '', max > 0 || o.token !== undefined);
      const rows = r.entries.map((e) => e.snapshot).filter((s): s is Snapshot__Output => !!s);
      return async (out) => {
        const p = await printList(snapshotView(out.now), rows, r, out);
        return r.next_token && out.format !== 'json' && out.format !== 'yaml' ? { ...p, stderr: `${p.stderr}(more: --token ${r.next_token})\n` } : p;
      };
    },
  );

  add<{ id: string }>('get-snapshot', 'GetSnapshot', (c) => c.requiredOption('--id <snapshot-id>'), async (c, o) => {
    const r = await c.getSnapshot({ snapshot_id: o.id });
    return (out) => printList(snapshotView(out.now), r.snapshot ? [r.snapshot] : [], r, out);
  });

  add('node-info', 'NodeGetInfo', (c) => c, async (c) => {
    const r = await c.nodeGetInfo({});
    return (o) => printList(nodeView(), [r], r, o);
  });
  add('node-capabilities', 'NodeGetCapabilities', (c) => c, async (c) => {
    const r = await c.nodeGetCapabilities({});
    return (o) => printList(capabilityView(), r.capabilities.map((x) => capabilityRow('NODE', x as Record<string, unknown>)), r, o);
  });
  add<CapabilityFlags & { id: string; stagingPath: string; context?: string[]; volumeContext?: string[] }>(
    'stage',
    'NodeStageVolume',
    (c) =>
      capFlags(c.requiredOption('--id <volume-id>').requiredOption('--staging-path <dir>'))
        .option('--context <key=value>', 'publish_context entry, as ControllerPublishVolume returned it (repeatable)', collect)
        .option('--volume-context <key=value>', 'volume_context entry, as CreateVolume returned it (repeatable)', collect),
    async (c, o) =>
      done(
        'volume',
        o.id,
        `staged at ${o.stagingPath}`,
        await c.nodeStageVolume({
          volume_id: o.id,
          staging_target_path: o.stagingPath,
          volume_capability: capability(o),
          publish_context: keyValues(o.context),
          volume_context: keyValues(o.volumeContext),
        }),
      ),
  );
  add<{ id: string; stagingPath: string }>('unstage', 'NodeUnstageVolume', (c) => c.requiredOption('--id <volume-id>').requiredOption('--staging-path <dir>'), async (c, o) =>
    done('volume', o.id, `unstaged from ${o.stagingPath}`, await c.nodeUnstageVolume({ volume_id: o.id, staging_target_path: o.stagingPath })),
  );
  add<CapabilityFlags & { id: string; stagingPath: string; targetPath: string; readonly?: boolean }>(
    'publish',
    'NodePublishVolume',
    (c) => capFlags(c.requiredOption('--id <volume-id>').requiredOption('--staging-path <dir>').requiredOption('--target-path <path>').option('--readonly')),
    async (c, o) =>
      done('volume', o.id, `published at ${o.targetPath}${o.readonly ? ' (read-only)' : ''}`, await c.nodePublishVolume({ volume_id: o.id, staging_target_path: o.stagingPath, target_path: o.targetPath, readonly: !!o.readonly, volume_capability: capability(o) })),
  );
  add<{ id: string; targetPath: string }>('unpublish', 'NodeUnpublishVolume', (c) => c.requiredOption('--id <volume-id>').requiredOption('--target-path <path>'), async (c, o) =>
    done('volume', o.id, `unpublished from ${o.targetPath}`, await c.nodeUnpublishVolume({ volume_id: o.id, target_path: o.targetPath })),
  );
  add<{ id: string; path: string }>('stats', 'NodeGetVolumeStats', (c) => c.requiredOption('--id <volume-id>').requiredOption('--path <path>'), async (c, o) => {
    const r = await c.nodeGetVolumeStats({ volume_id: o.id, volume_path: o.path });
    return async (out) => {
      const p = await printList(usageView(), r.usage, r, out);
      const cond = r.volume_condition;
      const note = cond?.abnormal && out.format !== 'json' && out.format !== 'yaml' ? `volume ${o.id} is abnormal: ${cond.message}\n` : '';
      return { ...p, stderr: p.stderr + note };
    };
  });
  add<{ id: string; path: string; size: string }>('expand', 'NodeExpandVolume', (c) => c.requiredOption('--id <volume-id>').requiredOption('--path <path>').requiredOption('--size <bytes>'), async (c, o) => {
    const r = await c.nodeExpandVolume({ volume_id: o.id, volume_path: o.path, capacity_range: { required_bytes: bytes(o.size) } });
    return done('volume', o.id, `grown to ${formatBytes(Number(r.capacity_bytes))} at ${o.path}`, r);
  });
}

export { EXIT };
