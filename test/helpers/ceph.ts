import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { PROJECT_ROOT } from '../../src/csi/proto.js';
import { poolVolumes, virsh, virshTry, type TestPool } from './libvirt.js';

const execFileP = promisify(execFile);
const SCRIPT = path.join(PROJECT_ROOT, 'test/ceph/ceph-start.sh');

/** A real single-node Ceph cluster (test/ceph/ceph-start.sh: Debian's ceph 16.2, no systemd), on a port of its own. */
export interface TestCeph {
  dir: string;
  conf: string;
  /** `ceph` with this cluster's configuration and admin key. */
  ceph(...args: string[]): Promise<string>;
  rbd(...args: string[]): Promise<string>;
  /** Signals one daemon by its PID file: SIGSTOP hangs it (a hung daemon), SIGCONT wakes it, SIGKILL kills it. */
  signal(daemon: 'mon.a' | 'osd.0' | 'mgr.x', sig: NodeJS.Signals): Promise<void>;
  /** Starts a killed daemon again, as ceph-start.sh started it. */
  restart(daemon: 'mon.a' | 'osd.0'): Promise<void>;
  /** One more OSD (ceph-start.sh add-osd), so pools can keep two copies; waits for active+clean. */
  addOsd(): Promise<void>;
  stop(): Promise<void>;
}

/** A loopback port nothing listens on now (the kernel's pick). */
async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise((r) => s.close(r));
  return port;
}

export async function startCeph(): Promise<TestCeph> {
  const dir = await mkdtemp('/var/tmp/vpool-ceph-');
  const port = await freePort();
  const conf = path.join(dir, 'ceph.conf');
  const stop = async () => {
    await execFileP('bash', [SCRIPT, 'stop', dir], { timeout: 120_000 }).catch(() => rm(dir, { recursive: true, force: true }));
  };
  try {
    await execFileP('bash', [SCRIPT, dir, String(port)], { timeout: 600_000 });
  } catch (err) {
    await stop();
    throw err;
  }
  const run = (cmd: string) => async (...args: string[]) => (await execFileP(cmd, ['-c', conf, ...args], { timeout: 120_000, killSignal: 'SIGKILL' })).stdout;
  const pidOf = async (daemon: string) => Number((await readFile(path.join(dir, 'run', `ceph-${daemon}.pid`), 'utf8')).trim());
  const signal = async (daemon: string, sig: NodeJS.Signals) => {
    const pid = await pidOf(daemon);
    process.kill(pid, sig);
    if (sig === 'SIGKILL') {
      for (let i = 0; i < 200; i++) {
        try {
          process.kill(pid, 0);
        } catch {
          return;
        }
        await new Promise((r) => setTimeout(r, 50));
      }
      throw new Error(`ceph ${daemon} (pid ${pid}) did not die`);
    }
  };
  const restart = async (daemon: 'mon.a' | 'osd.0') => {
    const [type, id] = daemon.split('.') as [string, string];
    await execFileP(`ceph-${type}`, ['-c', conf, '-i', id], { timeout: 120_000 });
  };
  const addOsd = async () => void (await execFileP('bash', [SCRIPT, 'add-osd', dir], { timeout: 300_000 }));
  return { dir, conf, ceph: run('ceph'), rbd: run('rbd'), signal, restart, addOsd, stop };
}

/**
 * A libvirt `rbd` storage pool on the cluster's `rbd` pool, in the tests' libvirtd: a Ceph user of its own
 * (`profile rbd` on that pool), its key in a libvirt secret (usage ceph), the pool's source the monitor.
 */
export async function rbdPool(c: TestCeph, prefix: string, cephPool = 'rbd'): Promise<TestPool & { secret: string; user: string }> {
  const name = `${prefix}-${randomUUID().slice(0, 8)}`;
  const user = `libvirt-${name}`;
  const key = (await c.ceph('auth', 'get-or-create-key', `client.${user}`, 'mon', 'profile rbd', 'osd', `profile rbd pool=${cephPool}`)).trim();
  const secret = randomUUID();
  const host = /mon_host = v1:([\d.]+):(\d+)/.exec(await (await import('node:fs/promises')).readFile(c.conf, 'utf8'));
  if (!host) throw new Error(`no monitor address in ${c.conf}`);
  const xml = path.join(c.dir, `${name}-secret.xml`);
  await writeFile(xml, `<secret ephemeral='no' private='yes'><uuid>${secret}</uuid><usage type='ceph'><name>client.${user}</name></usage></secret>`);
  await virsh('secret-define', xml);
  await virsh('secret-set-value', '--secret', secret, '--base64', key);
  const poolXml = path.join(c.dir, `${name}-pool.xml`);
  await writeFile(poolXml, `<pool type='rbd'><name>${name}</name><source><name>${cephPool}</name><host name='${host[1]}' port='${host[2]}'/><auth username='${user}' type='ceph'><secret uuid='${secret}'/></auth></source></pool>`);
  await virsh('pool-define', poolXml);
  await virsh('pool-start', name);
  return {
    name,
    dir: c.dir,
    secret,
    user,
    volumes: () => poolVolumes(name),
    async remove() {
      await virshTry('pool-destroy', name);
      await virshTry('pool-undefine', name);
      await virshTry('secret-undefine', secret);
    },
  };
}

/**
 * A Ceph identity for the controller (--ceph-conf/--ceph-user/--ceph-keyring): a user of its own with
 * what docs/libvirt.md asks for (mon 'profile rbd', osd 'profile rbd pool=<pool>'), its keyring in the
 * cluster's directory. Never the admin key.
 */
export async function controllerIdentity(c: TestCeph, name: string, cephPool = 'rbd'): Promise<{ conf: string; user: string; keyring: string; flags: string[] }> {
  const user = `vpool-ctl-${name}-${randomUUID().slice(0, 6)}`;
  const keyring = path.join(c.dir, `ceph.client.${user}.keyring`);
  await c.ceph('auth', 'get-or-create', `client.${user}`, 'mon', 'profile rbd', 'osd', `profile rbd pool=${cephPool}`, '-o', keyring);
  return { conf: c.conf, user, keyring, flags: ['--ceph-conf', c.conf, '--ceph-user', user, '--ceph-keyring', keyring] };
}
