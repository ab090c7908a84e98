import type { CsiClient } from '../../src/csi/client.js';
import { codeOf } from './driver.js';

/**
 * MODEL of external-resizer v2.0.0's start-up (no resizer can run here), read from its source (the
 * same as v1.14.0's: pkg/resizer/csi_resizer.go is unchanged; v2.0.0 first asks the API server whether
 * storage.k8s.io/v1 VolumeAttributesClass is served and turns its modify controller off if not):
 * cmd/csi-resizer/main.go, pkg/csi/client.go, pkg/resizer/csi_resizer.go, pkg/modifier/csi_modifier.go
 * and csi-lib-utils v0.22 rpc/common.go. In order:
 *  1. csi.New: ProbeForever. Probe until ready; a gRPC error other than DEADLINE_EXCEEDED exits
 *     ("failed probing CSI driver"); not ready is retried every second.
 *  2. GetPluginInfo: the driver name ("Get driver name failed" on error).
 *  3. NewResizerFromClient: GetPluginCapabilities must list CONTROLLER_SERVICE, else it exits with
 *     "CSI driver does not support controller service". ControllerGetCapabilities (an error exits):
 *     with EXPAND_VOLUME a csiResizer, after one more ControllerGetCapabilities (SINGLE_NODE_MULTI_WRITER).
 *     Without it, NodeGetCapabilities (an error exits): EXPAND_VOLUME makes the trivial resizer,
 *     otherwise it exits with "CSI driver neither supports controller resize nor node resize".
 *  4. NewModifierFromClient: ControllerGetCapabilities again (MODIFY_VOLUME); an error exits.
 * A failure here is the process exiting 1 (CrashLoopBackOff): the model throws with the message the
 * resizer logs.
 */
export type ResizerKind = 'controller' | 'trivial';

export interface ResizerModel {
  driverName: string;
  kind: ResizerKind;
  /** The RPCs asked, in order, as the real resizer would have asked them. */
  calls: string[];
}

export async function resizerStartup(client: CsiClient, opts: { probeDeadlineMs?: number } = {}): Promise<ResizerModel> {
  const calls: string[] = [];
  const ask = async <T>(name: string, p: () => Promise<T>, failure: string): Promise<T> => {
    calls.push(name);
    try {
      return await p();
    } catch (err) {
      throw new Error(`${failure}: ${name}: ${await codeOf(Promise.reject(err))} ${(err as Error).message}`);
    }
  };
  const deadline = Date.now() + (opts.probeDeadlineMs ?? 10_000);
  for (;;) {
    calls.push('Probe');
    let ready: boolean;
    try {
      ready = (await client.probe({})).ready?.value ?? true; // csi-lib-utils: an unset ready means ready
    } catch (err) {
      if ((await codeOf(Promise.reject(err))) !== 'DEADLINE_EXCEEDED') throw new Error(`failed probing CSI driver: ${(err as Error).message}`);
      ready = false;
    }
    if (ready) break;
    if (Date.now() > deadline) throw new Error('CSI driver is not ready (the real resizer would keep probing)');
    await new Promise((r) => setTimeout(r, 1000));
  }
  const driverName = (await ask('GetPluginInfo', () => client.getPluginInfo({}), 'Get driver name failed')).name;
  const plugin = await ask('GetPluginCapabilities', () => client.getPluginCapabilities({}), 'failed to check if plugin supports controller service');
  if (!plugin.capabilities.some((c) => c.service?.type === 'CONTROLLER_SERVICE')) throw new Error('Failed to create CSI resizer: CSI driver does not support controller service');
  const ctl = await ask('ControllerGetCapabilities', () => client.controllerGetCapabilities({}), 'failed to check if plugin supports controller resize');
  let kind: ResizerKind;
  if (ctl.capabilities.some((c) => c.rpc?.type === 'EXPAND_VOLUME')) {
    await ask('ControllerGetCapabilities', () => client.controllerGetCapabilities({}), 'failed to check if plugin supports the SINGLE_NODE_MULTI_WRITER capability');
    kind = 'controller';
  } else {
    const node = await ask('NodeGetCapabilities', () => client.nodeGetCapabilities({}), 'failed to check if plugin supports node resize');
    if (!node.capabilities.some((c) => c.rpc?.type === 'EXPAND_VOLUME')) throw new Error('Failed to create CSI resizer: CSI driver neither supports controller resize nor node resize');
    kind = 'trivial';
  }
  await ask('ControllerGetCapabilities', () => client.controllerGetCapabilities({}), 'Failed to create CSI modifier: failed to check if plugin supports controller modify');
  return { driverName, kind, calls };
}

