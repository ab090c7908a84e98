import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { before, describe, it } from 'node:test';
import * as promV1 from '@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1';
import * as coreV1 from 'kubernetes-models/v1';
import * as appsV1 from 'kubernetes-models/apps/v1';
import * as rbacV1 from 'kubernetes-models/rbac.authorization.k8s.io/v1';
import * as storageV1 from 'kubernetes-models/storage.k8s.io/v1';
import * as networkingV1 from 'kubernetes-models/networking.k8s.io/v1';
import * as apiextV1 from 'kubernetes-models/apiextensions.k8s.io/v1';
import { BIN } from '../helpers/driver.js';
import { typeFromCrd } from '../helpers/fake-apiserver.js';
import { CHART, HELM, modelOf, render, unknownFields, type K8sObject } from '../helpers/manifests.js';
import { provisionerCreateVolume } from '../helpers/sidecars.js';

const execFileP = promisify(execFile);
type Validating = new (o: K8sObject) => { validate(): void };
const MODELS: Record<string, Record<string, unknown>> = {
  v1: coreV1,
  'apps/v1': appsV1,
  'rbac.authorization.k8s.io/v1': rbacV1,
  'storage.k8s.io/v1': storageV1,
  'networking.k8s.io/v1': networkingV1,
  'apiextensions.k8s.io/v1': apiextV1,
  'monitoring.coreos.com/v1': promV1,
};

/** Custom resources without a published model: their fields, from the CRDs (external-snapshotter v8, CDI v1beta1). */
function checkCustom(o: K8sObject): string[] {
  const keys = (x: object) => Object.keys(x);
  const bad = (what: string, allowed: string[], got: string[]) => got.filter((k) => !allowed.includes(k)).map((k) => `${what}.${k}`);
  if (o.kind === 'VolumeSnapshotClass' && o.apiVersion === 'snapshot.storage.k8s.io/v1') {
    const problems = bad('', ['apiVersion', 'kind', 'metadata', 'driver', 'deletionPolicy', 'parameters'], keys(o));
    if (typeof o.driver !== 'string' || !['Delete', 'Retain'].includes(String(o.deletionPolicy))) problems.push('driver/deletionPolicy');
    return problems;
  }
  // The class's fields are the same in v1beta1, v1beta2 and v1 (external-snapshotter v8.6.0's CRD).
  if (o.kind === 'VolumeGroupSnapshotClass' && /^groupsnapshot\.storage\.k8s\.io\/(v1beta1|v1beta2|v1)$/.test(o.apiVersion)) {
    const problems = bad('', ['apiVersion', 'kind', 'metadata', 'driver', 'deletionPolicy', 'parameters'], keys(o));
    if (typeof o.driver !== 'string' || !['Delete', 'Retain'].includes(String(o.deletionPolicy))) problems.push('driver/deletionPolicy');
    return problems;
  }
  if (o.kind === 'StorageProfile' && o.apiVersion === 'cdi.kubevirt.io/v1beta1') {
    const spec = o.spec as { claimPropertySets?: { accessModes?: string[]; volumeMode?: string }[] };
    const problems = [...bad('', ['apiVersion', 'kind', 'metadata', 'spec'], keys(o)), ...bad('spec', ['claimPropertySets', 'cloneStrategy', 'dataImportCronSourceFormat', 'snapshotClass'], keys(spec))];
    for (const set of spec.claimPropertySets ?? []) {
      problems.push(...bad('spec.claimPropertySets[]', ['accessModes', 'volumeMode'], keys(set)));
      if (!['Block', 'Filesystem'].includes(set.volumeMode ?? '')) problems.push('volumeMode');
      if (!(set.accessModes ?? []).every((m) => ['ReadWriteOnce', 'ReadOnlyMany', 'ReadWriteMany', 'ReadWriteOncePod'].includes(m))) problems.push('accessModes');
    }
    return problems;
  }
  return [`no schema for ${o.apiVersion} ${o.kind}`];
}

/** Every rendered object valid against the Kubernetes schemas, with no field the API does not define. */
function validateAll(objects: K8sObject[]): void {
  assert.ok(objects.length > 5);
  for (const o of objects) {
    const where = `${o.kind}/${o.metadata?.name}`;
    const C = MODELS[o.apiVersion]?.[o.kind] as Validating | undefined;
    if (C) assert.doesNotThrow(() => new C(o).validate(), where);
    const model = modelOf(o);
    if (model) assert.deepEqual(unknownFields(o, model, where), [], `${where}: fields the API does not define`);
    else if (!C) assert.deepEqual(checkCustom(o), [], where);
  }
}

/** The CSI driver's pods (the node DaemonSet, the controller Deployment); the transfer signer is tested on its own. */
const pods = (objects: K8sObject[]) =>
  objects
    .filter((o) => (o.kind === 'DaemonSet' || o.kind === 'Deployment') && !o.metadata?.name?.endsWith('-transfer-signer'))
    .map((o) => ({ owner: o, spec: (o.spec as { template: { spec: PodSpec } }).template.spec }));
interface Container {
  name: string;
  args?: string[];
  env?: Array<{ name: string; valueFrom?: { fieldRef?: { fieldPath?: string } } }>;
  resources?: { limits?: Record<string, string> };
  securityContext?: { privileged?: boolean; runAsUser?: number; runAsNonRoot?: boolean; readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[] } };
}
interface PodSpec {
  containers: Container[];
  hostNetwork?: boolean;
  priorityClassName?: string;
  securityContext?: { runAsNonRoot?: boolean; runAsUser?: number };
}
const byKind = (objects: K8sObject[], kind: string) => objects.filter((o) => o.kind === kind);

const VARIANTS: Record<string, string[]> = {
  'file (defaults)': [],
  lvm: ['backend=lvm'],
  libvirt: ['backend=libvirt'],
  'lvm with everything on': [
    'backend=lvm', 'kubevirt.enabled=true', 'metrics.podMonitor.enabled=true', 'metrics.serviceMonitor.enabled=true', 'metrics.dashboard.enabled=true',
    'hostNetwork=true', 'kubeletDir=/var/lib/k0s/kubelet', 'node.extraArgs[0]=--default-size=2Gi', 'node.nodeSelector.storage=yes', 'maxVolumesPerNode=20',
    'storageClasses.lvm[0].name=fast', 'storageClasses.lvm[0].default=true', 'storageClasses.lvm[0].parameters.type=thin', 'image.tag=0.1.0-dev',
  ],
  'lvm from a VolumePool, orphans deleted after a day': ['backend=lvm', 'volumePool.name=fast', 'orphans.deleteAfter=24h'],
  'file from a VolumePool': ['volumePool.name=files', 'orphans.checkInterval=0'],
  'file, transfer with its own Secret, no NetworkPolicy, a rate and bounds': ['transfer.tls.existingSecret=my-tls', 'transfer.networkPolicy.enabled=false', 'transfer.rate=100Mi', 'transfer.maxSends=2', 'transfer.timeout=2h', 'transfer.stallTimeout=30s'],
  'file without the transfer': ['transfer.enabled=false'],
  'file without VolumeAttributesClasses': ['volumeAttributesClasses.enabled=false'],
  'file with group snapshots, without VolumeAttributesClasses': ['groupSnapshots.enabled=true', 'volumeAttributesClasses.enabled=false'],
  'file with group snapshots': ['groupSnapshots.enabled=true'],
  'lvm with group snapshots, the CA from a Secret': ['backend=lvm', 'groupSnapshots.enabled=true', 'transfer.tls.existingSecret=my-tls'],
  'libvirt with group snapshots': ['backend=libvirt', 'groupSnapshots.enabled=true', 'groupSnapshots.deletionPolicy=Retain'],
  'libvirt with group snapshots, class v1': ['backend=libvirt', 'groupSnapshots.enabled=true', 'groupSnapshots.classApiVersion=groupsnapshot.storage.k8s.io/v1'],
  'libvirt with KubeVirt': ['backend=libvirt', 'kubevirt.enabled=true', 'controller.replicas=2', 'metrics.enabled=false', 'libvirt.diskCache=writeback'],
  'libvirt rbd with a Ceph identity': ['backend=libvirt', 'libvirt.ceph.identitySecret=vpool-ceph', 'libvirt.ceph.user=vpool-ctl'],
};

