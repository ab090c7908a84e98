import { createHash } from 'node:crypto';
import type { FakeApiServer } from './fake-apiserver.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import path from 'node:path';
import { parse } from 'yaml';
import { connectCsi } from '../../src/csi/client.js';
import { BIN, FRESH_CHANNEL } from './driver.js';
import { CHART, type K8sObject } from './manifests.js';
import { podNetwork } from './pod-network.js';


interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; [other: string]: unknown };
}
interface HttpProbe {
  httpGet?: { path: string; port: number | string };
}
export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: EnvVar[];
  ports?: Array<{ name?: string; containerPort: number }>;
  volumeMounts?: Array<{ name: string; mountPath: string; subPath?: string }>;
  readinessProbe?: HttpProbe;
  livenessProbe?: HttpProbe;
}
interface Volume {
  name: string;
  hostPath?: { path: string; type?: string };
  emptyDir?: object;
  secret?: { secretName: string; defaultMode?: number; items?: Array<{ key: string; path: string }> };
  [other: string]: unknown;
}
export interface PodSpec {
  containers: Container[];
  volumes?: Volume[];
  serviceAccountName?: string;
  automountServiceAccountToken?: boolean;
}

/** A container of this project's image in a rendered workload. */
export interface DriverContainer {
  /** kind/name of the workload, and the container's name: how failures name it. */
  id: string;
  workload: K8sObject;
  pod: PodSpec;
  container: Container;
}

async function driverImage(): Promise<string> {
  const values = parse(await readFile(path.join(CHART, 'values.yaml'), 'utf8')) as { image: { repository: string } };
  return values.image.repository;
}

/**
 * Every container that runs this project's image in the workloads of a render (whatever they are
 * and however many: a new Deployment is found here, not listed by hand). Helm hooks are left out:
 * they run on `helm test` or around an install, not as the driver.
 */
export async function driverContainers(objects: K8sObject[]): Promise<DriverContainer[]> {
  const repo = await driverImage();
  const out: DriverContainer[] = [];
  for (const o of objects) {
    if (o.metadata.annotations?.['helm.sh/hook']) continue;
    const spec = o.spec as { template?: { spec: PodSpec }; jobTemplate?: { spec: { template: { spec: PodSpec } } } } & Partial<PodSpec>;
    const pod = o.kind === 'Pod' ? (spec as PodSpec) : (spec?.template?.spec ?? spec?.jobTemplate?.spec.template.spec);
    if (!pod?.containers) continue;
    for (const c of pod.containers) {
      if (c.image === repo || c.image.startsWith(`${repo}:`) || c.image.startsWith(`${repo}@`)) out.push({ id: `${o.kind}/${o.metadata.name}/${c.name}`, workload: o, pod, container: c });
    }
  }
  return out;
}

/** What the node and the cluster give a pod: the test's stand-ins for the kubelet's sources. */
export interface PodWorld {
  /** Holds this run's host directories, volumes and namespaces' files. */
  root: string;
  node: string;
  namespace: string;
  /** Secrets by name (data base64, as in the API): those the chart renders and those the user made. */
  secrets: Map<string, Record<string, string>>;
  /** The FAKE API server, as seen from this host. */
  apiServer: { host: string; port: number };
  /**
   * The same FAKE API server's store: each started pod is made there (its labels, node, service
   * account, IP, Running) with a bound token of its own, as the kubelet's projected token is (the API
   * server records the pod's name, UID and node for whoever uses it).
   */
  fake?: FakeApiServer;
}

/** How a process ended: by itself (code), or killed (signal: then Node's exitCode stays null). */
export interface Ended {
  code: number | null;
  signal: NodeJS.Signals | null;
  /** It never started. */
  spawnError?: string;
}

export const describeEnd = (e: Ended) => (e.spawnError ? `could not be started (${e.spawnError})` : e.signal ? `was killed by ${e.signal}` : `exited ${e.code}`);

/** A driver container running as its pod would. */
export interface RunningPod {
  id: string;
  /** The pod's own address (its network namespace). */
  podIp: string;
  args: string[];
  proc: ChildProcess;
  /** How it ended: an exit code, or the signal that killed it (a crash, the OOM killer). */
  exited: Promise<Ended>;
  stderr: () => string;
  /** The end of its log, without the probes' lines: what a failure shows. */
  tail: () => string;
  /** Where a path of the container is on this host. */
  hostPath(containerPath: string): string;
  /** Resolves when it is ready; with a refusal, when it says that reason instead. Rejects with its stderr if it exits. */
  ready(refusal?: RegExp, timeoutMs?: number): Promise<'ready' | string>;
  stop(): Promise<void>;
}