/**
 * MODEL of one resize by external-resizer v2.0.0 (pkg/resizer, as v1.14.0): the trivial resizer calls nothing
 * and answers (requested size, node expansion required); the csiResizer calls ControllerExpandVolume
 * with required_bytes only and the PV's capability.
 */
export async function resizerResize(client: CsiClient, model: ResizerModel, volumeId: string, bytes: number, capability: Parameters<CsiClient['controllerExpandVolume']>[0]['volume_capability']): Promise<{ capacityBytes: number; nodeExpansionRequired: boolean }> {
  if (model.kind === 'trivial') return { capacityBytes: bytes, nodeExpansionRequired: true };
  const res = await client.controllerExpandVolume({ volume_id: volumeId, capacity_range: { required_bytes: String(bytes) }, volume_capability: capability, secrets: {} });
  return { capacityBytes: Number(res.capacity_bytes), nodeExpansionRequired: res.node_expansion_required };
}

/** A StorageClass and a PVC, as far as external-provisioner reads them for CreateVolume. */
export interface ClassAndClaim {
  parameters?: Record<string, string>;
  mountOptions?: string[];
  claim: { name: string; namespace: string; uid: string; accessModes: Array<'ReadWriteOnce' | 'ReadWriteOncePod' | 'ReadOnlyMany' | 'ReadWriteMany'>; volumeMode?: 'Filesystem' | 'Block'; storage: number };
}

/** The csi.storage.k8s.io/ keys external-provisioner strips (removePrefixedParameters); any other key under that prefix fails provisioning. */
export const PROVISIONER_KNOWN_PREFIXED = [
  'fstype', 'provisioner-secret-name', 'provisioner-secret-namespace', 'controller-publish-secret-name', 'controller-publish-secret-namespace',
  'node-stage-secret-name', 'node-stage-secret-namespace', 'node-publish-secret-name', 'node-publish-secret-namespace',
  'controller-expand-secret-name', 'controller-expand-secret-namespace', 'node-expand-secret-name', 'node-expand-secret-namespace',
  'secret-name', 'secret-namespace',
].map((k) => `csi.storage.k8s.io/${k}`);

/**
 * MODEL of the CreateVolumeRequest external-provisioner v5 builds from a StorageClass and a PVC (no
 * provisioner can run here), read from its source, pkg/controller/controller.go (Provision,
 * getVolumeCapabilities, removePrefixedParameters) and pkg/accessmodes:
 *  - a parameter key equal to "fstype" in any case, or csi.storage.k8s.io/fstype, gives the filesystem;
 *    both at once fail ("fstype specified in parameters with both ..."); none: --default-fstype (the
 *    chart sets none, so empty);
 *  - each access mode becomes a capability, mount with that fs_type and the class's mountOptions, or
 *    block for a Block claim; with the driver's SINGLE_NODE_MULTI_WRITER (vpool-csi has it),
 *    ReadWriteOnce is SINGLE_NODE_MULTI_WRITER and ReadWriteOncePod SINGLE_NODE_SINGLE_WRITER;
 *  - the parameters passed are the class's without the known csi.storage.k8s.io/ keys (an unknown one
 *    fails provisioning); the legacy fstype key is NOT stripped; --extra-create-metadata (the chart sets
 *    it) then adds csi.storage.k8s.io/pvc/name, pvc/namespace and pv/name.
 * A failure is the provisioner's, an event on the PVC: the model throws its message.
 */
