import { randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { admit, structuralProblems, type Schema } from './openapi-schema.js';

/**
 * FAKE Kubernetes API server for tests: no API server can run on this machine. It is in-process
 * and in-memory, and implements the semantics the driver relies on, as the real one does:
 * - one resourceVersion counter for every write; lists carry it, watches start from it;
 * - watch=true streams ADDED/MODIFIED/DELETED events after the given resourceVersion, and answers
 *   an ERROR event with a 410 Status (then closes) when that version was compacted away;
 * - the status subresource: writes to /status change only status, writes to the object never do;
 *   metadata.generation moves when spec changes;
 * - optimistic concurrency: a write whose metadata.resourceVersion is not the current one is a 409
 *   Conflict; a create of an existing name is a 409 AlreadyExists;
 * - a CRD's structural schema: defaults applied, unknown fields pruned, violations a 422 Invalid;
 * - labelSelector (k=v, k!=v, k, !k), fieldSelector metadata.name / metadata.namespace (and
 *   spec.signerName for CertificateSigningRequests), limit/continue;
 * - authentication by bearer token where a test names identities (`identify`): a token bound to a
 *   pod stops authenticating once that pod (by UID) is gone, as a bound ServiceAccount token does;
 *   an unknown token is a 401. Without any identity named, every request is let in;
 * - CertificateSigningRequests as the certificates registry keeps them: spec.username, uid, groups
 *   and extra are the requester's (whatever the body said), expirationSeconds at least 600, the spec
 *   immutable; the /approval subresource changes only status.conditions (only added; Approved and
 *   Denied exclusive); /status the rest, a certificate only on an approved, not denied or failed
 *   request, PEM, and never changed once set. RBAC (who may approve or sign) is not modelled.
 * Nothing else (no RBAC, admission, garbage collection, server-side apply, strategic merge patch).
 */
export interface ResourceType {
  group: string; // '' for core
  version: string;
  plural: string;
  kind: string;
  namespaced: boolean;
  statusSubresource: boolean;
  schema?: Schema;
}

export interface KObject {
  apiVersion?: string;
  kind?: string;
  metadata: { name: string; namespace?: string; uid?: string; resourceVersion?: string; generation?: number; creationTimestamp?: string; labels?: Record<string, string>; [k: string]: unknown };
  spec?: unknown;
  status?: unknown;
  [k: string]: unknown;
}

interface WatchEvent {
  rv: number;
  type: 'ADDED' | 'MODIFIED' | 'DELETED';
  plural: string;
  object: KObject;
}

interface Watcher {
  plural: string;
  namespace?: string;
  matches: (o: KObject) => boolean;
  res: ServerResponse;
}

export const BUILTIN_TYPES: ResourceType[] = [
  { group: '', version: 'v1', plural: 'nodes', kind: 'Node', namespaced: false, statusSubresource: true },
  { group: '', version: 'v1', plural: 'persistentvolumes', kind: 'PersistentVolume', namespaced: false, statusSubresource: true },
  { group: '', version: 'v1', plural: 'events', kind: 'Event', namespaced: true, statusSubresource: false },
];

/** What the API server knows of a requester (authentication.k8s.io UserInfo). */
export interface UserInfo {
  username: string;
  uid?: string;
  groups?: string[];
  extra?: Record<string, string[]>;
}

export const CSR_TYPE: ResourceType = { group: 'certificates.k8s.io', version: 'v1', plural: 'certificatesigningrequests', kind: 'CertificateSigningRequest', namespaced: false, statusSubresource: true };
export const DAEMONSET_TYPE: ResourceType = { group: 'apps', version: 'v1', plural: 'daemonsets', kind: 'DaemonSet', namespaced: true, statusSubresource: true };
export const POD_TYPE: ResourceType = { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, statusSubresource: true };
export const CLAIM_TYPE: ResourceType = { group: '', version: 'v1', plural: 'persistentvolumeclaims', kind: 'PersistentVolumeClaim', namespaced: true, statusSubresource: true };
export const CONFIGMAP_TYPE: ResourceType = { group: '', version: 'v1', plural: 'configmaps', kind: 'ConfigMap', namespaced: true, statusSubresource: false };
export const SECRET_TYPE: ResourceType = { group: '', version: 'v1', plural: 'secrets', kind: 'Secret', namespaced: true, statusSubresource: false };
export const SNAPSHOT_TYPE: ResourceType = { group: 'snapshot.storage.k8s.io', version: 'v1', plural: 'volumesnapshots', kind: 'VolumeSnapshot', namespaced: true, statusSubresource: true };

/** What the kubectl plugin reads beyond the driver's own types. */
export const PLUGIN_READ_TYPES: ResourceType[] = [
  { group: 'storage.k8s.io', version: 'v1', plural: 'storageclasses', kind: 'StorageClass', namespaced: false, statusSubresource: false },
  { group: 'storage.k8s.io', version: 'v1', plural: 'csistoragecapacities', kind: 'CSIStorageCapacity', namespaced: true, statusSubresource: false },
  { group: 'storage.k8s.io', version: 'v1', plural: 'volumeattachments', kind: 'VolumeAttachment', namespaced: false, statusSubresource: true },
  { group: '', version: 'v1', plural: 'pods', kind: 'Pod', namespaced: true, statusSubresource: true },
];

export const SNAPSHOT_CONTENT_TYPE: ResourceType = { group: 'snapshot.storage.k8s.io', version: 'v1', plural: 'volumesnapshotcontents', kind: 'VolumeSnapshotContent', namespaced: false, statusSubresource: true };

/** A ResourceType from a CustomResourceDefinition object (its storage version). */
export function typeFromCrd(crd: { spec: { group: string; names: { plural: string; kind: string }; scope: string; versions: Array<{ name: string; storage?: boolean; subresources?: { status?: object }; schema?: { openAPIV3Schema: Schema } }> } }): ResourceType {
  const v = crd.spec.versions.find((x) => x.storage) ?? crd.spec.versions[0];
  const schema = v.schema?.openAPIV3Schema;
  if (schema) {
    const problems = structuralProblems(schema);
    if (problems.length) throw new Error(`CRD ${crd.spec.names.plural} is not structural: ${problems.join(', ')}`);
  }
  return { group: crd.spec.group, version: v.name, plural: crd.spec.names.plural, kind: crd.spec.names.kind, namespaced: crd.spec.scope === 'Namespaced', statusSubresource: !!v.subresources?.status, schema };
}

class HttpError extends Error {
  constructor(
    readonly code: number,
    readonly reason: string,
    message: string,
    readonly causes: string[] = [],
  ) {
    super(message);
  }
}

export class FakeApiServer {
  private readonly types = new Map<string, ResourceType>();
  private readonly objects = new Map<string, KObject>();
  private history: WatchEvent[] = [];
  private compactedTo = 0;
  private rv = 100;
  private readonly watchers = new Set<Watcher>();
  private server?: http.Server;
  /** Every request as "METHOD path?query", for tests that check how the client talked. */
  readonly requests: string[] = [];
  /** The same, with the bearer token each came with (which client asked, where a test gives each its own). */
  readonly requestsFrom: Array<{ token?: string; request: string }> = [];
  /** Runs before a write is applied (once per write); a test uses it to put another writer in between. */
  beforeWrite?: (method: string, plural: string, name: string, subresource?: string) => void;
  url = '';
  /** Bearer tokens and who they authenticate (empty: no authentication at all). */
  private readonly tokens = new Map<string, UserInfo>();

  constructor(types: ResourceType[] = BUILTIN_TYPES) {
    for (const t of types) this.addType(t);
  }

  addType(t: ResourceType): void {
    this.types.set(t.plural, t);
  }

  /** Listens on `host` (127.0.0.1; a test host's address for plugins in network namespaces). */
  async start(host = '127.0.0.1'): Promise<this> {
    this.server = http.createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((r) => this.server?.listen(0, host, r));
    this.url = `http://${host}:${(this.server.address() as AddressInfo).port}`;
    return this;
  }

  /** A bearer token and who it is, as the token authenticator would say. */
  identify(token: string, user: UserInfo): void {
    this.tokens.set(token, user);
  }

  /** Who the request comes from; throws 401 when authentication is on and the token does not authenticate. */
  private authenticate(req: IncomingMessage): UserInfo | undefined {
    if (this.tokens.size === 0) return undefined;
    const token = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const user = token ? this.tokens.get(token) : undefined;
    const podName = user?.extra?.['authentication.kubernetes.io/pod-name']?.[0];
    const podUid = user?.extra?.['authentication.kubernetes.io/pod-uid']?.[0];
    const ns = /^system:serviceaccount:([^:]+):/.exec(user?.username ?? '')?.[1];
    // A token bound to a pod is valid only while that pod (that UID) exists.
    if (user && podName && ns && this.get('pods', podName, ns)?.metadata.uid !== podUid) throw new HttpError(401, 'Unauthorized', 'the token\'s pod no longer exists');
    if (!user) throw new HttpError(401, 'Unauthorized', 'Unauthorized');
    return user;
  }

  async stop(): Promise<void> {
    this.closeWatches();
    this.server?.closeAllConnections();
    await new Promise<void>((r) => this.server?.close(() => r()) ?? r());
  }

  /** A kubeconfig file that points at this server. */
  async kubeconfig(dir?: string, token = 'fake-token'): Promise<string> {
    const d = dir ?? (await mkdtemp(path.join(os.tmpdir(), 'vpool-kube-')));
    const file = path.join(d, token === 'fake-token' ? 'kubeconfig' : `kubeconfig-${token}`);
    await writeFile(file, JSON.stringify({
      apiVersion: 'v1',
      kind: 'Config',
      clusters: [{ name: 'fake', cluster: { server: this.url, 'insecure-skip-tls-verify': true } }],
      users: [{ name: 'fake', user: { token } }],
      contexts: [{ name: 'fake', context: { cluster: 'fake', user: 'fake' } }],
      'current-context': 'fake',
    }));
    return file;
  }

  /** Ends every open watch, as an API server restart or a timeout does. */
  closeWatches(): void {
    for (const w of this.watchers) w.res.end();
    this.watchers.clear();
  }

  /** Forgets the event history: watches from an older resourceVersion get 410 Gone. */
  compact(): void {
    this.compactedTo = this.rv;
    this.history = [];
  }

  // ---- direct access for tests (the same code paths as HTTP writes, so watches see them) ----

  create(plural: string, obj: KObject): KObject {
    return this.doCreate(this.type(plural), obj.metadata.namespace, structuredClone(obj));
  }

  get(plural: string, name: string, namespace?: string): KObject | undefined {
    const o = this.objects.get(this.key(plural, namespace, name));
    return o && structuredClone(o);
  }

  list(plural: string, namespace?: string): KObject[] {
    return [...this.objects.entries()].filter(([k, o]) => k.startsWith(`${plural}/`) && (namespace === undefined || o.metadata.namespace === namespace)).map(([, o]) => structuredClone(o));
  }

  /** Read-modify-write of the object (spec, labels), as `kubectl edit` would do. */
  update(plural: string, name: string, change: (o: KObject) => void, namespace?: string): KObject {
    const current = this.get(plural, name, namespace);
    if (!current) throw new Error(`${plural}/${name} not found`);
    change(current);
    return this.doUpdate(this.type(plural), namespace, name, current, false);
  }

  /** Read-modify-write of the status subresource, as another node's agent would do. */
  updateStatus(plural: string, name: string, change: (o: KObject) => void, namespace?: string): KObject {
    const current = this.get(plural, name, namespace);
    if (!current) throw new Error(`${plural}/${name} not found`);
    change(current);
    return this.doUpdate(this.type(plural), namespace, name, current, true);
  }

  delete(plural: string, name: string, namespace?: string): void {
    this.doDelete(this.type(plural), namespace, name);
  }

  // ---- HTTP ----

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    this.requests.push(`${req.method} ${url.pathname}${url.search}`);
    this.requestsFrom.push({ token: /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1], request: `${req.method} ${url.pathname}${url.search}` });
    try {
      const user = this.authenticate(req);
      const route = this.route(url.pathname);
      const body = req.method === 'POST' || req.method === 'PUT' ? await readJson(req) : undefined;
      const { type, namespace, name, subresource } = route;
      if (type.plural === CSR_TYPE.plural && body) this.csrWrite(req.method!, body as KObject, subresource, user, name);
      switch (req.method) {
        case 'GET':
          if (!name) {
            if (url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1') return this.watch(type, namespace, url.searchParams, res);
            return send(res, 200, this.listResponse(type, namespace, url.searchParams));
          }
          return send(res, 200, this.mustGet(type, namespace, name));
        case 'POST':
          if (name) throw new HttpError(405, 'MethodNotAllowed', 'POST to a named object');
          this.beforeWrite?.('POST', type.plural, (body as KObject)?.metadata?.name ?? '');
          return send(res, 201, this.doCreate(type, namespace, body as KObject));
        case 'PUT':
          if (!name) throw new HttpError(405, 'MethodNotAllowed', 'PUT to a collection');
          if ((body as KObject)?.metadata?.name !== name) throw new HttpError(400, 'BadRequest', 'the name in the body does not match the URL');
          this.beforeWrite?.('PUT', type.plural, name, subresource);
          return send(res, 200, this.doUpdate(type, namespace, name, body as KObject, subresource === 'status' || subresource === 'approval'));
        case 'DELETE':
          if (!name) throw new HttpError(405, 'MethodNotAllowed', 'DELETE of a collection');
          return send(res, 200, this.doDelete(type, namespace, name));
        default:
          throw new HttpError(405, 'MethodNotAllowed', `${req.method} is not implemented by the fake API server`);
      }
    } catch (e) {
      const err = e instanceof HttpError ? e : new HttpError(500, 'InternalError', String(e));
      send(res, err.code, {
        kind: 'Status',
        apiVersion: 'v1',
        metadata: {},
        status: 'Failure',
        message: err.message,
        reason: err.reason,
        code: err.code,
        ...(err.causes.length ? { details: { causes: err.causes.map((message) => ({ message })) } } : {}),
      });
    }
  }

  /** The certificates registry's rules, applied to the body before the ordinary write. */
  private csrWrite(method: string, body: KObject, subresource: string | undefined, user: UserInfo | undefined, name?: string): void {
    const spec = (body.spec ?? {}) as Record<string, unknown>;
    if (method === 'POST') {
      const exp = spec.expirationSeconds as number | undefined;
      if (exp !== undefined && exp < 600) throw new HttpError(422, 'Invalid', 'spec.expirationSeconds: Invalid value: may not specify a duration less than 600 seconds (10 minutes)');
      // The requester is whoever authenticated: nothing the body says about it is kept.
      body.spec = { ...spec, username: user?.username ?? 'system:anonymous', uid: user?.uid, groups: user?.groups ?? ['system:authenticated'], extra: user?.extra };
      return;
    }
    const current = name ? this.get(CSR_TYPE.plural, name) : undefined;
    if (!current) return;
    body.spec = current.spec; // immutable after creation
    const had = (current.status ?? {}) as Record<string, unknown>;
    const asked = (body.status ?? {}) as Record<string, unknown>;
    const conds = (x: Record<string, unknown>) => (x.conditions as Array<{ type: string; status: string }> | undefined) ?? [];
    const has = (x: Record<string, unknown>, t: string) => conds(x).some((c) => c.type === t && c.status === 'True');
    if (subresource === 'approval') {
      if (has(asked, 'Approved') && has(asked, 'Denied')) throw new HttpError(422, 'Invalid', 'status.conditions: Approved and Denied conditions are mutually exclusive');
      // Conditions are only added, never removed.
      for (const c of conds(had)) if (!conds(asked).some((x) => x.type === c.type)) throw new HttpError(422, 'Invalid', `status.conditions: a ${c.type} condition may not be removed`);
      body.status = { ...had, conditions: asked.conditions };
    } else if (subresource === 'status') {
      if (asked.certificate !== had.certificate) {
        if (had.certificate) throw new HttpError(422, 'Invalid', 'status.certificate: Forbidden: updates may not modify existing certificate content');
        if (!has(had, 'Approved') || has(had, 'Denied') || has(had, 'Failed')) throw new HttpError(422, 'Invalid', 'status.certificate: Forbidden: certificate may only be set if the request is approved and not denied or failed');
        if (!/^-----BEGIN CERTIFICATE-----/.test(Buffer.from(String(asked.certificate), 'base64').toString())) throw new HttpError(422, 'Invalid', 'status.certificate: Invalid value: must contain PEM CERTIFICATE blocks');
      }
      body.status = { ...asked, conditions: had.conditions ?? asked.conditions };
    }
  }

  private route(p: string): { type: ResourceType; namespace?: string; name?: string; subresource?: string } {
    const parts = p.split('/').filter(Boolean);
    let rest: string[];
    if (parts[0] === 'api' && parts[1] === 'v1') rest = parts.slice(2);
    else if (parts[0] === 'apis' && parts.length >= 4) rest = parts.slice(3);
    else throw new HttpError(404, 'NotFound', `no route ${p}`);
    let namespace: string | undefined;
    if (rest[0] === 'namespaces' && rest.length >= 3) {
      namespace = rest[1];
      rest = rest.slice(2);
    }
    const type = this.types.get(rest[0] ?? '');
    const group = parts[0] === 'api' ? '' : parts[1];
    if (!type || type.group !== group) throw new HttpError(404, 'NotFound', `the server could not find the requested resource (${p})`);
    if (type.namespaced !== (namespace !== undefined) && rest.length > 1) throw new HttpError(404, 'NotFound', `${type.plural} is ${type.namespaced ? '' : 'not '}namespaced`);
    const subresource = rest[2];
    if (subresource && !(subresource === 'status' && type.statusSubresource) && !(subresource === 'approval' && type.plural === CSR_TYPE.plural)) throw new HttpError(404, 'NotFound', `no subresource ${subresource}`);
    return { type, namespace, name: rest[1], subresource };
  }

  private type(plural: string): ResourceType {
    const t = this.types.get(plural);
    if (!t) throw new Error(`fake API server: no type ${plural}`);
    return t;
  }

  private key(plural: string, namespace: string | undefined, name: string): string {
    return `${plural}/${namespace ?? ''}/${name}`;
  }

  private mustGet(type: ResourceType, namespace: string | undefined, name: string): KObject {
    const o = this.objects.get(this.key(type.plural, namespace, name));
    if (!o) throw new HttpError(404, 'NotFound', `${type.plural} "${name}" not found`);
    return o;
  }

  private apiVersion(t: ResourceType): string {
    return t.group ? `${t.group}/${t.version}` : t.version;
  }

  private admit(type: ResourceType, o: KObject): KObject {
    if (!type.schema) return o;
    const { value, causes } = admit(type.schema, o);
    if (causes.length) throw new HttpError(422, 'Invalid', `${type.kind} "${o.metadata?.name}" is invalid: ${causes.join(', ')}`, causes);
    return value as KObject;
  }

  private doCreate(type: ResourceType, namespace: string | undefined, body: KObject): KObject {
    if (!body?.metadata?.name) throw new HttpError(422, 'Invalid', 'metadata.name: Required value');
    if (type.namespaced && !namespace) throw new HttpError(400, 'BadRequest', 'a namespace is required');
    const key = this.key(type.plural, namespace, body.metadata.name);
    if (this.objects.has(key)) throw new HttpError(409, 'AlreadyExists', `${type.plural} "${body.metadata.name}" already exists`);
    const o = this.admit(type, { ...structuredClone(body), apiVersion: this.apiVersion(type), kind: type.kind });
    if (type.statusSubresource) delete o.status; // status is written through /status only
    o.metadata = { ...o.metadata, ...(namespace ? { namespace } : {}), uid: randomUUID(), generation: 1, creationTimestamp: new Date().toISOString(), resourceVersion: String(++this.rv) };
    this.objects.set(key, o);
    this.emit('ADDED', type.plural, o);
    return o;
  }

  private doUpdate(type: ResourceType, namespace: string | undefined, name: string, body: KObject, toStatus: boolean): KObject {
    const key = this.key(type.plural, namespace, name);
    const current = this.objects.get(key);
    if (!current) throw new HttpError(404, 'NotFound', `${type.plural} "${name}" not found`);
    const asked = body.metadata?.resourceVersion;
    if (asked && asked !== current.metadata.resourceVersion) {
      throw new HttpError(409, 'Conflict', `Operation cannot be fulfilled on ${type.plural} "${name}": the object has been modified; please apply your changes to the latest version and try again`);
    }
    let next: KObject;
    if (toStatus) next = { ...current, status: structuredClone(body.status) };
    else {
      next = { ...structuredClone(body), apiVersion: this.apiVersion(type), kind: type.kind };
      if (type.statusSubresource) next.status = current.status;
      next.metadata = { ...next.metadata, uid: current.metadata.uid, creationTimestamp: current.metadata.creationTimestamp, generation: current.metadata.generation };
      if (JSON.stringify(next.spec) !== JSON.stringify(current.spec)) next.metadata.generation = (current.metadata.generation ?? 1) + 1;
    }
    next = this.admit(type, next);
    next.metadata = { ...next.metadata, resourceVersion: String(++this.rv) };
    this.objects.set(key, next);
    this.emit('MODIFIED', type.plural, next);
    return next;
  }

  private doDelete(type: ResourceType, namespace: string | undefined, name: string): KObject {
    const key = this.key(type.plural, namespace, name);
    const current = this.objects.get(key);
    if (!current) throw new HttpError(404, 'NotFound', `${type.plural} "${name}" not found`);
    this.objects.delete(key);
    const gone = { ...current, metadata: { ...current.metadata, resourceVersion: String(++this.rv) } };
    this.emit('DELETED', type.plural, gone);
    return gone;
  }

  private emit(type: WatchEvent['type'], plural: string, object: KObject): void {
    const ev: WatchEvent = { rv: this.rv, type, plural, object: structuredClone(object) };
    this.history.push(ev);
    for (const w of this.watchers) if (w.plural === plural && (w.namespace === undefined || w.namespace === object.metadata.namespace) && w.matches(object)) w.res.write(`${JSON.stringify({ type, object })}\n`);
  }

  private selector(q: URLSearchParams): (o: KObject) => boolean {
    const labels = (q.get('labelSelector') ?? '').split(',').filter(Boolean);
    const fields = (q.get('fieldSelector') ?? '').split(',').filter(Boolean);
    return (o) =>
      labels.every((term) => {
        const l = o.metadata.labels ?? {};
        if (term.startsWith('!')) return !(term.slice(1) in l); // "!key": the label is not set
        const ne = /^([^!=]+)!=(.*)$/.exec(term);
        if (ne) return l[ne[1]] !== ne[2];
        const eq = /^([^=]+)==?(.*)$/.exec(term);
        if (eq) return l[eq[1]] === eq[2];
        return term in l;
      }) &&
      fields.every((term) => {
        const [k, v] = term.split('=');
        if (k === 'metadata.name') return o.metadata.name === v;
        if (k === 'metadata.namespace') return (o.metadata.namespace ?? '') === v;
        if (k === 'spec.signerName') return (o.spec as { signerName?: string } | undefined)?.signerName === v;
        throw new HttpError(400, 'BadRequest', `field label not supported: ${k}`);
      });
  }

  private listResponse(type: ResourceType, namespace: string | undefined, q: URLSearchParams): object {
    const matches = this.selector(q);
    const all = [...this.objects.entries()]
      .filter(([k, o]) => k.startsWith(`${type.plural}/`) && (namespace === undefined || o.metadata.namespace === namespace) && matches(o))
      .map(([, o]) => o)
      .sort((a, b) => `${a.metadata.namespace}/${a.metadata.name}`.localeCompare(`${b.metadata.namespace}/${b.metadata.name}`));
    const from = Number(q.get('continue') ? Buffer.from(q.get('continue') as string, 'base64').toString() : 0);
    const limit = Number(q.get('limit') ?? 0) || all.length;
    const items = all.slice(from, from + limit);
    const next = from + limit < all.length ? Buffer.from(String(from + limit)).toString('base64') : undefined;
    return { apiVersion: this.apiVersion(type), kind: `${type.kind}List`, metadata: { resourceVersion: String(this.rv), ...(next ? { continue: next } : {}) }, items };
  }

  private watch(type: ResourceType, namespace: string | undefined, q: URLSearchParams, res: ServerResponse): void {
    const matches = this.selector(q);
    const from = q.get('resourceVersion');
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders(); // the client's watch() resolves on the headers, before any event
    const wanted = (e: WatchEvent) => e.plural === type.plural && (namespace === undefined || e.object.metadata.namespace === namespace) && matches(e.object);
    if (from && from !== '0') {
      if (Number(from) < this.compactedTo) {
        res.end(`${JSON.stringify({ type: 'ERROR', object: { kind: 'Status', apiVersion: 'v1', status: 'Failure', message: `too old resource version: ${from} (${this.compactedTo})`, reason: 'Expired', code: 410 } })}\n`);
        return;
      }
      for (const e of this.history) if (e.rv > Number(from) && wanted(e)) res.write(`${JSON.stringify({ type: e.type, object: e.object })}\n`);
    } else {
      for (const o of this.objects.values()) if (wanted({ rv: 0, type: 'ADDED', plural: type.plural, object: o })) res.write(`${JSON.stringify({ type: 'ADDED', object: o })}\n`);
    }
    const w: Watcher = { plural: type.plural, namespace, matches, res };
    this.watchers.add(w);
    res.on('close', () => this.watchers.delete(w));
  }
}

async function readJson(req: IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return text ? JSON.parse(text) : undefined;
  } catch {
    throw new HttpError(400, 'BadRequest', 'the body is not JSON');
  }
}

function send(res: ServerResponse, code: number, body: object): void {
  res.writeHead(code, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
