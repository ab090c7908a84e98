import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { blockCap } from './csi.js';
import { BIN, finish, launchDriver, startDriver, tempDir, type Driver } from './driver.js';
import { BUILTIN_TYPES, CLAIM_TYPE, CONFIGMAP_TYPE, CSR_TYPE, DAEMONSET_TYPE, FakeApiServer, POD_TYPE, SECRET_TYPE, SNAPSHOT_CONTENT_TYPE, SNAPSHOT_TYPE } from './fake-apiserver.js';
import { pollUntil } from './libvirt.js';
import { twoHosts, type TwoHosts } from './netns.js';

export const NAMESPACE = 'vpool';
export const DRIVER = 'vpool.csi.dev';
export const NODE_SELECTOR = 'app.kubernetes.io/name=vpool-csi,app.kubernetes.io/component=node';
const NODE_SA = 'vpool-csi-node';
// The chart's pod labels (release vpool-csi), so that the selectors it renders pick these pods.
const LABELS = { 'app.kubernetes.io/name': 'vpool-csi', 'app.kubernetes.io/instance': 'vpool-csi', 'app.kubernetes.io/component': 'node' };

/**
 * Two node plugins, each in its own network namespace (a veth pair between them) and with its own
 * file pool, in a cluster modelled by the FAKE API server (none can run here): each plugin's pod
 * (name, UID, node, IP), a bound ServiceAccount token per pod (the API server records its pod and node
 * on every CertificateSigningRequest it makes, and stops taking it once the pod is gone), and the
 * real `vpool-csi transfer-signer` issuing their certificates. B takes from A what a CreateVolume on
 * B names for a claim of B's and B's pool lacks; `restore` makes the claim and its data source as the
 * provisioner and the snapshot controller would leave them. Every cross-node test starts here.
 */
export interface TransferNodes {
  hosts: TwoHosts;
  api: FakeApiServer;
  a: Driver;
  b: Driver;
  /** A's listener, host:port. */
  listen: string;
  /** The kubeconfig of each plugin's pod (its own token). */
  kubeconfigs: { a: string; b: string; signer: string };
  signer: { proc: ChildProcess; logs: string[] };
  /** Restarts A (same pool), with extra flags; a new pod (new UID) unless `samePod`. */
  restartA(extra?: string[]): Promise<Driver>;
  restartB(extra?: string[]): Promise<Driver>;
  /** The plugins of `more`, by node name. */
  others: Map<string, Driver>;
  /**
   * A directory with ca.crt (the trust bundle), tls.crt and tls.key: a credential the signer issued
   * for `node`'s current pod (asked with that pod's token), for a FAKE standing in for that node.
   */
  credentialDir(node: string): Promise<string>;
  /** The same for any pod of the FAKE API with a token (`token-<pod>`): what the signer issues that pod; throws the reason when it denies. */
  credentialOfPod(podName: string, cn?: string): Promise<string>;
  /** The cluster objects naming a source: a bound VolumeSnapshot and its content, or a bound claim and its PV, on A's node. */
  source(source: Source, holder?: string): { kind: 'VolumeSnapshot' | 'PersistentVolumeClaim'; name: string };
  /** A pending claim selected onto `node` (B's by default) whose data source is `source`. */
  claim(name: string, source: Source, o?: { node?: string; holder?: string }): void;
  /** CreateVolume on B (or `on`) for claim `name` (made unless `claim: false`), whose content is A's snapshot or volume. */
  restore(name: string, source: Source, o?: { size?: number; on?: Driver; holder?: string; claim?: boolean; params?: Record<string, string>; anonymous?: boolean }): Promise<Volume>;
  /**
   * Starts `vpool-csi snapshot-router` as the controller's pod would run it (a pod of its own in the
   * FAKE API, with the controller's ServiceAccount and labels, its bound token), inside A's network
   * namespace (so its address is A's side of the link, the pod's IP), once its certificate is issued.
   * `args`: the container's args as a chart renders them (its --endpoint moved to a test socket, and a
   * kubeconfig added: the FAKE API is no in-cluster service); by default, the test's own flags.
   */
  startRouter(args?: string[]): Promise<Router>;
  /** A router pod in the FAKE API and its token, without a process (for credentials a test uses by hand). */
  routerPod(labels?: Record<string, string>): { name: string; token: string };
  /** Stops both and the signer and removes what was made; returns anything left behind (loop devices, mounts). */
  remove(): Promise<string[]>;
}

