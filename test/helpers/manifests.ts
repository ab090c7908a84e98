import { execFile } from 'node:child_process';
import path from 'node:path';
import { promisify } from 'node:util';
import * as k8s from '@kubernetes/client-node';
import { parseAllDocuments } from 'yaml';
import { PROJECT_ROOT } from '../../src/csi/proto.js';

const execFileP = promisify(execFile);
export const HELM = path.join(PROJECT_ROOT, '.tools', 'bin', 'helm');
export const CHART = path.join(PROJECT_ROOT, 'charts', 'vpool-csi');

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [key: string]: unknown;
}

/** `helm template` of the chart with these --set flags; resolves with the objects, or rejects with helm's error. */
export async function render(sets: string[] = [], namespace = 'vpool-csi', valueFiles: string[] = [], extra: string[] = []): Promise<K8sObject[]> {
  const args = ['template', 'vpool-csi', CHART, '--include-crds', '--namespace', namespace, ...valueFiles.flatMap((f) => ['-f', f]), ...sets.flatMap((s) => ['--set', s]), ...extra];
  const { stdout } = await execFileP(HELM, args, { maxBuffer: 32 * 1024 * 1024, timeout: 120_000, killSignal: 'SIGKILL' });
  return parseObjects(stdout);
}

export function parseObjects(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((d) => d.toJS() as K8sObject | null)
    .filter((o): o is K8sObject => o !== null);
}

type TypeMap = { baseName: string; type: string }[];
type Model = { getAttributeTypeMap?: () => TypeMap };

/**
 * Fields the Kubernetes API does not define, found by walking the object against the generated
 * models of @kubernetes/client-node (kubernetes-models' validate() accepts unknown fields).
 */
export function unknownFields(value: unknown, type: string, at: string, out: string[] = []): string[] {
  if (value === null || value === undefined) return out;
  const array = /^Array<(.+)>$/.exec(type);
  if (array) {
    if (Array.isArray(value)) value.forEach((v, i) => unknownFields(v, array[1], `${at}[${i}]`, out));
    return out;
  }
  const map = /^\{ \[key: string\]: (.+); \}$/.exec(type);
  if (map) {
    for (const [k, v] of Object.entries(value as Record<string, unknown>)) unknownFields(v, map[1], `${at}.${k}`, out);
    return out;
  }
  const model = (k8s as unknown as Record<string, Model>)[type];
  if (!model?.getAttributeTypeMap || typeof value !== 'object') return out;
  const fields = model.getAttributeTypeMap();
  for (const [k, v] of Object.entries(value as Record<string, unknown>)) {
    const f = fields.find((x) => x.baseName === k);
    if (!f) out.push(`${at}.${k}`);
    else unknownFields(v, f.type, `${at}.${k}`, out);
  }
  return out;
}

/** The client-node model name of a built-in kind (V1DaemonSet, V1ClusterRole, ...), or null for a custom resource. */
export function modelOf(o: K8sObject): string | null {
  const [group, version] = o.apiVersion.includes('/') ? o.apiVersion.split('/') : ['', o.apiVersion];
  const builtIn = ['', 'apps', 'rbac.authorization.k8s.io', 'storage.k8s.io', 'policy', 'coordination.k8s.io', 'apiextensions.k8s.io'];
  if (!builtIn.includes(group)) return null;
  const name = `${version.charAt(0).toUpperCase()}${version.slice(1)}${o.kind}`;
  return (k8s as unknown as Record<string, Model>)[name]?.getAttributeTypeMap ? name : null;
}
