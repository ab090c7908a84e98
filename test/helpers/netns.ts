import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const ip = (...args: string[]) => execFileP('ip', args);

/** Two test hosts: network namespaces joined by a veth pair, with nothing else on their network. */
export interface TwoHosts {
  a: { ns: string; addr: string };
  b: { ns: string; addr: string };
  /** Runs a command inside a namespace (ip netns exec). */
  wrap(ns: string): string[];
  /** Cuts the link (both ends down) or mends it. */
  link(up: boolean): Promise<void>;
  remove(): Promise<void>;
}

export async function twoHosts(tag: string): Promise<TwoHosts> {
  const id = `${tag}${process.pid % 10000}`;
  const [nsA, nsB, vA, vB] = [`${id}a`, `${id}b`, `v${id}a`, `v${id}b`];
  const subnet = 64 + (process.pid % 100);
  const a = { ns: nsA, addr: `10.${subnet}.0.1` };
  const b = { ns: nsB, addr: `10.${subnet}.0.2` };
  const remove = async () => {
    for (const ns of [nsA, nsB]) await ip('netns', 'del', ns).catch(() => undefined);
  };
  await remove();
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
  return {
    a,
    b,
    wrap: (ns) => ['ip', 'netns', 'exec', ns],
    link: async (up) => {
      await ip('-n', nsA, 'link', 'set', vA, up ? 'up' : 'down');
      await ip('-n', nsB, 'link', 'set', vB, up ? 'up' : 'down');
    },
    remove,
  };
}