export interface Router {
  pod: string;
  client: Driver['client'];
  logs: string[];
  socket: string;
  stop(): Promise<void>;
}

export const ROUTER_SELECTOR = 'app.kubernetes.io/name=vpool-csi,app.kubernetes.io/instance=vpool-csi,app.kubernetes.io/component=controller';
export const ROUTER_SA = 'vpool-csi-controller';
const ROUTER_LABELS = { 'app.kubernetes.io/name': 'vpool-csi', 'app.kubernetes.io/instance': 'vpool-csi', 'app.kubernetes.io/component': 'controller' };

export type Source = { snapshot?: string; volume?: string };
type Volume = NonNullable<Awaited<ReturnType<Driver['client']['createVolume']>>['volume']>;

export interface TransferNodesOptions {
  aArgs?: string[];
  bArgs?: string[];
  /** --transfer-stall-timeout of both (default 3s). */
  stallTimeout?: string;
  /** A's transfer port (9810). */
  port?: number;
  /** B's transfer port: B listens too when set. */
  bPort?: number;
  /** Extra flags of the transfer signer. */
  signerArgs?: string[];
  /** More plugins, each a node of its own (on A's side of the link or B's, listening on its own port when `port` is set). */
  more?: Array<{ node: string; side: 'a' | 'b'; port?: number; args?: string[] }>;
}

const hash = (s: string) => createHash('sha256').update(s).digest('hex').slice(0, 10);