export function provisionerCreateVolume(c: ClassAndClaim): Parameters<CsiClient['createVolume']>[0] {
  const params = c.parameters ?? {};
  const fsKeys = Object.keys(params).filter((k) => k.toLowerCase() === 'fstype' || k === 'csi.storage.k8s.io/fstype');
  if (fsKeys.length > 1) throw new Error('fstype specified in parameters with both "fstype" and "csi.storage.k8s.io/fstype" keys');
  const fsType = fsKeys.length ? params[fsKeys[0]] : '';
  const passed: Record<string, string> = {};
  for (const [k, v] of Object.entries(params)) {
    if (!k.startsWith('csi.storage.k8s.io/')) passed[k] = v;
    else if (!PROVISIONER_KNOWN_PREFIXED.includes(k)) throw new Error(`found unknown parameter key "${k}" with reserved namespace csi.storage.k8s.io/`);
  }
  const pvName = `pvc-${c.claim.uid}`;
  Object.assign(passed, { 'csi.storage.k8s.io/pvc/name': c.claim.name, 'csi.storage.k8s.io/pvc/namespace': c.claim.namespace, 'csi.storage.k8s.io/pv/name': pvName });
  const MODES = { ReadWriteOnce: 'SINGLE_NODE_MULTI_WRITER', ReadWriteOncePod: 'SINGLE_NODE_SINGLE_WRITER', ReadOnlyMany: 'MULTI_NODE_READER_ONLY', ReadWriteMany: 'MULTI_NODE_MULTI_WRITER' } as const;
  const mode = (m: ClassAndClaim['claim']['accessModes'][number]) => MODES[m];
  return {
    name: pvName,
    capacity_range: { required_bytes: String(c.claim.storage) },
    volume_capabilities: c.claim.accessModes.map((m) =>
      c.claim.volumeMode === 'Block' ? { block: {}, access_mode: { mode: mode(m) } } : { mount: { fs_type: fsType, mount_flags: c.mountOptions ?? [] }, access_mode: { mode: mode(m) } },
    ),
    parameters: passed,
  };
}

/** What the node's csi-snapshotter made of one VolumeSnapshotContent it manages. */
export interface SnapshotterSync {
  content: string;
  status?: { readyToUse: boolean; restoreSize: number; creationTime: number; snapshotHandle: string };
  error?: string;
}

/**
 * MODEL of external-snapshotter v8's csi-snapshotter with --node-deployment taking up pre-provisioned
 * VolumeSnapshotContents (none can run here), read from its source: cmd/csi-snapshotter/main.go (the
 * content informer's label selector `snapshot.storage.kubernetes.io/managed-by=$NODE_NAME`), and
 * pkg/sidecar-controller/snapshot_controller.go syncContent -> checkandUpdateContentStatus: a content
 * whose spec.source.snapshotHandle is set is not created but looked up with GetSnapshotStatus
 * (pkg/snapshotter/snapshotter.go): when ControllerGetCapabilities lists LIST_SNAPSHOTS, one
 * ListSnapshots with snapshot_id = the handle (and the list secrets the content names; none here); no
 * entries is an error ("can not find snapshot for snapshotID ..."), retried with back-off; else the
 * first entry's ready_to_use, size_bytes and creation_time go to the content's status.
 * `list` stands for the informer: the contents the API server returns for that selector.
 */
