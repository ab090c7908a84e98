import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { blockCap } from '../helpers/csi.js';
import { needsRoot, MiB } from '../helpers/driver.js';
import { containerOf, runContainer } from '../helpers/chart-process.js';
import { startFakeCluster } from '../helpers/kube.js';
import { render, type K8sObject } from '../helpers/manifests.js';
import { SNAPSHOT_METADATA_API_CALLS, snapshotMetadataArgs, snapshotMetadataStartup } from '../helpers/sidecars.js';
import type { FakeApiServer } from '../helpers/fake-apiserver.js';

const DRIVER = 'vpool.csi.dev';
const NS = 'vpool-csi';
const CA = '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n';

type Pod = {
  serviceAccountName: string;
  securityContext?: { fsGroup?: number };
  containers: Array<{ name: string; args?: string[]; ports?: Array<{ name?: string; containerPort: number }>; volumeMounts?: Array<{ name: string; mountPath: string }>; readinessProbe?: unknown; securityContext?: { runAsUser?: number; runAsGroup?: number } }>;
  volumes?: Array<{ name: string; secret?: { secretName: string; defaultMode?: number } }>;
};
const podOf = (objects: K8sObject[], kind: 'DaemonSet' | 'Deployment') => (objects.find((o) => o.kind === kind)!.spec as { template: { spec: Pod } }).template.spec;
const one = (objects: K8sObject[], kind: string, name?: string) => {
  const found = objects.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
  assert.equal(found.length, 1, `one ${kind}${name ? ` ${name}` : ''}`);
  return found[0]!;
};