/**
 * Host paths under /var/lib (the kubelet's and the driver's own state) are moved under the test's
 * root, so runs never meet each other or a real node's state; other host paths (/dev, /run/lvm,
 * /etc/lvm/...) are the host's own, which this process shares anyway (its lvm commands read them).
 */
const hostSource = (root: string, p: string) => (p === '/var/lib' || p.startsWith('/var/lib/') ? path.join(root, 'host', p) : p);

/** The files of a volume, where the container's mount of it is on this host. */
async function volumeSource(world: PodWorld, podDir: string, v: Volume): Promise<string> {
  if (v.hostPath) {
    const p = hostSource(world.root, v.hostPath.path);
    if (p !== v.hostPath.path || v.hostPath.type === 'DirectoryOrCreate') await mkdir(p, { recursive: true });
    return p;
  }
  if (v.emptyDir) {
    const p = path.join(podDir, 'volumes', v.name);
    await mkdir(p, { recursive: true });
    return p;
  }
  if (v.secret) {
    const data = world.secrets.get(v.secret.secretName);
    if (!data) throw new Error(`volume ${v.name}: Secret ${v.secret.secretName} does not exist (the kubelet would not start the pod)`);
    const p = path.join(podDir, 'volumes', v.name);
    await mkdir(p, { recursive: true });
    const items = v.secret.items ?? Object.keys(data).map((key) => ({ key, path: key }));
    for (const item of items) {
      const file = path.join(p, item.path);
      await writeFile(file, Buffer.from(data[item.key] ?? '', 'base64'));
      await chmod(file, v.secret.defaultMode ?? 0o644);
    }
    return p;
  }
  // A volume kind this runner does not model would be silently missing: say so, so it gets modelled.
  throw new Error(`volume ${v.name}: ${Object.keys(v).filter((k) => k !== 'name').join(', ')} is not modelled by test/helpers/pod-runner.ts`);
}

/** The Downward API values a pod gets. */
function fieldValue(world: PodWorld, d: DriverContainer, podIp: string, fieldPath: string): string {
  const values: Record<string, string | undefined> = {
    'spec.nodeName': world.node,
    'status.podIP': podIp,
    'status.hostIP': podIp,
    'metadata.namespace': d.workload.metadata.namespace ?? world.namespace,
    'metadata.name': `${d.workload.metadata.name}-test`,
    'spec.serviceAccountName': d.pod.serviceAccountName ?? 'default',
  };
  const v = values[fieldPath];
  if (v === undefined) throw new Error(`${d.id}: env from ${fieldPath} is not modelled by test/helpers/pod-runner.ts`);
  return v;
}

/**
 * Starts the real binary with exactly a container's command, args and env, as the kubelet would:
 * in a network namespace of its own (POD_IP is its address there), `$(VAR)` expanded from its env,
 * the Kubernetes API reached through a kubeconfig (the service account's stand-in) pointing at the
 * FAKE API server, and every absolute path under one of its volume mounts moved to where that
 * volume is on this host (a process of the host cannot see the container's mount namespace: the
 * one thing changed in its argv, and only in paths).
 */
