import { execFile } from 'node:child_process';

/**
 * The Kubernetes API through kubectl itself (`kubectl get --raw PATH`): whatever kubectl honours is
 * honoured (KUBECONFIG, --kubeconfig, --context, client certificates, exec credential plugins,
 * proxies), and the plugin needs no client library. Reads only.
 */
export interface ApiOptions {
  kubectl: string;
  kubeconfig?: string;
  context?: string;
  /** How long one read may take (kubectl's own --request-timeout). */
  timeoutSeconds: number;
}

export class ApiError extends Error {
  constructor(
    message: string,
    readonly notFound: boolean,
  ) {
    super(message);
  }
}

function kubectl(o: ApiOptions, args: string[]): Promise<string> {
  const globals = [...(o.kubeconfig ? ['--kubeconfig', o.kubeconfig] : []), ...(o.context ? ['--context', o.context] : []), `--request-timeout=${o.timeoutSeconds}s`];
  return new Promise((resolve, reject) => {
    execFile(o.kubectl, [...globals, ...args], { maxBuffer: 256 * 1024 * 1024, timeout: (o.timeoutSeconds + 5) * 1000 }, (err, stdout, stderr) => {
      if (!err) return resolve(stdout);
      const why = (stderr || err.message).trim().split('\n').pop() ?? '';
      const notFound = /NotFound|the server could not find the requested resource/i.test(stderr);
      reject(new ApiError(notFound ? `the Kubernetes API serves no ${args.at(-1)?.split('?')[0]}: ${why}` : `reading the Kubernetes API failed: ${why}`, notFound));
    });
  });
}

export interface Item {
  metadata: { name: string; namespace?: string; creationTimestamp?: string; labels?: Record<string, string> };
  [k: string]: unknown;
}

/** Every item of a list (all pages); an API the cluster does not serve (its CRD absent) is an empty list when `optional`. */
export async function list<T extends Item>(o: ApiOptions, path: string, optional = false): Promise<T[]> {
  const out: T[] = [];
  let cont = '';
  do {
    const sep = path.includes('?') ? '&' : '?';
    let body: string;
    try {
      body = await kubectl(o, ['get', '--raw', `${path}${sep}limit=500${cont ? `&continue=${encodeURIComponent(cont)}` : ''}`]);
    } catch (e) {
      if (optional && e instanceof ApiError && e.notFound) return [];
      throw e;
    }
    const page = JSON.parse(body) as { items?: T[]; metadata?: { continue?: string } };
    out.push(...(page.items ?? []));
    cont = page.metadata?.continue ?? '';
  } while (cont);
  return out;
}

/** The namespace of the current context (kubectl's default for -n), "default" when it names none. */
export async function currentNamespace(o: ApiOptions): Promise<string> {
  const ns = (await kubectl(o, ['config', 'view', '--minify', '-o', 'jsonpath={..namespace}']).catch(() => '')).trim();
  return ns || 'default';
}
