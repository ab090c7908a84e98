import type { Command } from 'commander';
import type { CsiClient } from '../csi/client.js';
import type { VolumeCapability } from '../../gen/csi/v1/VolumeCapability.js';
import { parseQuantity } from '../units.js';
import { printResult } from './output.js';

interface Common {
  endpoint: string;
  output: 'json' | 'table';
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
    if (i <= 0) throw new Error(`expected key=value, got ${JSON.stringify(p)}`);
    out[p.slice(0, i)] = p.slice(i + 1);
  }
  return out;
}

function capability(f: CapabilityFlags): VolumeCapability {
  const access_mode = { mode: f.accessMode as NonNullable<VolumeCapability['access_mode']>['mode'] };
  return f.block ? { block: {}, access_mode } : { mount: { fs_type: f.fsType ?? '', mount_flags: f.mountFlag ?? [] }, access_mode };
}

function bytes(v: string | undefined): string | undefined {
  return v === undefined ? undefined : String(parseQuantity(v));
}

type Action<O> = (c: CsiClient, opts: O) => Promise<unknown>;

/** `vpool-csi client <rpc>`: every RPC of the driver from the command line, JSON out by default. */
export function addClientCommands(program: Command): void {
  const client = program
    .command('client')
    .description('call the CSI RPCs of a running driver')
    .option('--endpoint <unix:///path>', 'CSI socket', process.env.VPOOL_CSI_ENDPOINT ?? 'unix:///run/vpool-csi/csi.sock')
    .option('-o, --output <format>', 'json or table', 'json');

  const add = <O extends object>(name: string, description: string, configure: (c: Command) => Command, action: Action<O>) => {
    const cmd = configure(client.command(name).description(description));
    cmd.action(async (opts: O) => {
      const common = client.opts<Common>();
      // gRPC is loaded by the command that uses it, not by every start of the binary.
      const { connectCsi, describeCallError } = await import('../csi/client.js');
      const c = connectCsi(common.endpoint);
      try {
        printResult(await action(c, opts), common.output);
      } catch (err) {
        throw describeCallError(err);
      } finally {
        c.close();
      }
    });
  };
  const capFlags = (c: Command) =>
    c
      .option('--block', 'raw block access instead of a filesystem')
      .option('--fs-type <type>', 'ext4 or xfs')
      .option('--mount-flag <flag>', 'mount option (repeatable)', collect)
      .option('--access-mode <mode>', 'CSI access mode', 'SINGLE_NODE_WRITER');

  add('info', 'GetPluginInfo', (c) => c, (c) => c.getPluginInfo({}));
  add('plugin-capabilities', 'GetPluginCapabilities', (c) => c, (c) => c.getPluginCapabilities({}));
  add('probe', 'Probe', (c) => c, (c) => c.probe({}));

  add<CapabilityFlags & { name: string; size?: string; limit?: string; param?: string[]; fromSnapshot?: string; fromVolume?: string }>(
    'create-volume',
    'CreateVolume',
    (c) => capFlags(c.requiredOption('--name <name>', 'CSI volume name').option('--size <bytes>', 'required bytes (e.g. 1Gi)').option('--limit <bytes>', 'limit bytes').option('--param <key=value>', 'StorageClass parameter (repeatable)', collect).option('--from-snapshot <id>', 'restore from a snapshot').option('--from-volume <id>', 'clone a volume')),
    (c, o) =>
      c.createVolume({
        name: o.name,
        capacity_range: { required_bytes: bytes(o.size), limit_bytes: bytes(o.limit) },
        volume_capabilities: [capability(o)],
        parameters: keyValues(o.param),
        volume_content_source: o.fromSnapshot ? { snapshot: { snapshot_id: o.fromSnapshot } } : o.fromVolume ? { volume: { volume_id: o.fromVolume } } : null,
      }),
  );
  add<{ id: string }>('delete-volume', 'DeleteVolume', (c) => c.requiredOption('--id <volume-id>'), (c, o) => c.deleteVolume({ volume_id: o.id }));
  add<CapabilityFlags & { id: string }>('validate', 'ValidateVolumeCapabilities', (c) => capFlags(c.requiredOption('--id <volume-id>')), (c, o) =>
    c.validateVolumeCapabilities({ volume_id: o.id, volume_capabilities: [capability(o)] }),
  );
  add<{ max?: string; token?: string }>('list-volumes', 'ListVolumes', (c) => c.option('--max <n>', 'max_entries').option('--token <t>', 'starting_token'), (c, o) =>
    c.listVolumes({ max_entries: Number(o.max ?? 0), starting_token: o.token ?? '' }),
  );
  add<{ id: string }>('get-volume', 'ControllerGetVolume', (c) => c.requiredOption('--id <volume-id>'), (c, o) => c.controllerGetVolume({ volume_id: o.id }));
  add<{ param?: string[] }>('capacity', 'GetCapacity', (c) => c.option('--param <key=value>', 'parameter (repeatable)', collect), (c, o) => c.getCapacity({ parameters: keyValues(o.param) }));
  add('controller-capabilities', 'ControllerGetCapabilities', (c) => c, (c) => c.controllerGetCapabilities({}));
  add<CapabilityFlags & { id: string; node: string; readonly?: boolean }>(
    'controller-publish',
    'ControllerPublishVolume (hypervisor mode: hot-plug into the node VM)',
    (c) => capFlags(c.requiredOption('--id <volume-id>').requiredOption('--node <node-id>', 'domain UUID or name').option('--readonly')),
    (c, o) => c.controllerPublishVolume({ volume_id: o.id, node_id: o.node, readonly: !!o.readonly, volume_capability: capability(o) }),
  );
  add<{ id: string; node?: string }>('controller-unpublish', 'ControllerUnpublishVolume', (c) => c.requiredOption('--id <volume-id>').option('--node <node-id>', 'default: every node'), (c, o) =>
    c.controllerUnpublishVolume({ volume_id: o.id, node_id: o.node ?? '' }),
  );
  add<{ id: string; size: string; block?: boolean }>(
    'controller-expand',
    'ControllerExpandVolume',
    (c) => c.requiredOption('--id <volume-id>').requiredOption('--size <bytes>').option('--block', 'the volume is used as a raw block device'),
    (c, o) =>
      c.controllerExpandVolume({
        volume_id: o.id,
        capacity_range: { required_bytes: bytes(o.size) },
        volume_capability: o.block ? { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } } : null,
      }),
  );
  add<{ name: string; source: string }>('create-snapshot', 'CreateSnapshot', (c) => c.requiredOption('--name <name>').requiredOption('--source <volume-id>'), (c, o) =>
    c.createSnapshot({ name: o.name, source_volume_id: o.source }),
  );
  add<{ id: string }>('delete-snapshot', 'DeleteSnapshot', (c) => c.requiredOption('--id <snapshot-id>'), (c, o) => c.deleteSnapshot({ snapshot_id: o.id }));
  add<{ id?: string; source?: string; max?: string; token?: string }>(
    'list-snapshots',
    'ListSnapshots',
    (c) => c.option('--id <snapshot-id>').option('--source <volume-id>').option('--max <n>').option('--token <t>'),
    (c, o) => c.listSnapshots({ snapshot_id: o.id ?? '', source_volume_id: o.source ?? '', max_entries: Number(o.max ?? 0), starting_token: o.token ?? '' }),
  );

  add<{ id: string }>('get-snapshot', 'GetSnapshot', (c) => c.requiredOption('--id <snapshot-id>'), (c, o) => c.getSnapshot({ snapshot_id: o.id }));

  add('node-info', 'NodeGetInfo', (c) => c, (c) => c.nodeGetInfo({}));
  add('node-capabilities', 'NodeGetCapabilities', (c) => c, (c) => c.nodeGetCapabilities({}));
  add<CapabilityFlags & { id: string; stagingPath: string; context?: string[]; volumeContext?: string[] }>(
    'stage',
    'NodeStageVolume',
    (c) =>
      capFlags(c.requiredOption('--id <volume-id>').requiredOption('--staging-path <dir>'))
        .option('--context <key=value>', 'publish_context entry, as ControllerPublishVolume returned it (repeatable)', collect)
        .option('--volume-context <key=value>', 'volume_context entry, as CreateVolume returned it (repeatable)', collect),
    (c, o) =>
      c.nodeStageVolume({
        volume_id: o.id,
        staging_target_path: o.stagingPath,
        volume_capability: capability(o),
        publish_context: keyValues(o.context),
        volume_context: keyValues(o.volumeContext),
      }),
  );
  add<{ id: string; stagingPath: string }>('unstage', 'NodeUnstageVolume', (c) => c.requiredOption('--id <volume-id>').requiredOption('--staging-path <dir>'), (c, o) =>
    c.nodeUnstageVolume({ volume_id: o.id, staging_target_path: o.stagingPath }),
  );
  add<CapabilityFlags & { id: string; stagingPath: string; targetPath: string; readonly?: boolean }>(
    'publish',
    'NodePublishVolume',
    (c) => capFlags(c.requiredOption('--id <volume-id>').requiredOption('--staging-path <dir>').requiredOption('--target-path <path>').option('--readonly')),
    (c, o) => c.nodePublishVolume({ volume_id: o.id, staging_target_path: o.stagingPath, target_path: o.targetPath, readonly: !!o.readonly, volume_capability: capability(o) }),
  );
  add<{ id: string; targetPath: string }>('unpublish', 'NodeUnpublishVolume', (c) => c.requiredOption('--id <volume-id>').requiredOption('--target-path <path>'), (c, o) =>
    c.nodeUnpublishVolume({ volume_id: o.id, target_path: o.targetPath }),
  );
  add<{ id: string; path: string }>('stats', 'NodeGetVolumeStats', (c) => c.requiredOption('--id <volume-id>').requiredOption('--path <path>'), (c, o) =>
    c.nodeGetVolumeStats({ volume_id: o.id, volume_path: o.path }),
  );
  add<{ id: string; path: string; size: string }>('expand', 'NodeExpandVolume', (c) => c.requiredOption('--id <volume-id>').requiredOption('--path <path>').requiredOption('--size <bytes>'), (c, o) =>
    c.nodeExpandVolume({ volume_id: o.id, volume_path: o.path, capacity_range: { required_bytes: bytes(o.size) } }),
  );
}
