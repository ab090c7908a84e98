import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const ip = (...args: string[]) => execFileP('ip', args);

/** Two test hosts: network namespaces joined by a veth pair, with nothing else on their network. */
export interface TwoHosts {
  a: { ns: string; addr: string };
  b: { ns: string; addr: string };
  /** With `hostLink`: this machine's address as each namespace reaches it (a FAKE API server listening there serves both). */
  host?: { fromA: string; fromB: string };
  /** Runs a command inside a namespace (ip netns exec). */
  wrap(ns: string): string[];
  /** Cuts the link (both ends down) or mends it. */
  link(up: boolean): Promise<void>;
  remove(): Promise<void>;
}

/**
 * A 10.N.0.0/16 that no route on this machine (any table: local addresses included) overlaps. A
 * subnet taken from the pid alone once landed on podman's 10.88.0.0/16, whose 10.88.0.1 is a local
 * address: connections meant for namespace A reached this machine instead (ECONNREFUSED).
 */
async function freeSubnet(): Promise<number> {
  const { stdout } = await execFileP('ip', ['-j', '-4', 'route', 'show', 'table', 'all']);
  const taken = new Set<number>();
  for (const r of JSON.parse(stdout) as { dst: string }[]) {
    const m = /^10\.(\d+)\.\d+\.\d+(?:\/(\d+))?$/.exec(r.dst);
    if (!m) continue;
    if (m[2] !== undefined && Number(m[2]) < 16) throw new Error(`a route covers more than one 10.N.0.0/16 (${r.dst}): no subnet to test on`);
    taken.add(Number(m[1]));
  }
  for (let i = 0; i < 100; i++) {
    const n = 64 + ((process.pid + i) % 100);
    if (!taken.has(n)) return n;
  }
  throw new Error('no free 10.N.0.0/16 among 10.64-10.163 for the test namespaces');
}

export async function twoHosts(tag: string, o: { hostLink?: boolean } = {}): Promise<TwoHosts> {
  const id = `${tag}${process.pid % 10000}`;
  const [nsA, nsB, vA, vB] = [`${id}a`, `${id}b`, `v${id}a`, `v${id}b`];
  const remove = async () => {
    for (const ns of [nsA, nsB]) await ip('netns', 'del', ns).catch(() => undefined);
  };
  await remove();
  const subnet = await freeSubnet();
  const a = { ns: nsA, addr: `10.${subnet}.0.1` };
  const b = { ns: nsB, addr: `10.${subnet}.0.2` };
  await ip('netns', 'add', nsA);
  await ip('netns', 'add', nsB);
  await ip('link', 'add', vA, 'type', 'veth', 'peer', 'name', vB);
  await ip('link', 'set', vA, 'netns', nsA);
  await ip('link', 'set', vB, 'netns', nsB);
  for (const [ns, dev, addr] of [[nsA, vA, a.addr], [nsB, vB, b.addr]] as const) {
    await ip('-n', ns, 'addr', 'add', `${addr}/24`, 'dev', dev);
    await ip('-n', ns, 'link', 'set', dev, 'up');
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
  }
  let host: TwoHosts['host'];
  if (o.hostLink) {
    // A point-to-point link from this machine into each namespace: what a pod's route to the API server is.
    const ends: string[] = [];
    for (const [i, ns] of [[1, nsA], [2, nsB]] as const) {
      const [out, inside] = [`h${id}${i}`, `g${id}${i}`];
      await ip('link', 'del', out).catch(() => undefined);
      await ip('link', 'add', out, 'type', 'veth', 'peer', 'name', inside);
      await ip('link', 'set', inside, 'netns', ns);
      await ip('addr', 'add', `10.${subnet}.${i}.1/30`, 'dev', out);
      await ip('link', 'set', out, 'up');
      await ip('-n', ns, 'addr', 'add', `10.${subnet}.${i}.2/30`, 'dev', inside);
      await ip('-n', ns, 'link', 'set', inside, 'up');
      ends.push(`10.${subnet}.${i}.1`);
    }
    host = { fromA: ends[0], fromB: ends[1] };
  }
  return {
    a,
    b,
    host,
    wrap: (ns) => ['ip', 'netns', 'exec', ns],
    link: async (up) => {
      await ip('-n', nsA, 'link', 'set', vA, up ? 'up' : 'down');
      await ip('-n', nsB, 'link', 'set', vB, up ? 'up' : 'down');
    },
    remove,
  };
}