export async function startPod(world: PodWorld, d: DriverContainer): Promise<RunningPod> {
  const c = d.container;
  // Short: a socket under it must fit a unix socket path (107 bytes), as /csi/... does in the pod.
  const podDir = path.join(world.root, 'pods', createHash('sha256').update(d.id).digest('hex').slice(0, 10));
  await mkdir(podDir, { recursive: true });
  const network = await podNetwork(world.apiServer);
  try {
    const mounts: Array<[string, string]> = [];
    for (const m of c.volumeMounts ?? []) {
      const v = d.pod.volumes?.find((x) => x.name === m.name);
      if (!v) throw new Error(`${d.id}: mount ${m.name} names no volume`);
      const source = await volumeSource(world, podDir, v);
      mounts.push([m.mountPath, m.subPath ? path.join(source, m.subPath) : source]);
    }
    // Longest first: a mount inside another wins.
    mounts.sort((a, b) => b[0].length - a[0].length);
    const hostPath = (p: string) => {
      for (const [inside, outside] of mounts) if (p === inside || p.startsWith(inside + '/')) return outside + p.slice(inside.length);
      return p;
    };
    const vars: Record<string, string> = {};
    for (const e of c.env ?? []) {
      if (e.value !== undefined) vars[e.name] = e.value.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => vars[v] ?? m);
      else if (e.valueFrom?.fieldRef) vars[e.name] = fieldValue(world, d, network.podIp, e.valueFrom.fieldRef.fieldPath);
      else throw new Error(`${d.id}: env ${e.name} from ${JSON.stringify(e.valueFrom)} is not modelled by test/helpers/pod-runner.ts`);
    }
    let token = 'service-account-token';
    if (world.fake) {
      const name = `${d.workload.metadata.name}-test`;
      const ns = d.workload.metadata.namespace ?? world.namespace;
      const sa = d.pod.serviceAccountName ?? 'default';
      const template = (d.workload.spec as { template?: { metadata?: { labels?: Record<string, string> } } }).template;
      // A pod started again is a new pod (a new UID): the old one's token stops working.
      if (world.fake.get('pods', name, ns)) world.fake.delete('pods', name, ns);
      {
        const made = world.fake.create('pods', { metadata: { name, namespace: ns, labels: template?.metadata?.labels ?? {} }, spec: { nodeName: world.node, serviceAccountName: sa, containers: d.pod.containers } });
        world.fake.updateStatus('pods', name, (o) => void (o.status = { phase: 'Running', podIP: network.podIp, podIPs: [{ ip: network.podIp }] }), ns);
        token = `token-${name}`;
        world.fake.identify(token, { username: `system:serviceaccount:${ns}:${sa}`, groups: ['system:serviceaccounts', 'system:authenticated'], extra: { 'authentication.kubernetes.io/pod-name': [name], 'authentication.kubernetes.io/pod-uid': [made.metadata.uid!], 'authentication.kubernetes.io/node-name': [world.node] } });
      }
    }
    const kubeconfig = path.join(podDir, 'kubeconfig');
    await writeFile(kubeconfig, JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      // The fake speaks plain HTTP, which client-node allows only with verification off.
      clusters: [{ name: 'cluster', cluster: { server: network.apiUrl, 'insecure-skip-tls-verify': true } }],
      users: [{ name: d.pod.serviceAccountName ?? 'default', user: { token } }],
      contexts: [{ name: 'pod', context: { cluster: 'cluster', user: d.pod.serviceAccountName ?? 'default', namespace: world.namespace } }],
      'current-context': 'pod',
    }));
    const expand = (a: string) => {
      const s = a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => vars[v] ?? m);
      const m = /^(--[A-Za-z0-9-]+=)?(unix:\/\/)?(\/.*)$/.exec(s);
      return m ? `${m[1] ?? ''}${m[2] ?? ''}${hostPath(m[3])}` : s;
    };
    // The image's ENTRYPOINT is the launcher; a command may name it by path.
    const command = c.command ?? ['vpool-csi'];
    if (path.basename(command[0]) !== 'vpool-csi') throw new Error(`${d.id}: command ${command[0]} is not the driver's launcher`);
    const args = [...command.slice(1), ...(c.args ?? [])].map(expand);
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      ...Object.fromEntries(Object.entries(vars).map(([k, v]) => [k, v.startsWith('/') ? hostPath(v) : v])),
      // An automounted service account token is how a pod reaches the API; here, the kubeconfig.
      ...(d.pod.automountServiceAccountToken === false ? {} : { KUBECONFIG: kubeconfig }),
    };
    const endpoint = args.find((a) => a.startsWith('--endpoint='))?.slice('--endpoint='.length);
    const socket = endpoint?.replace(/^unix:\/\//, '');
    if (socket) await mkdir(path.dirname(socket), { recursive: true });
    const proc = spawn('ip', ['netns', 'exec', network.ns, BIN, ...args], { stdio: ['ignore', 'ignore', 'pipe'], env });
    let stderr = '';
    // A failure shows the end of the log: the start and the reason it stopped, not every probe.
    const tail = () => stderr.split('\n').filter((l) => !l.includes('"message":"rpc"') && !l.includes('probe: not ready')).slice(-40).join('\n');
    proc.stderr?.on('data', (b: Buffer) => (stderr += b.toString()));
    // Settled once, whenever it ends: a wait begun after the end still sees it (a late once('exit') would not).
    let ended: Ended | null = null;
    const exited = new Promise<Ended>((r) => {
      proc.once('exit', (code, signal) => r((ended ??= { code, signal })));
      // A spawn that fails (EAGAIN) emits no exit: it ends here, said, instead of as an uncaught error.
      proc.on('error', (err) => {
        if (proc.pid === undefined) r((ended ??= { code: null, signal: null, spawnError: String(err) }));
      });
    });
    const probe = httpProbe(c, network.podIp);
    const pod: RunningPod = {
      id: d.id,
      podIp: network.podIp,
      args,
      proc,
      exited,
      stderr: () => stderr,
      tail,
      hostPath,
      async ready(refusal, timeoutMs = 60_000) {
        const deadline = Date.now() + timeoutMs;
        let failure: string | undefined;
        for (;;) {
          if (ended) throw new Error(`${d.id} ${describeEnd(ended)} with ${JSON.stringify(args)}:\n${tail()}`);
          let reason: string | undefined;
          if (socket) {
            // Each Probe bounded, on a channel of its own: grpc-js backs a channel that failed to connect
            // (the socket not bound yet) off for longer each time, and a call without a deadline may wait for ever.
            const client = connectCsi(`unix://${socket}`, undefined, FRESH_CHANNEL);
            const r = await client.probe({}, { deadline: Date.now() + 10_000 }).catch((err: unknown) => {
              failure = String(err);
              return null;
            });
            client.close();
            if (r?.ready?.value) return 'ready';
            // Probe answers only ready or not; the driver logs why (src/csi/identity.ts).
            if (r) reason = lastProbeReason(stderr);
          } else if (probe) {
            const r = await probe();
            if (r.status === 200) return 'ready';
            reason = r.body;
          } else {
            throw new Error(`${d.id}: neither a CSI --endpoint nor an HTTP probe says when it is ready; teach test/helpers/pod-runner.ts`);
          }
          if (refusal && reason && refusal.test(reason)) return reason;
          if (Date.now() > deadline) throw new Error(`${d.id} not ready after ${timeoutMs} ms (last reason: ${reason ?? failure ?? 'none'}):\n${tail()}`);
          await Promise.race([exited, new Promise((r) => setTimeout(r, 100))]);
        }
      },
      async stop() {
        let stuck = false;
        if (!ended) {
          proc.kill('SIGTERM');
          const killer = setTimeout(() => proc.kill('SIGKILL'), 10_000);
          // A process stuck in the kernel (D state) outlives SIGKILL: said, not waited on for ever.
          let timer: NodeJS.Timeout | undefined;
          const late = new Promise<'stuck'>((r) => (timer = setTimeout(() => r('stuck'), 40_000)));
          stuck = (await Promise.race([exited, late])) === 'stuck';
          clearTimeout(timer);
          clearTimeout(killer);
        }
        // Let go of it whatever became of it, so this process can end: a subprocess the driver left (a
        // command under way when it was killed) may hold its stderr, and a stuck one its handle.
        proc.stderr?.destroy();
        proc.unref();
        await network.remove();
        if (stuck) throw new Error(`${d.id} (pid ${proc.pid}) did not end 30 s after SIGKILL:\n${tail()}`);
      },
    };
    return pod;
  } catch (err) {
    await network.remove();
    throw err;
  }
}