export async function snapshotterSyncPreProvisioned(client: CsiClient, list: (labelSelector: string) => Promise<Array<{ metadata: { name: string }; spec?: { source?: { snapshotHandle?: string } } }>>, node: string): Promise<SnapshotterSync[]> {
  const caps = (await client.controllerGetCapabilities({})).capabilities ?? [];
  const listSnapshots = caps.some((c) => c.rpc?.type === 'LIST_SNAPSHOTS');
  const out: SnapshotterSync[] = [];
  for (const content of await list(`snapshot.storage.kubernetes.io/managed-by=${node}`)) {
    const handle = content.spec?.source?.snapshotHandle;
    if (!handle) continue; // a dynamic content: CreateSnapshot, not modelled here
    if (!listSnapshots) {
      out.push({ content: content.metadata.name, status: { readyToUse: true, restoreSize: 0, creationTime: 0, snapshotHandle: handle } });
      continue;
    }
    const res = await client.listSnapshots({ snapshot_id: handle, secrets: {} });
    const e = res.entries?.[0]?.snapshot;
    if (!e) {
      out.push({ content: content.metadata.name, error: `can not find snapshot for snapshotID ${handle}` });
      continue;
    }
    const t = e.creation_time;
    out.push({ content: content.metadata.name, status: { readyToUse: !!e.ready_to_use, restoreSize: Number(e.size_bytes), creationTime: Number(t?.seconds ?? 0) * 1e9 + (t?.nanos ?? 0), snapshotHandle: handle } });
  }
  return out;
}

/**
 * MODEL of external-snapshot-metadata v1.1.0 (no sidecar can run here), read from its source at that
 * tag: pkg/sidecar/sidecar.go (its flags, a flag.FlagSet of its own: any other flag exits 2),
 * pkg/internal/runtime/runtime.go (Args.Validate: csi-address, timeout, port > 0, tls-cert and
 * tls-key required; initialize: GetPluginInfo for the driver name, an error exits;
 * WaitTillCSIDriverIsValidated: csi-lib-utils ProbeForever, then GetPluginCapabilities must list
 * SNAPSHOT_METADATA_SERVICE, else it exits 1: CrashLoopBackOff) and pkg/internal/server/grpc (per
 * request: TokenReview with the audience, a SubjectAccessReview to get the VolumeSnapshot, the
 * VolumeSnapshot, its content, its VolumeSnapshotClass by name or the list of classes for the
 * driver's default, then the CSI call with the content's snapshot handle).
 */
export const SNAPSHOT_METADATA_FLAGS = ['csi-address', 'timeout', 'port', 'http-endpoint', 'kube-api-burst', 'kube-api-qps', 'kubeconfig', 'max-streaming-duration-min', 'metrics-path', 'tls-cert', 'tls-key', 'version', 'audience', 'disable-metrics'];

/** The API calls the sidecar makes for each request, as RBAC must allow them (group, resource, verb). */
export const SNAPSHOT_METADATA_API_CALLS: Array<[string, string, string]> = [
  ['authentication.k8s.io', 'tokenreviews', 'create'],
  ['authorization.k8s.io', 'subjectaccessreviews', 'create'],
  ['snapshot.storage.k8s.io', 'volumesnapshots', 'get'],
  ['snapshot.storage.k8s.io', 'volumesnapshotcontents', 'get'],
  ['snapshot.storage.k8s.io', 'volumesnapshotclasses', 'get'],
  ['snapshot.storage.k8s.io', 'volumesnapshotclasses', 'list'],
];

/** The sidecar's flags as it parses them; throws as it exits on a flag it does not know or a missing required one. */
export function snapshotMetadataArgs(args: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const a of args) {
    const m = /^--?([a-z-]+)(?:=(.*))?$/.exec(a);
    if (!m || !SNAPSHOT_METADATA_FLAGS.includes(m[1]!)) throw new Error(`flag provided but not defined: ${a}`);
    out[m[1]!] = m[2] ?? 'true';
  }
  if (!out['tls-cert']) throw new Error('missing TLSCertFile');
  if (!out['tls-key']) throw new Error('missing TLSKeyFile');
  if (out.port !== undefined && !(Number(out.port) > 0)) throw new Error('invalid GRPCPort');
  return out;
}