// The external-snapshot-metadata sidecar as the chart renders it: its flags, ports, TLS, Service,
// SnapshotMetadataService and RBAC checked against what the sidecar (MODEL of v1.1.0, test/helpers/
// sidecars.ts) parses, asks and needs; and its start-up against the driver container the chart
// renders beside it (file pool; lvm's is shown in the QEMU VM, libvirt's by the controller tests).
describe('the chart\'s external-snapshot-metadata sidecar', needsRoot(), () => {
  let dir: string;
  let fake: FakeApiServer;
  let kubeconfig: string;
  before(async () => {
    dir = await mkdtemp('/var/tmp/vpool-smchart-');
    ({ fake, kubeconfig } = await startFakeCluster());
  });
  after(async () => {
    await fake.stop();
    await rm(dir, { recursive: true, force: true });
  });

  const sets = (backend: string, extra: string[] = []) => [`backend=${backend}`, 'snapshotMetadata.enabled=true', 'snapshotMetadata.tls.existingSecret=backup-tls', ...(backend === 'libvirt' ? ['libvirt.uri=qemu+tls://hv.example/system'] : []), ...extra];

  for (const backend of ['file', 'lvm', 'libvirt'] as const) {
    it(`${backend}: flags the sidecar parses, ports apart from the pod's others, the Service, the SnapshotMetadataService and RBAC for each API call it makes`, async () => {
      const caFile = path.join(dir, 'ca.pem');
      await writeFile(caFile, CA);
      const objects = await render(sets(backend), NS, [], ['--set-file', `snapshotMetadata.tls.caCert=${caFile}`]);
      const kind = backend === 'libvirt' ? 'Deployment' : 'DaemonSet';
      const pod = podOf(objects, kind);
      const sidecar = pod.containers.find((c) => c.name === 'csi-snapshot-metadata')!;
      assert.ok(sidecar, `the ${kind} runs the sidecar`);
      const other = kind === 'DaemonSet' ? 'Deployment' : 'DaemonSet';
      assert.ok(!podOf(objects, other).containers.some((c) => c.name === 'csi-snapshot-metadata'), `not the ${other}`);
      const f = snapshotMetadataArgs(sidecar.args ?? []);
      // Beside the driver container that serves the pool, on its socket.
      const driver = pod.containers.find((c) => c.name === 'driver')!;
      assert.equal(`unix://${f['csi-address']}`, driver.args!.find((a) => a.startsWith('--endpoint='))!.slice('--endpoint='.length));
      const mountOf = (c: Pod['containers'][number], at: string) => c.volumeMounts!.find((m) => at.startsWith(m.mountPath + '/'))?.name;
      assert.equal(mountOf(sidecar, f['csi-address']!), mountOf(driver, '/csi/csi.sock'), 'the same socket volume');
      // TLS from the Secret given.
      const tlsVolume = mountOf(sidecar, f['tls-cert']!);
      assert.equal(mountOf(sidecar, f['tls-key']!), tlsVolume);
      const secret = pod.volumes!.find((v) => v.name === tlsVolume)?.secret;
      assert.equal(secret?.secretName, 'backup-tls');
      // The kubelet writes a Secret's files owned by root (group: the pod's fsGroup, if any) with defaultMode: the
      // sidecar's user must be able to read them, or it exits at start (its certificate watcher reads the key).
      const mode = secret?.defaultMode ?? 0o644;
      const uid = sidecar.securityContext?.runAsUser;
      const readable = uid === 0 || (mode & 0o004) !== 0 || ((mode & 0o040) !== 0 && pod.securityContext?.fsGroup !== undefined && pod.securityContext.fsGroup === sidecar.securityContext?.runAsGroup);
      assert.ok(readable, `the TLS files (mode ${mode.toString(8)}) are readable by the sidecar's user ${uid}`);
      assert.equal(pod.containers.filter((c) => c.volumeMounts?.some((m) => m.name === tlsVolume)).map((c) => c.name).join(), 'csi-snapshot-metadata', 'only the sidecar mounts the key');
      // No readiness probe: it would hold a node pod not Ready, and the DaemonSet's rollout, while the pool is not served.
      assert.equal(sidecar.readinessProbe, undefined);
      assert.equal(f['disable-metrics'], 'true', 'no metrics naming VolumeSnapshots on an open port');
      // Its ports apart from every other port of the pod (hostNetwork: of the node too).
      const grpcPort = Number(f.port);
      const healthPort = Number(f['http-endpoint']!.split(':').pop());
      const others = pod.containers.filter((c) => c !== sidecar).flatMap((c) => [...(c.ports ?? []).map((p) => p.containerPort), ...(c.args ?? []).flatMap((a) => /^--(?:http-endpoint|metrics-address|transfer-listen)=.*:(\d+)$/.exec(a)?.[1] ?? []).map(Number)]);
      assert.ok(others.length >= 1);
      assert.deepEqual([grpcPort, healthPort].filter((p) => others.includes(p)), [], `ports ${grpcPort}, ${healthPort} apart from ${others.join(', ')}`);
      assert.notEqual(grpcPort, healthPort);
      assert.equal(sidecar.ports!.find((p) => p.name === 'snapshot-meta')?.containerPort, grpcPort);

      // The Service reaches the sidecar's port on the pods that run it; the SMS names it, the driver, the audience and the CA.
      const svc = one(objects, 'Service', 'vpool-csi-snapshot-metadata') as K8sObject & { spec: { selector: Record<string, string>; ports: Array<{ port: number; targetPort: string }> } };
      const labels = (objects.find((o) => o.kind === kind)!.spec as { template: { metadata: { labels: Record<string, string> } } }).template.metadata.labels;
      for (const [k, v] of Object.entries(svc.spec.selector)) assert.equal(labels[k], v, `the Service selects the ${kind}'s pods (${k})`);
      assert.equal(svc.spec.ports[0]!.targetPort, 'snapshot-meta');
      const sms = one(objects, 'SnapshotMetadataService') as K8sObject & { apiVersion: string; spec: { address: string; audience: string; caCert: string } };
      assert.equal(sms.apiVersion, 'cbt.storage.k8s.io/v1beta1');
      assert.equal(sms.metadata.name, DRIVER, 'named after the driver, as the sidecar and its clients look it up');
      assert.equal(sms.spec.address, `vpool-csi-snapshot-metadata.${NS}:${svc.spec.ports[0]!.port}`);
      assert.equal(sms.spec.audience, f.audience);
      assert.equal(Buffer.from(sms.spec.caCert, 'base64').toString(), CA);

      // RBAC: the pod's ServiceAccount may make every API call the sidecar makes.
      const rules = objects
        .filter((o) => o.kind === 'ClusterRoleBinding' && ((o as unknown as { subjects: Array<{ name: string; namespace: string }> }).subjects ?? []).some((s) => s.name === pod.serviceAccountName && s.namespace === NS))
        .flatMap((b) => (one(objects, 'ClusterRole', (b as unknown as { roleRef: { name: string } }).roleRef.name) as unknown as { rules: Array<{ apiGroups: string[]; resources: string[]; verbs: string[] }> }).rules);
      for (const [group, resource, verb] of SNAPSHOT_METADATA_API_CALLS) {
        assert.ok(rules.some((r) => r.apiGroups.includes(group) && r.resources.includes(resource) && r.verbs.includes(verb)), `${pod.serviceAccountName} may ${verb} ${resource}.${group}`);
      }
      assert.ok(!rules.some((r) => r.resources.includes('secrets') && r.apiGroups.includes('')), 'no secrets: the driver\'s classes name none');

      // Node-local: the transfer's NetworkPolicy lets backup tools reach the sidecar (its forwarding needs the transfer).
      if (backend !== 'libvirt') {
        const np = one(objects, 'NetworkPolicy') as unknown as { spec: { ingress: Array<{ from?: unknown[]; ports: Array<{ port: number }> }> } };
        assert.ok(np.spec.ingress.some((r) => !r.from && r.ports.some((p) => p.port === grpcPort)), 'the sidecar port is open to backup tools');
      }
    });
  }

  it('refuses to render without the TLS Secret and CA, or (file, lvm) without the transfer that forwards, saying what to give', async () => {
    await assert.rejects(render(['backend=file', 'snapshotMetadata.enabled=true'], NS), /snapshotMetadata\.tls\.existingSecret.*snapshotMetadata\.tls\.caCert/s);
    await assert.rejects(render([...sets('lvm'), 'snapshotMetadata.tls.caCert=x', 'transfer.enabled=false'], NS), /needs transfer\.enabled/);
    assert.ok((await render([...sets('libvirt'), 'snapshotMetadata.tls.caCert=x', 'transfer.enabled=false'], NS)).some((o) => o.kind === 'SnapshotMetadataService'), 'libvirt needs no transfer');
  });

  it('file: the sidecar\'s start-up against the node plugin container as rendered passes, and its calls are answered', async () => {
    const caFile = path.join(dir, 'ca.pem');
    await writeFile(caFile, CA);
    const kubelet = path.join(dir, 'kubelet');
    const pool = path.join(dir, 'pool');
    const objects = await render(sets('file', ['metrics.enabled=false', `kubeletDir=${kubelet}`, `file.poolDir=${pool}`]), NS, [], ['--set-file', `snapshotMetadata.tls.caCert=${caFile}`]);
    // The transfer's flags left out: its listener needs the pod IP and a certificate from the signer, which this
    // model of the kubelet does not make (test/e2e/snapshot-metadata-forward.test.ts runs it).
    const rendered = containerOf(objects, 'DaemonSet', 'driver');
    const node = await runContainer({ ...rendered, args: rendered.args!.filter((a) => !a.startsWith('--transfer-')) }, { '/csi': path.join(dir, 'plugin') }, { NODE_NAME: 'node-a', KUBECONFIG: kubeconfig });
    try {
      const model = await snapshotMetadataStartup(node.client, { probeDeadlineMs: 60_000 });
      assert.equal(model.driverName, DRIVER);
      assert.deepEqual(model.calls.filter((c) => c !== 'Probe'), ['GetPluginInfo', 'GetPluginCapabilities']);
      // What the sidecar then sends for a backup tool's GetMetadataAllocated: the content's handle.
      const vol = (await node.client.createVolume({ name: 'pvc-backup', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [blockCap()], parameters: {}, accessibility_requirements: { requisite: [{ segments: { 'topology.vpool.dev/node': 'node-a' } }], preferred: [] } })).volume!;
      await writeFile(path.join(pool, 'volumes', `${vol.volume_id}.img`), Buffer.alloc(64 * 1024, 7), { flag: 'r+' });
      const snap = (await node.client.createSnapshot({ name: 'snapshot-1', source_volume_id: vol.volume_id, parameters: {} })).snapshot!;
      const ms = await node.client.getMetadataAllocated({ snapshot_id: snap.snapshot_id, starting_offset: '0', max_results: 256 });
      assert.deepEqual(ms.flatMap((m) => m.block_metadata.map((b) => [Number(b.byte_offset), Number(b.size_bytes)])), [[0, 64 * 1024]]);
      await node.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
      await node.client.deleteVolume({ volume_id: vol.volume_id });
      assert.ok(!(await readFile(path.join(pool, 'volumes', `${vol.volume_id}.img`)).catch(() => null)));
    } finally {
      node.client.close();
      node.proc.kill('SIGTERM');
      assert.equal(await node.exited, 0);
    }
  });
});
