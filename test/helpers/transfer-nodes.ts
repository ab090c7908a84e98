import { rm } from 'node:fs/promises';
import { makeCa } from './certs.js';
import { blockCap } from './csi.js';
import { finish, startDriver, tempDir, type Driver } from './driver.js';
import { twoHosts, type TwoHosts } from './netns.js';

/**
 * Two node plugins, each in its own network namespace (a veth pair between them) and with its own
 * file pool; B takes from A what a CreateVolume on B names and B's pool lacks. Every cross-node test
 * starts its plugins through here, so how the two are made to trust each other (certificates, the
 * cluster objects a read is authorized by) is set up in one place.
 */
export interface TransferNodes {
  hosts: TwoHosts;
  a: Driver;
  b: Driver;
  /** A's listener, host:port. */
  listen: string;
  /** A's TLS directory: what a FAKE standing in for A presents. */
  tlsA: string;
  /** Restarts A (same pool), with extra flags. */
  restartA(extra?: string[]): Promise<Driver>;
  /** Restarts B (same pool), with extra flags. */
  restartB(extra?: string[]): Promise<Driver>;
  /** CreateVolume on B (or `on`) of a volume whose content is A's snapshot or volume. */
  restore(name: string, source: { snapshot?: string; volume?: string }, o?: { size?: number; on?: Driver }): Promise<{ volume_id: string; capacity_bytes: string }>;
  /** Stops both and removes what was made; returns anything left behind (loop devices, mounts). */
  remove(): Promise<string[]>;
}

export interface TransferNodesOptions {
  /** Extra flags of A and of B. */
  aArgs?: string[];
  bArgs?: string[];
  /** --transfer-stall-timeout of both (default 3s). */
  stallTimeout?: string;
  /** A's transfer port (9810). */
  port?: number;
}

export async function transferNodes(tag: string, o: TransferNodesOptions = {}): Promise<TransferNodes> {
  const hosts = await twoHosts(tag);
  const certs = await tempDir('vpool-certs-');
  const ca = await makeCa(certs, 'driver');
  const tlsA = await ca.node('node-a');
  const tlsB = await ca.node('node-b');
  const port = o.port ?? 9810;
  const listen = `${hosts.a.addr}:${port}`;
  const stall = ['--transfer-stall-timeout', o.stallTimeout ?? '3s'];
  const startA = (extra: string[], dir?: string) => startDriver({ dir, nodeId: 'node-a', wrap: hosts.wrap(hosts.a.ns), args: ['--transfer-listen', listen, '--transfer-tls-dir', tlsA, ...stall, ...(o.aArgs ?? []), ...extra] });
  const startB = (extra: string[], dir?: string) => startDriver({ dir, nodeId: 'node-b', wrap: hosts.wrap(hosts.b.ns), args: ['--transfer-peer', listen, '--transfer-tls-dir', tlsB, ...stall, ...(o.bArgs ?? []), ...extra] });
  const nodes: TransferNodes = {
    hosts,
    a: await startA([]),
    b: await startB([]),
    listen,
    tlsA,
    async restartA(extra = []) {
      if (nodes.a.proc.exitCode === null) await nodes.a.stop();
      nodes.a = await startA(extra, nodes.a.dir);
      return nodes.a;
    },
    async restartB(extra = []) {
      if (nodes.b.proc.exitCode === null) await nodes.b.stop();
      nodes.b = await startB(extra, nodes.b.dir);
      return nodes.b;
    },
    async restore(name, source, ro = {}) {
      const on = ro.on ?? nodes.b;
      const res = await on.client.createVolume({
        name,
        capacity_range: { required_bytes: String(ro.size ?? 64 * 1024 * 1024) },
        volume_capabilities: [blockCap()],
        parameters: {},
        volume_content_source: source.snapshot ? { snapshot: { snapshot_id: source.snapshot } } : { volume: { volume_id: source.volume! } },
      });
      return res.volume!;
    },
    async remove() {
      const left = [...(await finish(nodes.a)), ...(await finish(nodes.b))];
      await hosts.remove();
      await rm(certs, { recursive: true, force: true });
      return left;
    },
  };
  return nodes;
}