export async function transferNodes(tag: string, o: TransferNodesOptions = {}): Promise<TransferNodes> {
  const hosts = await twoHosts(tag, { hostLink: true });
  const dir = await tempDir('vpool-cluster-');
  const api = await new FakeApiServer([...BUILTIN_TYPES, DAEMONSET_TYPE, POD_TYPE, CLAIM_TYPE, CONFIGMAP_TYPE, SECRET_TYPE, SNAPSHOT_TYPE, SNAPSHOT_CONTENT_TYPE, CSR_TYPE]).start('0.0.0.0');
  const port = o.port ?? 9810;
  const listen = `${hosts.a.addr}:${port}`;
  const apiPort = new URL(api.url).port;
  const kubeconfig = async (name: string, server: string, token: string) => {
    const file = path.join(dir, `kubeconfig-${name}`);
    await writeFile(file, JSON.stringify({ apiVersion: 'v1', kind: 'Config', clusters: [{ name: 'fake', cluster: { server: `http://${server}:${apiPort}`, 'insecure-skip-tls-verify': true } }], users: [{ name: 'u', user: { token } }], contexts: [{ name: 'c', context: { cluster: 'fake', user: 'u' } }], 'current-context': 'c' }));
    return file;
  };
  /** A node plugin pod and its bound token, as the kubelet would have them (a new pod, a new UID, a new token). */
  let generation = 0;
  const pod = (node: string, ip: string, listenPort?: number) => {
    const name = `vpool-csi-node-${node}-${++generation}`;
    const made = api.create('pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NAMESPACE, labels: LABELS }, spec: { nodeName: node, serviceAccountName: NODE_SA, containers: [{ name: 'driver', image: 'vpool-csi', ports: listenPort ? [{ name: 'transfer', containerPort: listenPort }] : [] }] } });
    api.updateStatus('pods', name, (p) => void (p.status = { phase: 'Running', podIP: ip, podIPs: [{ ip }] }), NAMESPACE);
    const token = `token-${name}`;
    api.identify(token, { username: `system:serviceaccount:${NAMESPACE}:${NODE_SA}`, groups: ['system:serviceaccounts', 'system:authenticated'], extra: { 'authentication.kubernetes.io/pod-name': [name], 'authentication.kubernetes.io/pod-uid': [made.metadata.uid!], 'authentication.kubernetes.io/node-name': [node] } });
    return { name, token };
  };
  api.identify('token-signer', { username: `system:serviceaccount:${NAMESPACE}:vpool-csi-transfer-signer`, groups: ['system:serviceaccounts', 'system:authenticated'] });
  const kubeconfigs = { a: '', b: '', signer: await kubeconfig('signer', '127.0.0.1', 'token-signer') };

  const signerLogs: string[] = [];
  const signerProc = spawn(BIN, ['transfer-signer', '--namespace', NAMESPACE, '--kubeconfig', kubeconfigs.signer, '--resync', '200ms', ...(o.signerArgs ?? [])], { stdio: ['ignore', 'pipe', 'pipe'] });
  for (const s of [signerProc.stdout, signerProc.stderr]) s.on('data', (d: Buffer) => signerLogs.push(...d.toString().split('\n').filter(Boolean)));

  const stall = ['--transfer-stall-timeout', o.stallTimeout ?? '3s'];
  const common = (kc: string) => ['--kubeconfig', kc, '--transfer-peers-from-cluster', NODE_SELECTOR, '--transfer-refresh', '1s', '--volume-pools', 'off', '--snapshot-import-interval', '0', ...stall];
  /** A plugin: its node, which side of the link, its listener (if any), its flags. */
  type Spec = { node: string; side: 'a' | 'b'; port?: number; args: string[] };
  const specs = new Map<string, Spec>([
    ['node-a', { node: 'node-a', side: 'a', port, args: o.aArgs ?? [] }],
    ['node-b', { node: 'node-b', side: 'b', port: o.bPort, args: o.bArgs ?? [] }],
    ...(o.more ?? []).map((m) => [m.node, { node: m.node, side: m.side, port: m.port, args: m.args ?? [] }] as const),
  ]);
  const start = async (node: string, extra: string[], dirOf?: string) => {
    const spec = specs.get(node)!;
    const onA = spec.side === 'a';
    const p = pod(node, onA ? hosts.a.addr : hosts.b.addr, spec.port);
    const kc = await kubeconfig(node, onA ? hosts.host!.fromA : hosts.host!.fromB, p.token);
    if (node === 'node-a' || node === 'node-b') kubeconfigs[node === 'node-a' ? 'a' : 'b'] = kc;
    const listenHere = spec.port ? ['--transfer-listen', `${onA ? hosts.a.addr : hosts.b.addr}:${spec.port}`] : [];
    const d = await startDriver({ dir: dirOf, nodeId: node, wrap: hosts.wrap(onA ? hosts.a.ns : hosts.b.ns), env: { POD_NAMESPACE: NAMESPACE }, args: [...common(kc), ...listenHere, ...spec.args, ...extra] });
    // Ready for transfers once its certificate is issued (and, with a listener, once that is up).
    const want = spec.port ? 'transfer listener ready' : 'transfer credential: certificate issued';
    // Generous: under QEMU's TCG emulation the transfer's code alone takes tens of seconds to load.
    await pollUntil(async () => (d.logs.some((l) => l.includes(want)) ? true : undefined), 300_000, async () => `${node} did not get its transfer certificate: ${d.logs.slice(-5).join('\n')}\nsigner: ${signerLogs.slice(-5).join('\n')}`);
    return d;
  };
  const nodeOf = (d: Driver) => (d === nodes.a ? 'node-a' : d === nodes.b ? 'node-b' : [...nodes.others].find(([, x]) => x === d)?.[0]);
  const stopPod = (node: string) => {
    // The old pod goes with its process: its token and certificate speak for no one any more.
    for (const x of api.list('pods', NAMESPACE)) if ((x.spec as { nodeName?: string }).nodeName === node) api.delete('pods', x.metadata.name, NAMESPACE);
  };

  let routers = 0;
  const routerProcs: Router[] = [];
  const routerPod = (labels: Record<string, string> = ROUTER_LABELS) => {
    const name = `vpool-csi-controller-${++routers}`;
    const made = api.create('pods', { apiVersion: 'v1', kind: 'Pod', metadata: { name, namespace: NAMESPACE, labels }, spec: { nodeName: 'node-c', serviceAccountName: ROUTER_SA, containers: [{ name: 'snapshot-router', image: 'vpool-csi' }] } });
    api.updateStatus('pods', name, (p) => void (p.status = { phase: 'Running', podIP: hosts.a.addr, podIPs: [{ ip: hosts.a.addr }] }), NAMESPACE);
    const token = `token-${name}`;
    api.identify(token, { username: `system:serviceaccount:${NAMESPACE}:${ROUTER_SA}`, groups: ['system:serviceaccounts', 'system:authenticated'], extra: { 'authentication.kubernetes.io/pod-name': [name], 'authentication.kubernetes.io/pod-uid': [made.metadata.uid!], 'authentication.kubernetes.io/node-name': ['node-c'] } });
    return { name, token };
  };

  // The node plugins' DaemonSet, as the DaemonSet controller reports it: one plugin wanted on each node.
  const ds = api.create('daemonsets', { apiVersion: 'apps/v1', kind: 'DaemonSet', metadata: { name: 'vpool-csi-node', namespace: NAMESPACE, labels: LABELS }, spec: { selector: { matchLabels: LABELS }, template: { metadata: { labels: LABELS }, spec: { containers: [] } } } });
  api.updateStatus('daemonsets', 'vpool-csi-node', (d) => void (d.status = { observedGeneration: ds.metadata.generation ?? 0, desiredNumberScheduled: specs.size, currentNumberScheduled: specs.size, numberReady: specs.size, numberMisscheduled: 0 }), NAMESPACE);

  const made = new Set<string>();
  const nodes: TransferNodes = {
    routerPod,
    async startRouter(args) {
      const p = routerPod();
      const kc = await kubeconfig(p.name, hosts.host!.fromA, p.token);
      const socket = path.join(dir, `${p.name}.sock`);
      const argv = args
        ? [...args.map((a) => (a.startsWith('--endpoint=') ? `--endpoint=unix://${socket}` : a)), '--kubeconfig', kc]
        : ['snapshot-router', '--endpoint', `unix://${socket}`, '--driver-name', DRIVER, '--kubeconfig', kc, '--node-selector', NODE_SELECTOR, '--refresh', '1s'];
      const launched = await launchDriver(socket, argv, { wrap: hosts.wrap(hosts.a.ns), env: { POD_NAMESPACE: NAMESPACE, POD_NAME: p.name } });
      await pollUntil(async () => (launched.logs.some((l) => l.includes('transfer credential: certificate issued')) ? true : undefined), 120_000, async () => `the router did not get its certificate: ${launched.logs.slice(-5).join('\n')}\nsigner: ${signerLogs.slice(-5).join('\n')}`);
      const r: Router = {
        pod: p.name,
        client: launched.client,
        logs: launched.logs,
        socket,
        async stop() {
          launched.client.close();
          if (launched.proc.exitCode === null) launched.proc.kill('SIGTERM');
          await launched.exited;
          // Its pod goes with it, as the Deployment's would.
          api.delete('pods', p.name, NAMESPACE);
        },
      };
      routerProcs.push(r);
      return r;
    },
    hosts,
    api,
    a: undefined as unknown as Driver,
    b: undefined as unknown as Driver,
    listen,
    kubeconfigs,
    signer: { proc: signerProc, logs: signerLogs },
    async restartA(extra = []) {
      if (nodes.a.proc.exitCode === null) await nodes.a.stop();
      stopPod('node-a');
      nodes.a = await start('node-a', extra, nodes.a.dir);
      return nodes.a;
    },
    async restartB(extra = []) {
      if (nodes.b.proc.exitCode === null) await nodes.b.stop();
      stopPod('node-b');
      nodes.b = await start('node-b', extra, nodes.b.dir);
      return nodes.b;
    },
    others: new Map(),
    async credentialDir(node) {
      const p = api.list('pods', NAMESPACE).find((x) => (x.spec as { nodeName?: string }).nodeName === node && x.metadata.name.startsWith('vpool-csi-node-'));
      if (!p) throw new Error(`no pod on ${node}`);
      return nodes.credentialOfPod(p.metadata.name, node);
    },
    async credentialOfPod(podName, cn = podName) {
      const { makeCsr, newKeyPair } = await import('../../src/transfer/pki.js');
      const key = await newKeyPair();
      const csr = `fake-${podName}-${Date.now()}`;
      const res = await fetch(`http://127.0.0.1:${apiPort}/apis/certificates.k8s.io/v1/certificatesigningrequests`, {
        method: 'POST',
        headers: { authorization: `Bearer token-${podName}`, 'content-type': 'application/json' },
        body: JSON.stringify({ metadata: { name: csr }, spec: { request: Buffer.from(await makeCsr(key, cn)).toString('base64'), signerName: 'vpool.dev/transfer', usages: ['digital signature', 'server auth', 'client auth'] } }),
      });
      if (res.status !== 201) throw new Error(`CSR for ${podName}: ${res.status} ${await res.text()}`);
      const cert = await pollUntil(async () => {
        const c = api.get('certificatesigningrequests', csr) as { status?: { certificate?: string; conditions?: Array<{ type: string; message?: string }> } } | undefined;
        const denied = c?.status?.conditions?.find((x) => x.type === 'Denied');
        if (denied) throw new Error(`the signer denied ${podName}'s request: ${denied.message}`);
        return c?.status?.certificate ? Buffer.from(c.status.certificate, 'base64').toString() : undefined;
      }, 60_000, async () => `the signer did not issue ${podName} a certificate`);
      const out = path.join(dir, `credential-${csr}`);
      await mkdir(out, { recursive: true });
      const trust = (api.get('configmaps', 'vpool-csi-transfer-trust', NAMESPACE) as unknown as { data: Record<string, string> }).data['ca.crt'];
      await writeFile(path.join(out, 'ca.crt'), trust);
      await writeFile(path.join(out, 'tls.crt'), cert);
      await writeFile(path.join(out, 'tls.key'), key.keyPem, { mode: 0o600 });
      return out;
    },
    source(source, holder = 'node-a') {
      if (source.snapshot) {
        const name = `snap-${hash(source.snapshot)}`;
        if (!made.has(name)) {
          made.add(name);
          const vs = api.create('volumesnapshots', { metadata: { name, namespace: NAMESPACE }, spec: { source: { persistentVolumeClaimName: 'whatever' } } });
          const content = `snapcontent-${hash(source.snapshot)}`;
          api.create('volumesnapshotcontents', { metadata: { name: content, labels: { 'snapshot.storage.kubernetes.io/managed-by': holder } }, spec: { driver: DRIVER, deletionPolicy: 'Delete', source: { volumeHandle: 'x' }, volumeSnapshotRef: { name, namespace: NAMESPACE, uid: vs.metadata.uid } } });
          api.updateStatus('volumesnapshotcontents', content, (c) => void (c.status = { snapshotHandle: source.snapshot, readyToUse: true }));
          api.updateStatus('volumesnapshots', name, (s) => void (s.status = { boundVolumeSnapshotContentName: content, readyToUse: true }), NAMESPACE);
        }
        return { kind: 'VolumeSnapshot', name };
      }
      const name = `src-${hash(source.volume!)}`;
      if (!made.has(name)) {
        made.add(name);
        const pv = `pv-${hash(source.volume!)}`;
        const pvc = api.create('persistentvolumeclaims', { metadata: { name, namespace: NAMESPACE }, spec: { accessModes: ['ReadWriteOnce'], volumeName: pv, resources: { requests: { storage: '1Gi' } } } });
        api.create('persistentvolumes', {
          metadata: { name: pv },
          spec: {
            csi: { driver: DRIVER, volumeHandle: source.volume },
            claimRef: { namespace: NAMESPACE, name, uid: pvc.metadata.uid },
            nodeAffinity: { required: { nodeSelectorTerms: [{ matchExpressions: [{ key: 'topology.vpool.dev/node', operator: 'In', values: [holder] }] }] } },
          },
        });
      }
      return { kind: 'PersistentVolumeClaim', name };
    },
    claim(name, source, co = {}) {
      const ref = nodes.source(source, co.holder);
      const dataSource = ref.kind === 'VolumeSnapshot' ? { apiGroup: 'snapshot.storage.k8s.io', kind: 'VolumeSnapshot', name: ref.name } : { kind: 'PersistentVolumeClaim', name: ref.name };
      if (api.get('persistentvolumeclaims', name, NAMESPACE)) api.delete('persistentvolumeclaims', name, NAMESPACE);
      api.create('persistentvolumeclaims', { metadata: { name, namespace: NAMESPACE, annotations: { 'volume.kubernetes.io/selected-node': co.node ?? 'node-b' } }, spec: { accessModes: ['ReadWriteOnce'], dataSource, dataSourceRef: dataSource, resources: { requests: { storage: '1Gi' } } } });
    },
    async restore(name, source, ro = {}) {
      const on = ro.on ?? nodes.b;
      if (ro.claim !== false) nodes.claim(name, source, { node: nodeOf(on), holder: ro.holder });
      const res = await on.client.createVolume({
        name,
        capacity_range: { required_bytes: String(ro.size ?? 64 * 1024 * 1024) },
        volume_capabilities: [blockCap()],
        // What external-provisioner adds with --extra-create-metadata (`anonymous`: a provisioner without it).
        parameters: { ...(ro.params ?? {}), ...(ro.anonymous ? {} : { 'csi.storage.k8s.io/pvc/name': name, 'csi.storage.k8s.io/pvc/namespace': NAMESPACE, 'csi.storage.k8s.io/pv/name': `pv-${name}` }) },
        volume_content_source: source.snapshot ? { snapshot: { snapshot_id: source.snapshot } } : { volume: { volume_id: source.volume! } },
      });
      return res.volume!;
    },
    async remove() {
      for (const r of routerProcs) await r.stop().catch(() => undefined);
      const left = [...(nodes.a ? await finish(nodes.a) : []), ...(nodes.b ? await finish(nodes.b) : [])];
      for (const d of nodes.others.values()) left.push(...(await finish(d)));
      signerProc.kill();
      await api.stop();
      await hosts.remove();
      await rm(dir, { recursive: true, force: true });
      return left;
    },
  };
  try {
    // Together, as a cluster starts its pods (under TCG one at a time takes minutes).
    const [a, b, ...more] = await Promise.all([start('node-a', []), start('node-b', []), ...(o.more ?? []).map((m) => start(m.node, []))]);
    Object.assign(nodes, { a, b });
    for (const [i, m] of (o.more ?? []).entries()) nodes.others.set(m.node, more[i]);
  } catch (err) {
    // Nothing outlives a failed start (a signer left running would keep the test process alive).
    await nodes.remove().catch(() => undefined);
    throw err;
  }
  return nodes;
}
