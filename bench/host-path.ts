// The kubernetes-csi host-path driver as a peer in the same run, from a hostpathplugin binary the
// person running the bench built (VPOOL_BENCH_HOSTPATH); nothing of it is part of this project.
import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { connectCsi, type CsiClient } from '../src/csi/client.js';

export interface HostPath {
  client: CsiClient;
  pid: number;
  dir: string;
  stop(): Promise<void>;
}

/** Starts host-path on its own socket and state directory, ready when it answers Probe. */
export async function startHostPath(bin: string, extraArgs: string[] = []): Promise<HostPath> {
  const dir = await mkdtemp('/var/tmp/vpool-bench-hostpath-');
  await mkdir(path.join(dir, 'state'));
  const socket = path.join(dir, 'csi.sock');
  const proc = spawn(bin, ['--endpoint', `unix://${socket}`, '--nodeid', 'bench', '--statedir', path.join(dir, 'state'), '--v', '0', ...extraArgs], { stdio: 'ignore' });
  const client = connectCsi(`unix://${socket}`);
  for (let i = 0; ; i++) {
    try {
      await client.probe({});
      break;
    } catch (err) {
      if (i > 100) throw err;
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  return {
    client,
    pid: proc.pid!,
    dir,
    stop: async () => {
      client.close();
      proc.kill('SIGTERM');
      await new Promise((r) => proc.once('exit', r));
      await rm(dir, { recursive: true, force: true });
    },
  };
}
