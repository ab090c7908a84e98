import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { K8sObject } from './manifests.js';
import { launchDriver, type Launched } from './driver.js';

interface Container {
  name: string;
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}

/** A container of a rendered DaemonSet or Deployment. */
export function containerOf(objects: K8sObject[], kind: 'DaemonSet' | 'Deployment', container: string): Container {
  const workload = objects.find((o) => o.kind === kind);
  if (!workload) throw new Error(`the chart renders no ${kind}`);
  const c = (workload.spec as { template: { spec: { containers: Container[] } } }).template.spec.containers.find((x) => x.name === container);
  if (!c) throw new Error(`${kind}/${workload.metadata.name} has no container ${container}`);
  return c;
}

/** The value of `--flag=value` in a container's args. */
export function flag(c: Container, name: string): string | undefined {
  return c.args?.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3);
}

/**
 * Runs exactly the args the chart gives a driver container, as the kubelet would: `$(VAR)` expanded
 * from the environment, and each path under one of `mounts` (container mount path → test directory)
 * moved to where the test put that volume. Paths the test rendered into the chart itself
 * (kubeletDir, file.poolDir) are the same inside and out and need no mapping.
 */
export async function runContainer(c: Container, mounts: Record<string, string>, env: Record<string, string> = {}): Promise<Launched & { socket: string; args: string[] }> {
  const vars: Record<string, string> = { ...Object.fromEntries((c.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!])), ...env };
  const mapPath = (p: string) => {
    for (const [inside, outside] of Object.entries(mounts)) if (p === inside || p.startsWith(inside + '/')) return outside + p.slice(inside.length);
    return p;
  };
  const args = (c.args ?? []).map((a) => {
    const expanded = a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (m, v: string) => vars[v] ?? m);
    const m = /^(--[a-z-]+=)(unix:\/\/)?(\/.*)$/.exec(expanded);
    return m ? `${m[1]}${m[2] ?? ''}${mapPath(m[3])}` : expanded;
  });
  const endpoint = args.find((a) => a.startsWith('--endpoint='))?.slice('--endpoint='.length);
  if (!endpoint) throw new Error(`container ${c.name} has no --endpoint`);
  const socket = endpoint.replace(/^unix:\/\//, '');
  await mkdir(path.dirname(socket), { recursive: true });
  return { ...(await launchDriver(socket, args, { env: vars })), socket, args };
}
