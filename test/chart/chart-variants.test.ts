import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { connectCsi } from '../../src/csi/client.js';
import { idFor } from '../../src/ids.js';
import tls from 'node:tls';
import { makeCa as makeTransferCa } from '../../src/transfer/pki.js';
import { MiB, needsRoot } from '../helpers/driver.js';
import { CLAIM_TYPE, CONFIGMAP_TYPE, CSR_TYPE, POD_TYPE, SECRET_TYPE, SNAPSHOT_TYPE, type FakeApiServer, type KObject } from '../helpers/fake-apiserver.js';
import { startFakeCluster } from '../helpers/kube.js';
import { dirPool, LIBVIRT_ROOT, startLibvirt, URI, type TestPool } from '../helpers/libvirt.js';
import { rbdPool, startCeph, type TestCeph } from '../helpers/ceph.js';
import { forgetVg, loopDisks, poolCmd, uniqueVg, type LoopDisks } from '../helpers/lvm.js';
import { CHART, render, type K8sObject } from '../helpers/manifests.js';
import { describeEnd, driverContainers, removeWorld, startPod, type DriverContainer, type PodWorld, type RunningPod } from '../helpers/pod-runner.js';

const NAMESPACE = 'vpool-csi';
/** Bounds, so that a hang fails its step, names it and shows the pods' logs (instead of the file's 30-minute timeout). */
const READY_MS = 90_000;
const CALL_MS = 120_000;
const STEP_MS = 600_000;
const NODE = 'node-a';
const example = (file: string) => path.join(CHART, 'examples', file);
/** Only a VM has an SMBIOS system UUID: what a libvirt node plugin takes as its node ID. */
const IS_VM = existsSync('/sys/class/dmi/id/product_uuid');

/** What a container must do: be ready, or give this documented refusal (not ready with the reason, or exit with it). */
type Outcome = { ready: true } | { notReady: RegExp } | { exits: RegExp; because: string };

interface Variant {
  name: string;
  /** --set flags; a function when they name what the test made in before(). */
  sets?: string[] | (() => string[]);
  files?: string[];
  /** Secrets the user makes before installing, as the README says. */
  userSecrets?: () => Promise<Record<string, Record<string, string>>>;
  /** Default: every driver container is ready. */
  outcome?: (d: DriverContainer) => Outcome;
  /** What to check once every container reached its outcome. */
  then?: (pods: RunningPod[], world: PodWorld) => Promise<void>;
}

/**
 * A node plugin's transfer listener once its certificate is issued (the transfer signer of the same
 * render answered its request): it logged that it is ready, and a client without a certificate is
 * refused at the handshake (every read needs a node's credential and a claim: transfer-identity.test.ts).
 */