export async function snapshotMetadataStartup(client: CsiClient, opts: { probeDeadlineMs?: number } = {}): Promise<{ driverName: string; calls: string[] }> {
  const calls: string[] = ['GetPluginInfo'];
  const driverName = (await client.getPluginInfo({}).catch((err: Error) => Promise.reject(new Error(`error getting CSI driver name: ${err.message}`)))).name;
  const deadline = Date.now() + (opts.probeDeadlineMs ?? 10_000);
  for (;;) {
    calls.push('Probe');
    let ready: boolean;
    try {
      ready = (await client.probe({})).ready?.value ?? true;
    } catch (err) {
      if ((await codeOf(Promise.reject(err))) !== 'DEADLINE_EXCEEDED') throw new Error(`error waiting for CSI driver to become ready: ${(err as Error).message}`);
      ready = false;
    }
    if (ready) break;
    if (Date.now() > deadline) throw new Error('CSI driver is not ready (the real sidecar would keep probing)');
    await new Promise((r) => setTimeout(r, 1000));
  }
  calls.push('GetPluginCapabilities');
  const caps = await client.getPluginCapabilities({}).catch((err: Error) => Promise.reject(new Error(`error getting CSI plugin capabilities: ${err.message}`)));
  if (!caps.capabilities.some((c) => c.service?.type === 'SNAPSHOT_METADATA_SERVICE')) throw new Error(`CSI driver ${driverName} does not support the SNAPSHOT_METADATA_SERVICE`);
  return { driverName, calls };
}

/**
 * MODEL of external-snapshotter v8.3.0's csi-snapshotter creating a dynamic VolumeGroupSnapshot (none
 * can run here), read from its source: pkg/sidecar-controller/groupsnapshot_helper.go
 * (createGroupSnapshotWrapper), pkg/utils/util.go (RemovePrefixedParameters) and csi_handler.go
 * (makeGroupSnapshotName). The class's parameters lose the csi.storage.k8s.io/ secret keys it knows
 * (any other key under that prefix fails the group before the driver is called); with
 * --extra-create-metadata (the chart passes it) three keys are added: the VolumeGroupSnapshot's name and
 * namespace and the VolumeGroupSnapshotContent's name. The request's name is "groupsnapshot-<UID>".
 * The same request is sent again to see a dynamic group become ready (checkandUpdateGroupSnapshotContentStatusOperation).
 */
export function snapshotterCreateGroupSnapshot(g: { uid: string; name: string; namespace: string; contentName: string; volumeHandles: string[]; classParameters?: Record<string, string> }): Parameters<CsiClient['createVolumeGroupSnapshot']>[0] {
  const known = ['snapshotter-secret-name', 'snapshotter-secret-namespace', 'snapshotter-list-secret-name', 'snapshotter-list-secret-namespace', 'group-snapshotter-get-secret-name', 'group-snapshotter-get-secret-namespace', 'group-snapshotter-secret-name', 'group-snapshotter-secret-namespace'].map((k) => `csi.storage.k8s.io/${k}`);
  const parameters: Record<string, string> = {};
  for (const [k, v] of Object.entries(g.classParameters ?? {})) {
    if (k.startsWith('csi.storage.k8s.io/')) {
      if (!known.includes(k)) throw new Error(`found unknown parameter key "${k}" with reserved namespace csi.storage.k8s.io/`);
    } else parameters[k] = v;
  }
  parameters['csi.storage.k8s.io/volumegroupsnapshot/name'] = g.name;
  parameters['csi.storage.k8s.io/volumegroupsnapshot/namespace'] = g.namespace;
  parameters['csi.storage.k8s.io/volumegroupsnapshotcontent/name'] = g.contentName;
  return { name: `groupsnapshot-${g.uid}`, source_volume_ids: g.volumeHandles, parameters, secrets: {} };
}