const EXAMPLES = ['values-file.yaml', 'values-lvm.yaml', 'values-libvirt.yaml', 'values-libvirt-rbd.yaml'];

describe('Helm chart', () => {
  const rendered: Record<string, K8sObject[]> = {};
  before(async () => {
    for (const [name, sets] of Object.entries(VARIANTS)) rendered[name] = await render(sets);
    for (const file of EXAMPLES) rendered[`examples/${file}`] = await render([], 'vpool-csi', [path.join(CHART, 'examples', file)]);
  });

  it('passes helm lint --strict', async () => {
    const { stdout } = await execFileP(HELM, ['lint', '--strict', CHART]);
    assert.match(stdout, /1 chart\(s\) linted, 0 chart\(s\) failed/);
  });

  for (const name of [...Object.keys(VARIANTS), ...EXAMPLES.map((f) => `examples/${f}`)]) {
    it(`renders valid Kubernetes objects: ${name}`, () => validateAll(rendered[name]));
  }

  it('catches what it claims to catch: an unknown field and a wrong type are refused', () => {
    const ds = structuredClone(byKind(rendered.lvm, 'DaemonSet')[0]);
    (ds.spec as { template: { spec: { containers: Record<string, unknown>[] } } }).template.spec.containers[0].privilegd = true;
    assert.throws(() => validateAll([ds, ...rendered.lvm.slice(1)]), /privilegd/);
    const dep = structuredClone(byKind(rendered.libvirt, 'Deployment')[0]);
    (dep.spec as Record<string, unknown>).replicas = 'one';
    assert.throws(() => validateAll([dep, ...rendered.libvirt.slice(1)]));
  });

  it('least privilege: only the node plugin is privileged; sidecars non-root with read-only roots; every container has limits', () => {
    for (const [name, objects] of Object.entries(rendered)) {
      for (const { owner, spec } of pods(objects)) {
        for (const c of spec.containers) {
          const where = `${name}: ${owner.kind} ${c.name}`;
          assert.ok(c.resources?.limits?.cpu && c.resources.limits.memory, `${where} has cpu and memory limits`);
          assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${where} read-only root`);
          const privileged = owner.kind === 'DaemonSet' && c.name === 'driver';
          assert.equal(c.securityContext?.privileged ?? false, privileged, `${where}: privileged only for the node plugin`);
          if (privileged) continue;
          assert.equal(c.securityContext?.allowPrivilegeEscalation, false, where);
          assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], where);
          // The registrar writes into the kubelet's root-owned registration directory: root, but nothing more.
          const nonRoot = c.securityContext?.runAsNonRoot ?? spec.securityContext?.runAsNonRoot;
          if (c.name === 'node-driver-registrar') assert.equal(c.securityContext?.runAsUser, 0, where);
          else assert.equal(nonRoot, true, `${where} runs as non-root`);
        }
        assert.equal(spec.hostNetwork ?? false, name === 'lvm with everything on' && owner.kind === 'DaemonSet', `${name}: hostNetwork only when asked`);
        if (owner.kind === 'DaemonSet') assert.equal(spec.priorityClassName, 'system-node-critical');
      }
    }
  });

  it('the topology follows the backend: CSIDriver, sidecars, StorageClasses, KubeVirt onboarding', () => {
    const driver = (name: string) => byKind(rendered[name], 'CSIDriver')[0].spec as { attachRequired: boolean; storageCapacity: boolean; podInfoOnMount: boolean; fsGroupPolicy: string; volumeLifecycleModes: string[] };
    assert.deepEqual([driver('lvm').attachRequired, driver('lvm').storageCapacity], [false, true]);
    assert.deepEqual([driver('libvirt').attachRequired, driver('libvirt').storageCapacity], [true, false]);
    assert.equal(driver('lvm').fsGroupPolicy, 'File');
    assert.deepEqual(driver('lvm').volumeLifecycleModes, ['Persistent']);
    const names = (objects: K8sObject[], kind: string) => pods(objects).filter((p) => p.owner.kind === kind).flatMap((p) => p.spec.containers.map((c) => c.name)).sort();
    assert.deepEqual(names(rendered.lvm, 'DaemonSet'), ['csi-provisioner', 'csi-snapshotter', 'driver', 'liveness-probe', 'node-driver-registrar']);
    assert.deepEqual(names(rendered.lvm, 'Deployment'), ['csi-resizer', 'driver', 'liveness-probe', 'snapshot-router']);
    assert.deepEqual(names(rendered['file without VolumeAttributesClasses'], 'Deployment'), ['csi-resizer', 'driver', 'liveness-probe']);
    assert.deepEqual(names(rendered.libvirt, 'DaemonSet'), ['driver', 'liveness-probe', 'node-driver-registrar']);
    assert.deepEqual(names(rendered.libvirt, 'Deployment'), ['csi-attacher', 'csi-provisioner', 'csi-resizer', 'csi-snapshotter', 'driver', 'liveness-probe']);
    const provisioner = pods(rendered.lvm).flatMap((p) => p.spec.containers).find((c) => c.name === 'csi-provisioner')!;
    for (const flag of ['--node-deployment', '--enable-capacity', '--capacity-ownerref-level=1']) assert.ok(provisioner.args?.includes(flag), flag);
    for (const c of pods(rendered.libvirt).flatMap((p) => p.spec.containers).filter((x) => ['csi-provisioner', 'csi-attacher', 'csi-resizer', 'csi-snapshotter'].includes(x.name))) {
      assert.ok(c.args?.includes('--leader-election'), `${c.name} is leader-elected`);
    }
    const classes = byKind(rendered.lvm, 'StorageClass').map((s) => [s.metadata.name, (s as unknown as { volumeBindingMode: string; allowVolumeExpansion: boolean; parameters: Record<string, string> })]);
    assert.deepEqual(classes.map(([n, s]) => [n, (s as { volumeBindingMode: string }).volumeBindingMode, (s as { parameters: Record<string, string> }).parameters.type]), [['vpool-lvm-thin', 'WaitForFirstConsumer', 'thin'], ['vpool-lvm-thick', 'WaitForFirstConsumer', 'thick']]);
    const kv = rendered['lvm with everything on'];
    const first = byKind(kv, 'StorageClass')[0];
    assert.equal(first.metadata.annotations?.['storageclass.kubevirt.io/is-default-virt-class'], 'true');
    assert.equal(first.metadata.annotations?.['storageclass.kubernetes.io/is-default-class'], 'true');
    const profile = (objects: K8sObject[]) => (byKind(objects, 'StorageProfile')[0].spec as { claimPropertySets: unknown[] }).claimPropertySets;
    assert.deepEqual(profile(kv), [{ volumeMode: 'Block', accessModes: ['ReadWriteOnce'] }]);
    assert.deepEqual(profile(rendered['libvirt with KubeVirt']), [{ volumeMode: 'Block', accessModes: ['ReadWriteMany'] }]);
    assert.equal(byKind(kv, 'PodMonitor').length, 1);
    assert.equal(byKind(kv, 'ServiceMonitor').length, 1);
    assert.ok(JSON.parse((byKind(kv, 'ConfigMap')[0].data as Record<string, string>)['vpool-csi.json']).panels.length >= 5, 'the dashboard is valid JSON');
    const ds = pods(kv).find((p) => p.owner.kind === 'DaemonSet')!.spec as unknown as { volumes: { name: string; hostPath?: { path: string } }[] };
    assert.ok(ds.volumes.some((v) => v.hostPath?.path === '/var/lib/k0s/kubelet/plugins_registry'), 'kubeletDir is honoured');
  });

  // external-provisioner's rules for a class's parameters (MODEL in test/helpers/sidecars.ts, from its source).
  it("every StorageClass rendered sets the filesystem the Kubernetes way and passes external-provisioner's parameter rules", () => {
    let seen = 0;
    for (const [variant, objects] of Object.entries(rendered)) {
      for (const sc of byKind(objects, 'StorageClass') as unknown as { metadata: { name: string }; parameters?: Record<string, string>; mountOptions?: string[] }[]) {
        seen++;
        const where = `${variant}: ${sc.metadata.name}`;
        // (One variant replaces a class's parameters with --set: the user's class, which names no filesystem.)
        const own = !(variant === 'lvm with everything on' && sc.metadata.name === 'fast');
        if (own) assert.equal(sc.parameters?.['csi.storage.k8s.io/fstype'], 'ext4', `${where} names its filesystem with csi.storage.k8s.io/fstype`);
        assert.deepEqual(Object.keys(sc.parameters ?? {}).filter((k) => k.toLowerCase() === 'fstype'), [], `${where} has no legacy fsType key`);
        const req = provisionerCreateVolume({ parameters: sc.parameters, mountOptions: sc.mountOptions, claim: { name: 'c', namespace: 'n', uid: 'u', accessModes: ['ReadWriteOnce'], storage: 1 } });
        assert.equal(req.volume_capabilities?.[0].mount?.fs_type, own ? 'ext4' : '', `${where}: the provisioner puts it in the capability`);
        assert.ok(!Object.keys(req.parameters ?? {}).some((k) => k === 'csi.storage.k8s.io/fstype' || k.toLowerCase() === 'fstype'), `${where}: and passes no filesystem parameter`);
      }
    }
    assert.ok(seen >= 8, `${seen} classes checked`);
  });

  it('the node role may take up imported snapshots (list VolumeSnapshotContents without a node label, update their labels) on file and lvm', () => {
    for (const variant of ['file (defaults)', 'lvm']) {
      const role = byKind(rendered[variant], 'ClusterRole').find((r) => r.metadata.name.endsWith('-node')) as unknown as { rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] };
      const verbs = new Set(role.rules.filter((r) => r.apiGroups.includes('snapshot.storage.k8s.io') && r.resources.includes('volumesnapshotcontents')).flatMap((r) => r.verbs));
      for (const v of ['list', 'update']) assert.ok(verbs.has(v), `${variant}: ${v}`);
    }
  });

  it('group snapshots (libvirt): csi-snapshotter with its feature gate, the RBAC it asks for groups, a VolumeGroupSnapshotClass; off by default; refused on file and lvm without the transfer, with the reason', async () => {
    const objects = rendered['libvirt with group snapshots'];
    const deployment = byKind(objects, 'Deployment').find((o) => o.metadata.name.endsWith('-controller'))!;
    const snapshotter = (deployment.spec as { template: { spec: PodSpec } }).template.spec.containers.find((c) => c.name === 'csi-snapshotter')!;
    assert.ok(snapshotter.args?.includes('--feature-gates=CSIVolumeGroupSnapshot=true'));
    const role = byKind(objects, 'ClusterRole').find((r) => r.metadata.name.endsWith('-controller')) as unknown as { rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[] };
    const verbsOf = (resource: string) => role.rules.filter((r) => r.apiGroups.includes('groupsnapshot.storage.k8s.io') && r.resources.includes(resource)).flatMap((r) => r.verbs).sort();
    // external-snapshotter v8's rbac-csi-snapshotter.yaml, no more: the snapshot-controller, not the sidecar, creates member contents.
    assert.deepEqual(verbsOf('volumegroupsnapshotclasses'), ['get', 'list', 'watch']);
    assert.deepEqual(verbsOf('volumegroupsnapshotcontents'), ['get', 'list', 'patch', 'update', 'watch']);
    assert.deepEqual(verbsOf('volumegroupsnapshotcontents/status'), ['patch', 'update']);
    const klass = byKind(objects, 'VolumeGroupSnapshotClass');
    assert.equal(klass.length, 1);
    assert.deepEqual({ driver: klass[0]!.driver, deletionPolicy: klass[0]!.deletionPolicy, name: klass[0]!.metadata.name, apiVersion: klass[0]!.apiVersion }, { driver: 'vpool.csi.dev', deletionPolicy: 'Retain', name: 'vpool-group', apiVersion: 'groupsnapshot.storage.k8s.io/v1beta1' });
    assert.equal(byKind(rendered['libvirt with group snapshots, class v1'], 'VolumeGroupSnapshotClass')[0]!.apiVersion, 'groupsnapshot.storage.k8s.io/v1');
    await assert.rejects(render(['backend=libvirt', 'groupSnapshots.enabled=true', 'groupSnapshots.classApiVersion=groupsnapshot.storage.k8s.io/v2']), /classApiVersion/);

    for (const variant of ['libvirt', 'file (defaults)', 'lvm']) {
      assert.equal(byKind(rendered[variant], 'VolumeGroupSnapshotClass').length, 0, `${variant}: no class by default`);
      const text = JSON.stringify(rendered[variant]);
      assert.ok(!text.includes('CSIVolumeGroupSnapshot') && !text.includes('groupsnapshot.storage.k8s.io'), `${variant}: no gate, no group RBAC by default`);
    }
    for (const backend of ['file', 'lvm']) {
      await assert.rejects(render([`backend=${backend}`, 'groupSnapshots.enabled=true', 'transfer.enabled=false']), /groupSnapshots\.enabled with backend=(file|lvm) needs transfer\.enabled: the snapshot router hands each group to the node holding its volumes over the transfer listener/);
    }
  });

  it('group snapshots (file, lvm): the snapshot router and one central csi-snapshotter in the controller, none on the nodes; each selector picks exactly its pods; the router\'s RBAC, certificate and network path', () => {
    const selects = (selector: string, labels: Record<string, string>) => selector.split(',').every((kv) => labels[kv.split('=')[0]!] === kv.split('=')[1]);
    for (const variant of ['file with group snapshots', 'lvm with group snapshots, the CA from a Secret']) {
      const objects = rendered[variant];
      const deployments = byKind(objects, 'Deployment');
      const controller = deployments.find((o) => o.metadata.name.endsWith('-controller'))!;
      const cspec = (controller.spec as { template: { metadata: { labels: Record<string, string> }; spec: PodSpec & { serviceAccountName: string } } }).template;
      const router = cspec.spec.containers.find((c) => c.name === 'snapshot-router')!;
      const central = cspec.spec.containers.find((c) => c.name === 'csi-snapshotter')!;
      assert.equal(router.args?.[0], 'snapshot-router', variant);
      assert.ok(router.args?.includes('--endpoint=unix:///csi/router.sock'));
      assert.deepEqual(router.env?.map((e) => e.name).sort(), ['POD_NAME', 'POD_NAMESPACE']);
      assert.ok(central.args?.includes('--csi-address=/csi/router.sock'), 'the central sidecar calls the router');
      assert.ok(central.args?.includes('--feature-gates=CSIVolumeGroupSnapshot=true') && central.args.includes('--leader-election'));
      assert.ok(!central.args?.includes('--node-deployment'));
      const ds = byKind(objects, 'DaemonSet')[0]!;
      const nspec = (ds.spec as { template: { metadata: { labels: Record<string, string> }; spec: PodSpec } }).template;
      assert.ok(!nspec.spec.containers.some((c) => c.name === 'csi-snapshotter'), 'no node csi-snapshotter: the central one takes every content, one here would take each twice');
      const nodeDriver = nspec.spec.containers.find((c) => c.name === 'driver')!;
      const arg = (c: { args?: string[] }, f: string) => c.args?.find((a) => a.startsWith(`--${f}=`))?.slice(f.length + 3);
      const routerSelector = arg(nodeDriver, 'transfer-router-from-cluster')!;
      const signer = deployments.find((o) => o.metadata.name.endsWith('-transfer-signer'))!;
      const signerC = (signer.spec as { template: { spec: PodSpec } }).template.spec.containers[0]!;
      assert.equal(arg(signerC, 'router-selector'), routerSelector);
      assert.equal(arg(signerC, 'router-service-account'), cspec.spec.serviceAccountName, 'the signer issues router certificates to the controller\'s account');
      // Each selector picks its own pods and never the other kind.
      assert.ok(selects(routerSelector, cspec.metadata.labels) && !selects(routerSelector, nspec.metadata.labels), `${variant}: the router selector is the controller pods'`);
      assert.ok(selects(arg(router, 'node-selector')!, nspec.metadata.labels) && !selects(arg(router, 'node-selector')!, cspec.metadata.labels), `${variant}: the router hands calls to node plugin pods`);
      assert.equal(arg(router, 'trust-configmap'), arg(nodeDriver, 'transfer-trust-configmap'));
      assert.equal(arg(router, 'signer-name'), arg(nodeDriver, 'transfer-signer-name'));
      // RBAC: the sidecar's contents and groups, the router's CSR, its pods list and the trust bundle.
      type Rule = { apiGroups: string[]; resources: string[]; verbs: string[]; resourceNames?: string[] };
      const rules = (kind: string, suffix: string) => (byKind(objects, kind).find((r) => r.metadata.name.endsWith(suffix)) as unknown as { rules: Rule[] }).rules;
      const has = (rs: Rule[], group: string, resource: string, verb: string) => rs.some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb));
      const cluster = rules('ClusterRole', '-controller');
      for (const [g, r, v] of [['groupsnapshot.storage.k8s.io', 'volumegroupsnapshotcontents', 'update'], ['groupsnapshot.storage.k8s.io', 'volumegroupsnapshotclasses', 'watch'], ['snapshot.storage.k8s.io', 'volumesnapshotcontents', 'patch'], ['snapshot.storage.k8s.io', 'volumesnapshotcontents/status', 'update'], ['certificates.k8s.io', 'certificatesigningrequests', 'create']] as const) assert.ok(has(cluster, g, r, v), `${variant}: ${g}/${r} ${v}`);
      const leases = rules('Role', '-controller-leases');
      assert.ok(has(leases, '', 'pods', 'list'));
      assert.ok(has(cluster, '', 'persistentvolumes', 'list'), 'the router checks a node\'s claim to a volume against its PV');
      assert.equal(arg(router, 'node-daemonset'), ds.metadata.name, 'the router counts the node plugins the DaemonSet wants');
      assert.deepEqual(leases.find((r) => r.resources.includes('daemonsets'))?.resourceNames, [ds.metadata.name]);
      assert.deepEqual(leases.find((r) => r.resources.includes('configmaps'))?.resourceNames, [arg(router, 'trust-configmap')]);
      // The transfer's NetworkPolicy lets the controller's pods reach the listener.
      const policy = byKind(objects, 'NetworkPolicy').find((p) => p.metadata.name.endsWith('-transfer')) as unknown as { spec: { ingress: Array<{ from?: Array<{ podSelector: { matchLabels: Record<string, string> } }> }> } };
      const froms = policy.spec.ingress.flatMap((i) => i.from ?? []).map((f) => f.podSelector.matchLabels);
      assert.ok(froms.some((m) => Object.entries(m).every(([k, v]) => cspec.metadata.labels[k] === v)), `${variant}: the NetworkPolicy admits the router's pods`);
      assert.equal(byKind(objects, 'VolumeGroupSnapshotClass').length, 1);
    }
    // Without groups, the nodes keep their csi-snapshotters and no central one is rendered (the router runs for the
    // resizer's modify calls); without groups and classes, nothing of the router is rendered.
    const plain = rendered['file (defaults)'];
    assert.ok((byKind(plain, 'DaemonSet')[0]!.spec as { template: { spec: PodSpec } }).template.spec.containers.some((c) => c.name === 'csi-snapshotter'));
    assert.ok(!pods(plain).find((p) => p.owner.kind === 'Deployment')!.spec.containers.some((c) => c.name === 'csi-snapshotter'));
    assert.ok(!(byKind(plain, 'ClusterRole').find((r) => r.metadata.name.endsWith('-controller')) as unknown as { rules: { resources: string[] }[] }).rules.some((r) => r.resources.includes('volumesnapshotcontents')), 'no snapshot rules for a controller that takes no snapshots');
    const none = rendered['file without VolumeAttributesClasses'];
    assert.ok(!JSON.stringify(none).includes('snapshot-router') && !JSON.stringify(none).includes('router-from-cluster'));
  });

  it('VolumeAttributesClasses (file, lvm): sidecars that read storage.k8s.io/v1, their RBAC, the classes where the API is served, the host\'s cgroups for the node plugin', async () => {
    const sidecar = (objects: K8sObject[], name: string) => pods(objects).flatMap((p) => p.spec.containers).find((c) => c.name === name)! as unknown as { image: string };
    // csi-provisioner v6 and csi-resizer v2 read classes from storage.k8s.io/v1 (Kubernetes 1.34, GA) and turn it off where it is not served.
    assert.match(sidecar(rendered.lvm, 'csi-provisioner').image, /csi-provisioner:v6\./);
    assert.match(sidecar(rendered.lvm, 'csi-resizer').image, /csi-resizer:v2\./);
    type Rule = { apiGroups: string[]; resources: string[]; verbs: string[] };
    const may = (objects: K8sObject[], role: string, resource: string, verb: string) => (byKind(objects, 'ClusterRole').find((r) => r.metadata.name.endsWith(role)) as unknown as { rules: Rule[] }).rules.some((r) => r.resources.includes(resource) && r.verbs.includes(verb));
    for (const v of ['file (defaults)', 'lvm']) {
      assert.ok(may(rendered[v], '-node', 'volumeattributesclasses', 'get'), `${v}: the provisioner reads a claim's class`);
      assert.ok(may(rendered[v], '-controller', 'volumeattributesclasses', 'watch'), `${v}: the resizer watches classes`);
      assert.ok(!may(rendered[v], '-controller', 'volumeattributesclasses', 'create'));
      const node = pods(rendered[v]).find((p) => p.owner.kind === 'DaemonSet')!;
      const driver = node.spec.containers.find((c) => c.name === 'driver')! as unknown as { args: string[]; volumeMounts: { name: string; mountPath: string }[] };
      assert.ok(driver.args.includes('--cgroup-root=/host/sys/fs/cgroup'));
      assert.ok(driver.volumeMounts.some((m) => m.name === 'host-cgroup' && m.mountPath === '/host/sys/fs/cgroup'));
      assert.ok((node.spec as unknown as { volumes: { name: string; hostPath?: { path: string } }[] }).volumes.some((x) => x.name === 'host-cgroup' && x.hostPath?.path === '/sys/fs/cgroup'));
      // Without the v1 API the classes are not made (helm install would fail on the kind).
      assert.equal(byKind(rendered[v], 'VolumeAttributesClass').length, 0);
    }
    const served = await render([], 'vpool-csi', [], ['--api-versions', 'storage.k8s.io/v1/VolumeAttributesClass']);
    validateAll(served);
    const classes = byKind(served, 'VolumeAttributesClass') as unknown as { metadata: { name: string }; driverName: string; parameters: Record<string, string> }[];
    assert.deepEqual(classes.map((c) => [c.metadata.name, c.driverName, c.parameters.readIOPS]), [['vpool-io-limited', 'vpool.csi.dev', '500'], ['vpool-io-unlimited', 'vpool.csi.dev', 'unlimited']]);
    // Each class's parameters are what the pools take (the same checks the driver makes).
    const { IO_LIMIT_PARAMETERS, parseMutableParameters } = await import('../../src/pool/mutable-parameters.js');
    for (const c of classes) assert.doesNotThrow(() => parseMutableParameters(c.parameters, IO_LIMIT_PARAMETERS), c.metadata.name);
    // Where no claim can change class (no transfer: no way to the node), no class is made.
    for (const sets of [['transfer.enabled=false'], ['volumeAttributesClasses.enabled=false'], ['backend=libvirt', 'volumeAttributesClasses.enabled=false']]) {
      assert.equal(byKind(await render(sets, 'vpool-csi', [], ['--api-versions', 'storage.k8s.io/v1/VolumeAttributesClass']), 'VolumeAttributesClass').length, 0, sets.join());
    }
    // libvirt changes a class on the controller (QEMU's throttling of the disk): the classes are made, bursts allowed there only.
    const burst = ['volumeAttributesClasses.classes[0].name=bursty', 'volumeAttributesClasses.classes[0].parameters.readIOPS=500', 'volumeAttributesClasses.classes[0].parameters.readIOPSBurst=2000'].flatMap((s) => ['--set-string', s]);
    const libvirtClasses = byKind(await render(['backend=libvirt'], 'vpool-csi', [], ['--api-versions', 'storage.k8s.io/v1/VolumeAttributesClass', ...burst]), 'VolumeAttributesClass') as unknown as { parameters: Record<string, string> }[];
    assert.deepEqual(libvirtClasses.map((c) => c.parameters), [{ readIOPS: '500', readIOPSBurst: '2000' }]);
    await assert.rejects(render(['backend=lvm'], 'vpool-csi', [], burst), /then/, 'the kernel\'s limits have no bursts');
    // A tier is the lvm pool's: a class naming one is made there, refused elsewhere.
    const tiered = ['volumeAttributesClasses.classes[0].name=fast', 'volumeAttributesClasses.classes[0].parameters.tier=fast'].flatMap((s) => ['--set-string', s]);
    const lvmClasses = byKind(await render(['backend=lvm'], 'vpool-csi', [], ['--api-versions', 'storage.k8s.io/v1/VolumeAttributesClass', ...tiered]), 'VolumeAttributesClass') as unknown as { parameters: Record<string, string> }[];
    assert.deepEqual(lvmClasses.map((c) => c.parameters), [{ tier: 'fast' }]);
    await assert.rejects(render(['backend=file'], 'vpool-csi', [], tiered), /then/, 'no tiers in the file pool');
    await assert.rejects(render(['volumeAttributesClasses.classes[0].name=x', 'volumeAttributesClasses.classes[0].parameters.readIOPS=lots']), /readIOPS/);
    await assert.rejects(render(['node.kubepodsCgroups[0]=../etc']), /kubepodsCgroups/);
    assert.ok(pods(await render(['node.kubepodsCgroups[0]=kubelet/kubepods'])).find((p) => p.owner.kind === 'DaemonSet')!.spec.containers[0].args!.includes('--kubepods-cgroup=kubelet/kubepods'));
  });

  it('refuses at install a class external-provisioner would refuse at every claim: the filesystem twice, an unknown csi.storage.k8s.io/ key', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-values-'));
    try {
      const values = async (parameters: Record<string, string>) => {
        const f = path.join(dir, `v${Math.random().toString(36).slice(2)}.yaml`);
        await writeFile(f, JSON.stringify({ storageClasses: { file: [{ name: 'bad', allowVolumeExpansion: true, parameters }] } }));
        return f;
      };
      await assert.rejects(render([], 'vpool-csi', [await values({ fsType: 'xfs', 'csi.storage.k8s.io/fstype': 'xfs' })]), /sets the filesystem twice \(csi\.storage\.k8s\.io\/fstype, fsType\)/);
      await assert.rejects(render([], 'vpool-csi', [await values({ FSTYPE: 'xfs', 'csi.storage.k8s.io/fstype': 'xfs' })]), /sets the filesystem twice/);
      await assert.rejects(render([], 'vpool-csi', [await values({ 'csi.storage.k8s.io/fs-type': 'xfs' })]), /csi\.storage\.k8s\.io\/fs-type is not a key external-provisioner knows/);
      // What the provisioner accepts, the chart renders: a secret reference, the old spelling alone.
      const ok = await render([], 'vpool-csi', [await values({ fsType: 'xfs', 'csi.storage.k8s.io/node-stage-secret-name': 's' })]);
      assert.deepEqual((byKind(ok, 'StorageClass')[0] as unknown as { parameters: Record<string, string> }).parameters, { fsType: 'xfs', 'csi.storage.k8s.io/node-stage-secret-name': 's' });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('ships the VolumePool CRD: structural, admitted by the FAKE API server, with printer columns; the node role may use it', async () => {
    for (const objects of Object.values(rendered)) assert.equal(byKind(objects, 'CustomResourceDefinition').length, 1);
    const crd = byKind(rendered.lvm, 'CustomResourceDefinition')[0] as unknown as Parameters<typeof typeFromCrd>[0] & { spec: { versions: { additionalPrinterColumns: { name: string }[] }[] } };
    const t = typeFromCrd(crd); // throws unless structural
    assert.deepEqual([t.group, t.version, t.kind, t.namespaced, t.statusSubresource], ['vpool.dev', 'v1alpha1', 'VolumePool', false, true]);
    assert.deepEqual(crd.spec.versions[0].additionalPrinterColumns.map((c) => c.name), ['Backend', 'Ready', 'Size', 'Free', 'Age']);
    const rules = (objects: K8sObject[], role: string) => (byKind(objects, 'ClusterRole').find((r) => r.metadata.name === role)?.rules ?? []) as { resources: string[]; verbs: string[] }[];
    const may = (objects: K8sObject[], role: string, resource: string, verb: string) => rules(objects, role).some((r) => r.resources.includes(resource) && r.verbs.includes(verb));
    for (const v of ['lvm', 'file (defaults)']) {
      assert.ok(may(rendered[v], 'vpool-csi-node', 'volumepools', 'watch') && may(rendered[v], 'vpool-csi-node', 'volumepools/status', 'update'), v);
      assert.ok(!may(rendered[v], 'vpool-csi-node', 'volumepools', 'update'), `${v}: the node never edits a VolumePool's spec`);
      assert.ok(!may(rendered[v], 'vpool-csi-node', 'volumesnapshotcontents', 'delete'), v);
    }
    assert.ok(!rules(rendered.libvirt, 'vpool-csi-controller').some((r) => r.resources.includes('volumepools')), 'libvirt has no VolumePools');
    const args = (v: string) => pods(rendered[v]).find((p) => p.owner.kind === 'DaemonSet')!.spec.containers[0].args ?? [];
    assert.ok(args('lvm from a VolumePool, orphans deleted after a day').includes('--pool-from-cluster=fast'));
    assert.ok(args('lvm from a VolumePool, orphans deleted after a day').includes('--orphan-delete-after=24h'));
    assert.ok(args('lvm').includes('--orphan-check-interval=10m') && !args('lvm').some((a) => a.startsWith('--orphan-delete-after')), 'report only by default');
    const ds = pods(rendered['file from a VolumePool']).find((p) => p.owner.kind === 'DaemonSet')!.spec as unknown as { volumes: { hostPath?: { path: string } }[] };
    assert.ok(ds.volumes.some((v) => v.hostPath?.path === '/var/lib/vpool-csi/pools'), 'file VolumePools\' directories are mounted');
  });

  // What each sidecar asks of the socket it is given, from the sidecars' source (k8s-contracts.md):
  // external-provisioner, -snapshotter and -attacher need the Controller service; external-resizer
  // CONTROLLER_SERVICE with EXPAND_VOLUME on the controller or the node (test/e2e/expansion-chart.test.ts
  // runs its start-up against the real process); node-driver-registrar calls NodeGetInfo; livenessprobe Probe.
  const NEEDS: Record<string, string[]> = {
    'csi-provisioner': ['all', 'controller'],
    // The snapshot router serves what a central csi-snapshotter asks (test/e2e/snapshot-router.test.ts runs it as rendered).
    'csi-snapshotter': ['all', 'controller', 'snapshot-router'],
    'csi-attacher': ['controller'],
    // The router answers the resizer's start-up as the resizer mode does, and hands it ControllerModifyVolume (test/e2e/snapshot-router.test.ts).
    'csi-resizer': ['all', 'controller', 'resizer', 'snapshot-router'],
    'node-driver-registrar': ['all', 'node'],
    'liveness-probe': ['all', 'controller', 'node', 'resizer'],
  };
  it('every sidecar talks to a driver whose --mode serves what that sidecar asks', () => {
    for (const [name, objects] of Object.entries(rendered)) {
      for (const { owner, spec } of pods(objects)) {
        // The driver container, and the snapshot router beside it (node-local pools with groups): what each socket serves.
        const served = new Map<string, string>();
        for (const c of spec.containers.filter((x) => x.name === 'driver' || x.name === 'snapshot-router')) {
          const mode = c.name === 'snapshot-router' ? 'snapshot-router' : c.args?.find((a) => a.startsWith('--mode='))?.slice(7);
          served.set(c.args?.find((a) => a.startsWith('--endpoint='))?.slice(11) ?? '', mode ?? '');
        }
        for (const c of spec.containers.filter((x) => x.name !== 'driver' && x.name !== 'snapshot-router')) {
          const where = `${name}: ${owner.kind} ${c.name}`;
          assert.ok(NEEDS[c.name], `${where}: a sidecar this test knows`);
          const socket = `unix://${c.args?.find((a) => a.startsWith('--csi-address='))?.slice(14)}`;
          const mode = served.get(socket);
          assert.ok(mode !== undefined, `${where} talks to a driver of its pod`);
          assert.ok(NEEDS[c.name].includes(mode ?? ''), `${where} needs a driver in mode ${NEEDS[c.name].join(' or ')}, the chart runs --mode=${mode}`);
        }
      }
    }
    const resizerMode = (v: string) => pods(rendered[v]).find((p) => p.owner.kind === 'Deployment')!.spec.containers.find((c) => c.name === 'driver')!.args!.find((a) => a.startsWith('--mode='));
    const resizerSocket = (v: string) => pods(rendered[v]).find((p) => p.owner.kind === 'Deployment')!.spec.containers.find((c) => c.name === 'csi-resizer')!.args!.find((a) => a.startsWith('--csi-address='));
    // Where claims change class (VolumeAttributesClasses through the router), the resizer calls the router; else the resizer mode.
    assert.equal(resizerSocket('lvm'), '--csi-address=/csi/router.sock');
    assert.equal(resizerSocket('file without the transfer'), '--csi-address=/csi/csi.sock');
    assert.equal(resizerSocket('file without VolumeAttributesClasses'), '--csi-address=/csi/csi.sock');
    assert.equal(resizerSocket('file with group snapshots, without VolumeAttributesClasses'), '--csi-address=/csi/csi.sock', 'the router runs for the snapshotter, and the resizer does not change classes');
    assert.equal(resizerSocket('libvirt'), '--csi-address=/csi/csi.sock', 'libvirt\'s controller changes classes itself');
    // A node takes from the router only the calls of the features turned on: a router certificate can do no more.
    const takes = (v: string) => pods(rendered[v]).find((p) => p.owner.kind === 'DaemonSet')!.spec.containers[0].args!.filter((a) => a.startsWith('--transfer-router-takes='));
    assert.deepEqual(takes('file (defaults)'), ['--transfer-router-takes=modify']);
    assert.deepEqual(takes('file with group snapshots'), ['--transfer-router-takes=snapshots,modify']);
    assert.deepEqual(takes('file with group snapshots, without VolumeAttributesClasses'), ['--transfer-router-takes=snapshots']);
    assert.deepEqual(takes('file without VolumeAttributesClasses'), []);
    assert.equal(resizerMode('lvm'), '--mode=resizer');
    assert.equal(resizerMode('libvirt'), '--mode=controller');
  });

  it('a Ceph identity (libvirt rbd): its Secret mounted in the controller\'s driver alone, the three flags at the paths it is mounted at; a user is required, without client.', async () => {
    const objects = rendered['libvirt rbd with a Ceph identity'];
    const ctl = pods(objects).find((p) => p.owner.kind === 'Deployment')!;
    const driver = ctl.spec.containers.find((c) => c.name === 'driver')! as unknown as { args: string[]; volumeMounts: { name: string; mountPath: string }[] };
    assert.deepEqual(driver.args.filter((a) => a.startsWith('--ceph-')), ['--ceph-conf=/etc/vpool-csi/ceph/ceph.conf', '--ceph-user=vpool-ctl', '--ceph-keyring=/etc/vpool-csi/ceph/keyring']);
    assert.ok(driver.volumeMounts.some((m) => m.name === 'ceph-identity' && m.mountPath === '/etc/vpool-csi/ceph'));
    const volume = (ctl.spec as unknown as { volumes: { name: string; secret?: { secretName: string; items: { key: string; path: string }[] } }[] }).volumes.find((v) => v.name === 'ceph-identity')!;
    assert.equal(volume.secret!.secretName, 'vpool-ceph');
    assert.deepEqual(volume.secret!.items.map((i) => i.path).sort(), ['ceph.conf', 'keyring']);
    for (const c of ctl.spec.containers.filter((x) => x.name !== 'driver')) assert.ok(!JSON.stringify(c).includes('ceph-identity'), `${c.name} does not mount it`);
    const node = pods(objects).find((p) => p.owner.kind === 'DaemonSet')!;
    assert.ok(!JSON.stringify(node).includes('ceph'), 'the node plugin never gets it');
    assert.ok(!JSON.stringify(pods(rendered.libvirt)).includes('ceph-identity'), 'off by default');
    await assert.rejects(render(['backend=libvirt', 'libvirt.ceph.identitySecret=vpool-ceph']), /libvirt.ceph.user is required/);
    await assert.rejects(render(['backend=libvirt', 'libvirt.ceph.identitySecret=vpool-ceph', 'libvirt.ceph.user=client.admin']), /user/);
  });

  it('VolumePools are built by default on file and lvm nodes, served only when named, off when disabled', async () => {
    const args = (objects: K8sObject[]) => pods(objects).find((p) => p.owner.kind === 'DaemonSet')!.spec.containers[0].args ?? [];
    const mounts = (objects: K8sObject[]) => (pods(objects).find((p) => p.owner.kind === 'DaemonSet')!.spec as unknown as { volumes: { hostPath?: { path: string } }[] }).volumes.map((v) => v.hostPath?.path);
    for (const v of ['lvm', 'file (defaults)']) {
      assert.ok(args(rendered[v]).includes('--volume-pools=auto'), v);
      assert.ok(!args(rendered[v]).some((a) => a.startsWith('--pool-from-cluster')), `${v}: serving one is a separate choice`);
      assert.ok(mounts(rendered[v]).includes('/var/lib/vpool-csi/pools') && mounts(rendered[v]).includes('/run/lvm'), `${v}: either kind of VolumePool can be built`);
    }
    assert.ok(!args(rendered.libvirt).some((a) => a.startsWith('--volume-pools')), 'libvirt nodes build no pools');
    assert.ok(args(await render(['volumePool.enabled=false'])).includes('--volume-pools=off'));
  });

  it('helm test: a claim of the backend\'s first class, a non-root pod that checks and grows it, RBAC for that claim alone', async () => {
    for (const [v, sets] of [['file', []], ['lvm', ['backend=lvm']], ['libvirt', ['backend=libvirt']]] as const) {
      const objects = await render([...sets]);
      const hooks = objects.filter((o) => o.metadata.annotations?.['helm.sh/hook'] === 'test');
      assert.deepEqual(hooks.map((o) => o.kind).sort(), ['PersistentVolumeClaim', 'Pod', 'Role', 'RoleBinding', 'ServiceAccount'], v);
      for (const h of hooks) assert.equal(h.metadata.annotations?.['helm.sh/hook-delete-policy'], 'before-hook-creation,hook-succeeded');
      const pvc = hooks.find((o) => o.kind === 'PersistentVolumeClaim')!;
      const firstClass = byKind(objects, 'StorageClass')[0].metadata.name;
      assert.equal((pvc.spec as { storageClassName: string }).storageClassName, firstClass, `${v}: the claim uses ${firstClass}`);
      const pod = hooks.find((o) => o.kind === 'Pod')! as unknown as { spec: PodSpec & { serviceAccountName: string; volumes: { persistentVolumeClaim?: { claimName: string } }[] } };
      const c = pod.spec.containers[0];
      assert.equal(c.args?.[0], 'check-volume');
      assert.ok(c.args?.includes('--grow-to=2Gi') && c.args.includes(`--claim=${pvc.metadata.name}`));
      assert.equal(pod.spec.securityContext?.runAsNonRoot, true);
      assert.equal(c.securityContext?.readOnlyRootFilesystem, true);
      assert.equal(pod.spec.volumes[0].persistentVolumeClaim?.claimName, pvc.metadata.name);
      const role = hooks.find((o) => o.kind === 'Role') as unknown as { rules: { resources: string[]; resourceNames: string[]; verbs: string[] }[] };
      assert.deepEqual(role.rules, [{ apiGroups: [''], resources: ['persistentvolumeclaims'], resourceNames: [pvc.metadata.name], verbs: ['get', 'update'] }]);
      validateAll(objects);
    }
    const { stdout } = await execFileP(BIN, ['check-volume', '--help']);
    for (const flag of ['--path', '--claim', '--grow-to', '--timeout']) assert.ok(stdout.includes(flag), flag);
    assert.equal((await render(['test.enabled=false'])).filter((o) => o.metadata.annotations?.['helm.sh/hook']).length, 0);
  });

  it('the chart\'s default image is the one make image builds', async () => {
    const { stdout } = await execFileP('make', ['-s', '-n', 'image'], { cwd: path.dirname(path.dirname(CHART)) });
    const built = /-t (\S+) \./.exec(stdout)?.[1];
    assert.ok(built, stdout);
    for (const [name, objects] of Object.entries(rendered)) {
      if (name.includes('everything on')) continue; // sets image.tag
      for (const c of pods(objects).flatMap((p) => p.spec.containers).filter((x) => x.name === 'driver')) assert.equal((c as { image?: string }).image, built, name);
    }
  });

  it('every flag the chart passes to the driver is one the binary knows', async () => {
    const { stdout } = await execFileP(BIN, ['serve', '--help']);
    for (const [name, objects] of Object.entries(rendered)) {
      for (const c of pods(objects).flatMap((p) => p.spec.containers).filter((x) => x.name === 'driver')) {
        assert.equal(c.args?.[0], 'serve');
        for (const arg of c.args!.slice(1)) {
          const flag = arg.split('=')[0];
          assert.ok(stdout.includes(`${flag} `) || stdout.includes(`${flag}\n`), `${name}: ${flag} is a flag of vpool-csi serve`);
        }
      }
    }
  });

  it('the transfer (file and lvm nodes): listener at the pod IP, peers from the cluster, certificates from the transfer signer (nothing of the trust rendered), a NetworkPolicy', async () => {
    type Env = { name: string; valueFrom?: { fieldRef?: { fieldPath: string } } };
    type Port = { name: string; containerPort: number };
    type Vol = { name: string; secret?: { secretName: string } };
    type Rule = { apiGroups: string[]; resources: string[]; resourceNames?: string[]; verbs: string[] };
    const node = (objects: K8sObject[]) => byKind(objects, 'DaemonSet')[0] as K8sObject & { spec: { template: { metadata: { annotations?: Record<string, string> }; spec: { containers: Array<Container & { env?: Env[]; ports?: Port[] }>; volumes: Vol[] } } } };
    const driver = (objects: K8sObject[]) => node(objects).spec.template.spec.containers.find((c) => c.name === 'driver')!;
    const rules = (objects: K8sObject[], kind: string, name: string) => ((byKind(objects, kind).find((o) => o.metadata?.name === name)?.rules ?? []) as Rule[]);
    const podsVerbs = (objects: K8sObject[]) => rules(objects, 'Role', 'vpool-csi-node-capacity').find((r) => r.resources.includes('pods'))?.verbs ?? [];
    const signer = (objects: K8sObject[]) => byKind(objects, 'Deployment').find((o) => o.metadata?.name === 'vpool-csi-transfer-signer') as (K8sObject & { spec: { replicas: number; template: { spec: { serviceAccountName: string; containers: Container[] } } } }) | undefined;
    const { stdout: signerHelp } = await execFileP(BIN, ['transfer-signer', '--help']);

    for (const name of ['file (defaults)', 'lvm']) {
      const objects = rendered[name];
      const d = driver(objects);
      const selector = 'app.kubernetes.io/name=vpool-csi,app.kubernetes.io/instance=vpool-csi,app.kubernetes.io/component=node';
      assert.ok(d.args!.includes('--transfer-listen=$(POD_IP):9810'), name);
      assert.ok(d.args!.includes(`--transfer-peers-from-cluster=${selector}`));
      assert.ok(d.args!.includes('--transfer-trust-configmap=vpool-csi-transfer-trust') && d.args!.includes('--transfer-signer-name=vpool.dev/transfer'));
      assert.ok(!d.args!.some((a) => a.startsWith('--transfer-tls-dir')), 'no key is mounted: it is made in the pod');
      for (const a of ['--transfer-max-sends=4', '--transfer-timeout=6h', '--transfer-stall-timeout=60s']) assert.ok(d.args!.includes(a), `${name}: ${a}`);
      // The selector is the DaemonSet's own pods' labels.
      const labels = (node(objects).spec as unknown as { selector: { matchLabels: Record<string, string> } }).selector.matchLabels;
      assert.deepEqual(labels, { 'app.kubernetes.io/name': 'vpool-csi', 'app.kubernetes.io/instance': 'vpool-csi', 'app.kubernetes.io/component': 'node' });
      assert.deepEqual(d.env!.filter((e) => e.name === 'POD_IP' || e.name === 'POD_NAMESPACE').map((e) => e.valueFrom?.fieldRef?.fieldPath), ['status.podIP', 'metadata.namespace']);
      assert.deepEqual(d.ports!.find((p) => p.name === 'transfer')?.containerPort, 9810);
      // Nothing of the trust in the render: no Secret, no key, no annotation that changes each time.
      assert.equal(byKind(objects, 'Secret').filter((o) => o.metadata?.name?.includes('transfer')).length, 0);
      assert.equal(node(objects).spec.template.metadata.annotations?.['vpool.dev/transfer-tls-generation'], undefined);
      assert.ok(!node(objects).spec.template.spec.volumes.some((v) => v.name.includes('transfer')));
      // The signer: one replica, its own ServiceAccount, every flag one the binary knows; the node may ask for certificates and read claims.
      const sg = signer(objects)!;
      assert.equal(sg.spec.replicas, 1);
      assert.equal(sg.spec.template.spec.serviceAccountName, 'vpool-csi-transfer-signer');
      // Least privilege: non-root, read-only root, no capabilities, limits.
      const sgc = sg.spec.template.spec.containers[0] as Container & { securityContext?: { readOnlyRootFilesystem?: boolean; allowPrivilegeEscalation?: boolean; capabilities?: { drop?: string[] } }; resources?: { limits?: Record<string, string> } };
      assert.equal((sg.spec.template.spec as unknown as { securityContext: { runAsNonRoot: boolean } }).securityContext.runAsNonRoot, true);
      assert.deepEqual([sgc.securityContext?.readOnlyRootFilesystem, sgc.securityContext?.allowPrivilegeEscalation, sgc.securityContext?.capabilities?.drop], [true, false, ['ALL']]);
      assert.ok(sgc.resources?.limits?.cpu && sgc.resources.limits.memory, 'the signer has cpu and memory limits');
      const sargs = sg.spec.template.spec.containers[0].args!;
      assert.equal(sargs[0], 'transfer-signer');
      for (const arg of sargs.slice(1)) assert.ok(signerHelp.includes(`${arg.split('=')[0]} `), `${arg} is a flag of transfer-signer`);
      assert.ok(sargs.includes(`--node-selector=${selector}`) && sargs.includes('--node-service-account=vpool-csi-node') && sargs.includes('--ca-secret=vpool-csi-transfer-ca'));
      assert.deepEqual(rules(objects, 'ClusterRole', 'vpool-csi-transfer-signer').find((r) => r.resources.includes('signers')), { apiGroups: ['certificates.k8s.io'], resources: ['signers'], resourceNames: ['vpool.dev/transfer'], verbs: ['approve', 'sign'] });
      assert.ok(rules(objects, 'ClusterRole', 'vpool-csi-node').some((r) => r.resources.includes('certificatesigningrequests') && r.verbs.includes('create')));
      assert.ok(!rules(objects, 'ClusterRole', 'vpool-csi-node').some((r) => r.resources.includes('signers') || r.resources.some((x) => x.startsWith('certificatesigningrequests/'))), 'a node cannot approve or sign');
      assert.ok(!rules(objects, 'Role', 'vpool-csi-node-capacity').some((r) => r.resources.includes('secrets')), 'a node cannot read the CA');
      const policy = byKind(objects, 'NetworkPolicy')[0] as K8sObject & { spec: { ingress: Array<{ from?: unknown[]; ports: Array<{ port: number }> }> } };
      assert.ok(policy, 'a NetworkPolicy');
      assert.deepEqual(policy.spec.ingress[0].ports.map((p) => p.port), [9810]);
      assert.ok(policy.spec.ingress[0].from?.length, 'the transfer port only from the node pods');
      assert.deepEqual(policy.spec.ingress[1].ports.map((p) => p.port).sort(), [9808, 9809], 'metrics and health as open as before');
      assert.deepEqual(podsVerbs(objects), ['get', 'list']);
    }
    const own = rendered['file, transfer with its own Secret, no NetworkPolicy, a rate and bounds'];
    assert.equal(byKind(own, 'Secret').length, 0);
    assert.equal(byKind(own, 'NetworkPolicy').length, 0);
    const ownArgs = signer(own)!.spec.template.spec.containers[0].args!;
    assert.ok(ownArgs.includes('--ca-secret=my-tls') && ownArgs.includes('--user-ca'), 'the user\'s CA, only read');
    assert.deepEqual(rules(own, 'Role', 'vpool-csi-transfer-signer').filter((r) => r.resources.includes('secrets')), [{ apiGroups: [''], resources: ['secrets'], resourceNames: ['my-tls'], verbs: ['get'] }]);
    assert.ok(driver(own).args!.includes('--transfer-rate=100Mi'));
    for (const a of ['--transfer-max-sends=2', '--transfer-timeout=2h', '--transfer-stall-timeout=30s']) assert.ok(driver(own).args!.includes(a), a);
    for (const name of ['file without the transfer', 'libvirt']) {
      assert.ok(!driver(rendered[name]).args!.some((a) => a.startsWith('--transfer')), name);
      assert.equal(byKind(rendered[name], 'NetworkPolicy').length, 0, name);
      assert.equal(signer(rendered[name]), undefined, name);
    }
    assert.deepEqual(podsVerbs(rendered['file without the transfer']), ['get']);
  });

  it('helm template twice with the same values renders the same bytes (an upgrade with unchanged values changes nothing)', async () => {
    for (const sets of [[], ['backend=lvm', 'volumePool.name=fast'], ['transfer.tls.existingSecret=my-ca']]) {
      const args = ['template', 'vpool-csi', CHART, '--namespace', 'vpool-csi', '--include-crds', ...sets.flatMap((x) => ['--set', x])];
      const [one, two] = await Promise.all([execFileP(HELM, args), execFileP(HELM, args)]);
      assert.equal(one.stdout, two.stdout, sets.join(' '));
      assert.doesNotMatch(one.stdout, /PRIVATE KEY|BEGIN CERTIFICATE/, 'no key or certificate in the render');
    }
  });

  it('values.schema.json refuses bad values', async () => {
    const fails = async (...sets: string[]) => {
      const err = await render(sets).then(() => null, (e: { stderr: string }) => e.stderr);
      assert.ok(err, `${sets.join(' ')} must be refused`);
      return err;
    };
    assert.match(await fails('backend=nfs'), /backend must be one of the following: "file", "lvm", "libvirt"/);
    assert.match(await fails('controller.replicas=two'), /controller.replicas: Invalid type. Expected: integer, given: string/);
    assert.match(await fails('nope=1'), /Additional property nope is not allowed/);
    assert.match(await fails('libvirt.diskCache=fast'), /libvirt.diskCache/);
    assert.match(await fails('node.extraArgs[0]=rm -rf'), /node.extraArgs.0/);
    assert.match(await fails('orphans.deleteAfter=soon'), /orphans.deleteAfter/);
    assert.match(await fails('transfer.port=0'), /transfer.port/);
    assert.match(await fails('transfer.rate=fast'), /transfer.rate/);
    assert.match(await fails('transfer.maxSends=0'), /transfer.maxSends/);
    assert.match(await fails('transfer.timeout=forever'), /transfer.timeout/);
    assert.match(await fails('volumePool.name=Bad_Name'), /volumePool.name/);
  });
});