/** The reason of the driver's last "probe: not ready" log line (JSON lines on stderr). */
function lastProbeReason(stderr: string): string | undefined {
  let reason: string | undefined;
  for (const line of stderr.split('\n')) {
    if (!line.includes('probe: not ready')) continue;
    try {
      reason = (JSON.parse(line) as { reason?: string }).reason ?? reason;
    } catch {
      // A partly written line: the next probe logs it again.
    }
  }
  return reason;
}

/** The container's readiness (else liveness) HTTP probe, as the kubelet asks it. */
function httpProbe(c: Container, podIp: string): (() => Promise<{ status: number; body: string }>) | undefined {
  const get = (c.readinessProbe ?? c.livenessProbe)?.httpGet;
  if (!get) return undefined;
  const port = typeof get.port === 'number' ? get.port : c.ports?.find((p) => p.name === get.port)?.containerPort;
  if (!port) throw new Error(`container ${c.name}: probe port ${get.port} is not one of its ports`);
  return () =>
    new Promise((resolve) => {
      const req = http.get({ host: podIp, port, path: get.path, timeout: 5_000 }, (res) => {
        let body = '';
        res.on('data', (b: Buffer) => (body += b.toString()));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      });
      req.on('error', (e) => resolve({ status: 0, body: e.message }));
      req.on('timeout', () => req.destroy(new Error('timeout')));
    });
}

export async function removeWorld(world: PodWorld): Promise<void> {
  await rm(world.root, { recursive: true, force: true });
}