async function transferUp(pod: RunningPod): Promise<void> {
  const listen = pod.args.find((a) => a.startsWith('--transfer-listen='))!.slice('--transfer-listen='.length);
  const deadline = Date.now() + 60_000;
  while (!pod.stderr().includes('transfer listener ready')) {
    if (Date.now() > deadline) throw new Error(`${pod.id}: no transfer listener: ${pod.stderr().split('\n').filter((l) => l.includes('transfer')).slice(-5).join('\n')}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  const port = Number(listen.split(':').pop());
  const seen = await new Promise<'answered' | 'refused' | 'silent'>((resolve) => {
    const s = tls.connect({ host: pod.podIp, port, rejectUnauthorized: false, minVersion: 'TLSv1.3' }, () => {
      s.write('HEAD /v1/volumes/x HTTP/1.1\r\n\r\n');
    });
    // A listener that neither answers nor refuses is neither: said, not waited on for ever.
    s.setTimeout(15_000, () => {
      resolve('silent');
      s.destroy();
    });
    s.on('data', () => resolve('answered'));
    s.on('error', () => resolve('refused'));
    s.on('close', () => resolve('refused'));
  });
  assert.equal(seen, 'refused', `${pod.id}: a client without a certificate was not refused at the handshake`);
}

/** `p`, or a failure naming `what` once `ms` have passed (with what `diagnose` tells then): no step of a variant waits for ever. */
async function within<T>(ms: number, what: string, p: Promise<T>, diagnose: () => string = () => ''): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms / 1000} s\n${diagnose()}`)), ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

// Each rendered container of the driver's image runs the real binary with exactly its args and env
// (test/helpers/pod-runner.ts: a network namespace per pod, paths under its volume mounts moved to
// test directories, the FAKE API server through a kubeconfig). Sidecars are other images: not here.
describe('every chart variant starts: each driver container of the render runs until ready (or its documented refusal)', needsRoot(), () => {
  let fake: FakeApiServer;
  let disks: LoopDisks;
  let libvirtPool: TestPool;
  let ceph: TestCeph;
  let cephPool: TestPool;
  const vg = uniqueVg('vcv');
  let caDir: string;

  before(async () => {
    ({ fake } = await startFakeCluster());
    // The transfer: the driver's pods (peers, and who asks for a certificate), CSRs, the signer's Secret and ConfigMap, claims.
    for (const t of [POD_TYPE, CSR_TYPE, SECRET_TYPE, CONFIGMAP_TYPE, CLAIM_TYPE, SNAPSHOT_TYPE]) fake.addType(t);
    // The test's own requests (its kubeconfig) stay admitted once pods have tokens of their own.
    fake.identify('fake-token', { username: 'system:admin', groups: ['system:masters'] });
    fake.create('nodes', { metadata: { name: NODE, labels: { 'kubernetes.io/hostname': NODE, 'vpool.dev/storage': 'true' } } });
    disks = await loopDisks(1, 256 * MiB);
    const init = await poolCmd('init', '--vg', vg, disks.devices[0]);
    assert.equal(init.code, 0, init.stderr);
    await startLibvirt();
    libvirtPool = await dirPool('vpool-variants');
    // The rbd example on a real Ceph (test/ceph/ceph-start.sh) and an rbd pool of the tests' libvirtd, as docs/libvirt.md sets one up.
    ceph = await startCeph();
    cephPool = await rbdPool(ceph, 'vpool-variants-rbd');
    caDir = await mkdtemp('/var/tmp/vpool-variants-ca-');
  });
  after(async () => {
    // Each undone whatever another's failure: one left (a Ceph daemon, a loop device) would trip later files.
    const failed: unknown[] = [];
    for (const undo of [
      () => fake?.stop(),
      () => forgetVg(vg, disks?.devices ?? []),
      () => disks?.release(),
      () => libvirtPool?.remove(),
      () => cephPool?.remove(),
      () => ceph?.stop(),
      () => caDir && rm(caDir, { recursive: true, force: true }),
    ]) {
      try {
        await undo();
      } catch (err) {
        failed.push(err);
      }
    }
    if (failed.length > 0) throw new AggregateError(failed, 'cleaning up after the variants');
  });

  // The examples name hosts' resources (a VG, a hypervisor) that must exist before installing: here, the test's.
  const lvmHere = [`lvm.vg=${vg}`];
  const libvirtHere = () => [`libvirt.uri=${URI}`, `libvirt.pool=${libvirtPool.name}`];
  const libvirtCredentials = async () => ({ 'vpool-csi-libvirt': { id_ed25519: Buffer.from('unused with qemu:///system\n').toString('base64'), known_hosts: '' } });
  // A libvirt node plugin runs in a node VM: elsewhere it refuses to guess a node ID.
  const libvirtOutcome = (d: DriverContainer): Outcome =>
    d.workload.kind === 'DaemonSet' && !IS_VM ? { exits: /cannot read \/sys\/class\/dmi\/id\/product_uuid \(is this a VM\?\); pass --node-id/, because: 'this host is not a VM' } : { ready: true };

  const variants: Variant[] = [
    { name: 'defaults', then: async (pods) => transferUp(pods.find((p) => p.id.startsWith('DaemonSet/'))!) },
    { name: 'examples/values-file.yaml', files: [example('values-file.yaml')] },
    { name: 'examples/values-lvm.yaml', files: [example('values-lvm.yaml')], sets: lvmHere },
    { name: 'examples/values-libvirt.yaml', files: [example('values-libvirt.yaml')], sets: libvirtHere, userSecrets: libvirtCredentials, outcome: libvirtOutcome },
    {
      name: 'examples/values-libvirt-rbd.yaml',
      files: [example('values-libvirt-rbd.yaml')],
      sets: () => [`libvirt.uri=${URI}`, `libvirt.pool=${cephPool.name}`],
      userSecrets: libvirtCredentials,
      outcome: libvirtOutcome,
      // The rendered controller serves the rbd pool: a ReadWriteMany block volume is an image in Ceph, and goes.
      then: async (pods) => {
        const controller = pods.find((p) => p.id.startsWith('Deployment/') && p.args.some((a) => a.startsWith('--endpoint=')))!;
        const client = connectCsi(controller.args.find((a) => a.startsWith('--endpoint='))!.slice('--endpoint='.length));
        const deadline = () => ({ deadline: Date.now() + CALL_MS });
        const lifecycle = async () => {
          const vol = (await client.createVolume({ name: 'pvc-variant-rwx', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [{ block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' } }], parameters: { format: 'raw' } }, deadline())).volume!;
          assert.ok((await ceph.rbd('ls', 'rbd')).split('\n').some((i) => i.startsWith(`${vol.volume_id}.`)), 'an image in Ceph');
          await client.deleteVolume({ volume_id: vol.volume_id }, deadline());
          assert.deepEqual((await ceph.rbd('ls', 'rbd')).split('\n').filter(Boolean), []);
        };
        try {
          await lifecycle().catch(async (err: unknown) => {
            // What Ceph and libvirtd said meanwhile: the controller's log is in the step's failure already.
            const status = await within(20_000, 'ceph status', ceph.ceph('status')).catch((e: unknown) => String(e));
            const libvirtd = (await readFile(path.join(LIBVIRT_ROOT, 'log', 'libvirtd.log'), 'utf8').catch(() => '')).split('\n').slice(-30).join('\n');
            throw new Error(`${String(err)}\n--- ceph status:\n${status}\n--- libvirtd.log:\n${libvirtd}`, { cause: err });
          });
        } finally {
          client.close();
        }
      },
    },
    { name: 'backend=lvm', sets: ['backend=lvm', ...lvmHere] },
    { name: 'backend=libvirt', sets: () => ['backend=libvirt', ...libvirtHere()], userSecrets: libvirtCredentials, outcome: libvirtOutcome },
    { name: 'transfer.enabled=false', sets: ['transfer.enabled=false'] },
    {
      name: 'transfer.tls.existingSecret',
      sets: ['transfer.tls.existingSecret=my-transfer-ca'],
      // The user's CA (what cert-manager or openssl would make), created before installing.
      userSecrets: async () => {
        const ca = await makeTransferCa('user transfer CA', 86_400_000);
        return { 'my-transfer-ca': { 'tls.crt': Buffer.from(ca.certPem).toString('base64'), 'tls.key': Buffer.from(ca.keyPem).toString('base64') } };
      },
      then: async (pods) => {
        for (const p of pods.filter((x) => x.args.some((a) => a.startsWith('--transfer-listen=')))) await transferUp(p);
      },
    },
    {
      // Group snapshots on a file pool: the snapshot router in the controller, its certificate from the signer of the same
      // render (the controller's account and labels, POD_NAME from the pod), the node plugin taking its calls.
      name: 'groupSnapshots.enabled=true (file: the snapshot router)',
      sets: ['groupSnapshots.enabled=true'],
      then: async (pods) => {
        await transferUp(pods.find((p) => p.id.startsWith('DaemonSet/'))!);
        const router = pods.find((p) => p.id.endsWith('/snapshot-router'))!;
        assert.ok(router, 'the render runs the snapshot router');
        const deadline = Date.now() + 60_000;
        while (!router.stderr().includes('transfer credential: certificate issued')) {
          if (Date.now() > deadline) throw new Error(`the router got no certificate:\n${router.stderr().split('\n').slice(-8).join('\n')}`);
          await new Promise((r) => setTimeout(r, 100));
        }
        assert.ok(pods.find((p) => p.id.startsWith('DaemonSet/'))!.args.some((a) => a.startsWith('--transfer-router-from-cluster=')));
      },
    },
    { name: 'volumePool.name, transfer off', sets: ['volumePool.name=plain', 'transfer.enabled=false'], outcome: (d) => (d.workload.kind === 'DaemonSet' ? { notReady: /VolumePool plain does not exist/ } : { ready: true }) },
  ];

  async function outcome(pod: RunningPod, d: DriverContainer, want: Outcome): Promise<void> {
    if ('exits' in want) {
      // pod.exited settles however it ended, also before this wait began (killed: no exit code at all).
      const ended = await within(READY_MS, `${d.id} should exit (${want.because})`, pod.exited, pod.tail);
      assert.ok(ended.signal === null && ended.code !== null && ended.code !== 0, `${d.id} ${describeEnd(ended)} instead of refusing (${want.because}):\n${pod.tail()}`);
      assert.match(pod.stderr(), want.exits, `${d.id} (${want.because})`);
    } else if ('notReady' in want) {
      assert.match(await pod.ready(want.notReady, READY_MS), want.notReady, d.id);
    } else {
      assert.equal(await pod.ready(undefined, READY_MS), 'ready', d.id);
    }
  }

  /** Renders a variant and starts its driver containers; each must reach its outcome. */
  async function run(v: Variant, then?: (pods: RunningPod[], world: PodWorld) => Promise<void>): Promise<void> {
    const objects = await render(typeof v.sets === 'function' ? v.sets() : (v.sets ?? []), NAMESPACE, v.files ?? []);
    const containers = await driverContainers(objects);
    assert.ok(containers.length > 0, 'the render has no container of the driver image');
    const secretData = (o: K8sObject) => ({ ...(o.data as Record<string, string> | undefined), ...Object.fromEntries(Object.entries((o.stringData as Record<string, string> | undefined) ?? {}).map(([k, s]) => [k, Buffer.from(s).toString('base64')])) });
    const secrets = new Map(objects.filter((o) => o.kind === 'Secret').map((o) => [o.metadata.name, secretData(o)]));
    const made: string[] = [];
    for (const [name, data] of Object.entries((await v.userSecrets?.()) ?? {})) {
      secrets.set(name, data);
      // The user's Secret exists in the cluster too: a container may read it through the API (the transfer signer, its CA).
      if (!fake.get('secrets', name, NAMESPACE)) fake.create('secrets', { metadata: { name, namespace: NAMESPACE }, data });
      made.push(name);
    }
    const world: PodWorld = { root: await mkdtemp('/var/tmp/vpool-variant-'), node: NODE, namespace: NAMESPACE, secrets, apiServer: { host: '127.0.0.1', port: Number(new URL(fake.url).port) }, fake };
    const pods: RunningPod[] = [];
    let failed = false;
    try {
      const logs = () => pods.map((p) => `--- ${p.id} (${p.proc.exitCode ?? p.proc.signalCode ?? 'running'}):\n${p.tail()}`).join('\n');
      // Not raced against a bound: a start given up on could still spawn a pod nobody stops (each step of startPod is bounded).
      for (const d of containers) pods.push(await startPod(world, d));
      // Together, as a cluster starts them: each pod's outcome is its own.
      await within(STEP_MS, 'the containers reaching their outcomes', Promise.all(pods.map((pod, i) => outcome(pod, containers[i], v.outcome?.(containers[i]) ?? { ready: true }))), logs);
      const check = then ?? v.then;
      if (check) await within(STEP_MS, 'the checks of the running variant', check(pods, world), logs);
    } catch (err) {
      failed = true;
      throw err;
    } finally {
      // Stopped before anything else is undone, whatever failed: a pod left running would keep this file's process alive.
      const stopped = await Promise.allSettled(pods.map((p) => p.stop()));
      await removeWorld(world);
      for (const name of made) fake.delete('secrets', name, NAMESPACE);
      // The signer's own objects go with the release (helm uninstall leaves them; the next variant is a fresh install).
      for (const [plural, name] of [['secrets', 'vpool-csi-transfer-ca'], ['configmaps', 'vpool-csi-transfer-trust']] as const) if (fake.get(plural, name, NAMESPACE)) fake.delete(plural, name, NAMESPACE);
      const notStopped = stopped.flatMap((r) => (r.status === 'rejected' ? [r.reason as unknown] : []));
      // A pod that would not end fails the variant, unless it already failed (its error is the one to see).
      if (notStopped.length > 0 && !failed) throw new AggregateError(notStopped, 'pods that did not stop');
    }
  }

  for (const v of variants) it(v.name, () => run(v));

  it('volumePool.name with the transfer on: not ready until the VolumePool is built here, then it serves, its transfer listener serves the pool and its CreateVolume asks peers', async () => {
    await run({ name: 'volumePool.name', sets: ['volumePool.name=files'], outcome: (d) => (d.workload.kind === 'DaemonSet' ? { notReady: /VolumePool files does not exist/ } : { ready: true }) }, async (pods) => {
      const node = pods.find((p) => p.id.startsWith('DaemonSet/'))!;
      // Before the pool opens the listener is up (its certificate issued by the render's signer).
      await transferUp(node);
      // The driver opens spec.directory in its own view of the filesystem; this process's view of the
      // container's /var/lib/vpool-csi/pools (a hostPath) is the directory the runner mapped it to.
      const inside = '/var/lib/vpool-csi/pools/files';
      assert.notEqual(node.hostPath(inside), inside, 'the pools directory is a mount of the node plugin');
      fake.create('volumepools', { apiVersion: 'vpool.dev/v1alpha1', kind: 'VolumePool', metadata: { name: 'files' }, spec: { backend: 'file', directory: node.hostPath(inside) } } as KObject);
      assert.equal(await node.ready(), 'ready');

      const socket = node.args.find((a) => a.startsWith('--endpoint='))!.slice('--endpoint='.length);
      const client = connectCsi(socket);
      try {
        const deadline = () => ({ deadline: Date.now() + CALL_MS });
        const vol = (await client.createVolume({ name: 'pvc-variant', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }], parameters: {} }, deadline())).volume!;
        // A source this node lacks is asked of the peers: the transfer client is in the context made when the pool opened.
        const missing = idFor('vol', 'pvc-on-no-node');
        await assert.rejects(
          client.createVolume({ name: 'pvc-restored', capacity_range: { required_bytes: String(8 * MiB) }, volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }], parameters: {}, volume_content_source: { volume: { volume_id: missing } } }, deadline()),
          new RegExp(`source volume ${missing} is not on this node, and the request names no claim`),
        );
        await client.deleteVolume({ volume_id: vol.volume_id }, deadline());
      } finally {
        client.close();
      }
    });
  });
});
