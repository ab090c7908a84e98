import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const ip = (...args: string[]) => execFileP('ip', args, { timeout: 30_000, killSignal: 'SIGKILL' });

export interface PodNetwork {
  /** The network namespace the pod's processes run in (ip netns exec). */
  ns: string;
  /** The pod's address: POD_IP. */
  podIp: string;
  /** The Kubernetes API as the pod reaches it. */
  apiUrl: string;
  remove(): Promise<void>;
}

/** A /24 of 10.200-249.x.0 that no interface of this host has: runs of other test processes pick others. */
async function freeSubnet(): Promise<string> {
  const { stdout } = await ip('-4', '-o', 'addr', 'show');
  for (;;) {
    const subnet = `10.${200 + (randomBytes(1)[0] % 50)}.${randomBytes(1)[0] % 250}`;
    if (!stdout.includes(` ${subnet}.`)) return subnet;
  }
}

/**
 * A network namespace per pod (its ports are its own, as in a cluster), joined to this host by a
 * veth pair; the API server (on this host's loopback, which a pod cannot see) is forwarded to the
 * host's end of the pair.
 */
export async function podNetwork(apiServer: { host: string; port: number }): Promise<PodNetwork> {
  // Interface names are at most 15 bytes; random, so concurrent runs never meet.
  const tag = `vr${randomBytes(4).toString('hex')}`;
  const ns = `${tag}n`;
  const subnet = await freeSubnet();
  const [hostIp, podIp] = [`${subnet}.1`, `${subnet}.2`];
  let api: net.Server | undefined;
  const open = new Set<net.Socket>();
  const remove = async () => {
    // close() alone waits for every connection to end: one the pod left open (a watch, a keep-alive)
    // would hold it for ever. The pod is gone by now: its connections go with it.
    const closed = api && new Promise<void>((r) => api!.close(() => r()));
    for (const s of open) s.destroy();
    await closed;
    await ip('netns', 'del', ns).catch(() => undefined);
    await ip('link', 'del', `${tag}h`).catch(() => undefined);
  };
  try {
    await ip('netns', 'add', ns);
    await ip('link', 'add', `${tag}h`, 'type', 'veth', 'peer', 'name', `${tag}p`);
    await ip('link', 'set', `${tag}p`, 'netns', ns);
    await ip('addr', 'add', `${hostIp}/24`, 'dev', `${tag}h`);
    await ip('link', 'set', `${tag}h`, 'up');
    await ip('-n', ns, 'addr', 'add', `${podIp}/24`, 'dev', `${tag}p`);
    await ip('-n', ns, 'link', 'set', `${tag}p`, 'up');
    await ip('-n', ns, 'link', 'set', 'lo', 'up');
    const server = net.createServer((inbound) => {
      const up = net.connect(apiServer.port, apiServer.host);
      for (const s of [inbound, up]) {
        open.add(s);
        s.once('close', () => open.delete(s));
      }
      inbound.pipe(up).pipe(inbound);
      inbound.on('error', () => up.destroy());
      up.on('error', () => inbound.destroy());
    });
    api = server;
    await new Promise<void>((r) => server.listen(0, hostIp, r));
    return { ns, podIp, apiUrl: `http://${hostIp}:${(server.address() as net.AddressInfo).port}`, remove };
  } catch (err) {
    await remove();
    throw err;
  }
}
