import { AppsV1Api, CertificatesV1Api, CoreV1Api, CustomObjectsApi, KubeConfig, type V1PersistentVolume } from '@kubernetes/client-node';

/** The API clients the driver uses, from one kubeconfig. */
export interface Kube {
  config: KubeConfig;
  core: CoreV1Api;
  custom: CustomObjectsApi;
  certificates: CertificatesV1Api;
  apps: AppsV1Api;
}

/**
 * The kubeconfig: a file when one is named (or $KUBECONFIG is set), else the pod's service account.
 * loadFromDefault falls back to localhost:8080 when it finds nothing; that would make every call
 * fail far from the cause, so the in-cluster case is asked for by name.
 */
export function loadKube(kubeconfig?: string): Kube {
  const config = new KubeConfig();
  if (kubeconfig) config.loadFromFile(kubeconfig);
  else if (process.env.KUBECONFIG) config.loadFromDefault();
  else if (process.env.KUBERNETES_SERVICE_HOST) config.loadFromCluster();
  else throw new Error('no Kubernetes API to talk to: pass --kubeconfig, set KUBECONFIG, or run in a pod');
  return { config, core: config.makeApiClient(CoreV1Api), custom: config.makeApiClient(CustomObjectsApi), certificates: config.makeApiClient(CertificatesV1Api), apps: config.makeApiClient(AppsV1Api) };
}

/** The HTTP status of a failed API call (ApiException.code), or undefined for anything else. */
export function statusOf(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

/** The object a read returns, or null when the API says it does not exist (404); any other failure is thrown. */
export function orNull<T>(read: Promise<T>): Promise<T | null> {
  return read.catch((err: unknown) => {
    if (statusOf(err) === 404) return null;
    throw err;
  });
}

/** The one node a PV's required node affinity pins it to by `topologyKey` (a node-local volume's node); null when it names none or several. */
export function pinnedNodeOf(pv: V1PersistentVolume, topologyKey: string): string | null {
  const terms = pv.spec?.nodeAffinity?.required?.nodeSelectorTerms ?? [];
  return terms.flatMap((t) => t.matchExpressions ?? []).find((e) => e.key === topologyKey && e.operator === 'In' && e.values?.length === 1)?.values?.[0] ?? null;
}
