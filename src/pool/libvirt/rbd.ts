import type { RbdSource } from './domains.js';
import { attr, child, children, text } from './virsh.js';

/** The Ceph pool, monitors and cephx user of an rbd pool's definition. */
export function rbdSource(pool: ReturnType<typeof child>): RbdSource {
  const source = child(pool, 'source');
  const auth = child(source, 'auth');
  const username = attr(auth, 'username');
  const secretUuid = attr(child(auth, 'secret'), 'uuid');
  return {
    cephPool: text(source, 'name') ?? '',
    hosts: children(source, 'host').map((h) => ({ name: attr(h, 'name') ?? '', port: attr(h, 'port') })),
    auth: username && secretUuid ? { username, secretUuid } : undefined,
  };
}

