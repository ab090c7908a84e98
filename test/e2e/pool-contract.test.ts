import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe } from 'node:test';
import { openBackend } from '../../src/cli/backends.js';
import { needsRoot } from '../helpers/driver.js';
import { controllerIdentity, rbdPool, startCeph } from '../helpers/ceph.js';
import { dirPool, startLibvirt, URI } from '../helpers/libvirt.js';
import { forgetVg, loopDisks, poolCmd, uniqueVg } from '../helpers/lvm.js';
import { poolContract } from '../helpers/pool-contract.js';

const MiB = 1024 * 1024;

// The one backend contract (test/helpers/pool-contract.ts), each backend opened through the same
// factory the driver uses, against the real thing: a file pool directory, lvm2 on loop devices
// (metadata only here: this kernel has no device-mapper; thin, since thick copies need activation),
// and a dir pool of a real libvirtd.
describe('backend contract: file', needsRoot(), () => {
  poolContract(async () => {
    const dir = await mkdtemp('/var/tmp/vpool-contract-file-');
    const opened = await openBackend({ kind: 'file', poolDir: dir, reserveBytes: 0 }, 'all');
    return { backend: opened.backend!, parameters: {}, copies: true, countsPromisedSpace: true, close: () => rm(dir, { recursive: true, force: true }), dataPath: async (id) => path.join(dir, 'volumes', `${id}.img`) };
  });
});

// Thin pools and copies need device-mapper: the contract runs for thin and thick lvm inside the VM (lvm-datapath.vm-test.ts).
describe('backend contract: lvm (thick, metadata only on this host)', needsRoot(), () => {
  poolContract(async () => {
    const disks = await loopDisks(1, 512 * MiB);
    const vg = uniqueVg('vpc');
    const init = await poolCmd('init', '--vg', vg, disks.devices[0]);
    if (init.code !== 0) throw new Error(`pool init: ${init.stderr}`);
    const opened = await openBackend({ kind: 'lvm', vg, reserveBytes: 0, overprovisionRatio: 1 }, 'all');
    return {
      backend: opened.backend!,
      parameters: { type: 'thick' },
      copies: false,
      countsPromisedSpace: true,
      close: async () => {
        await forgetVg(vg, disks.devices);
        await disks.release();
      },
      // Without device-mapper nothing is copied here (copies: false): no bytes to read.
      dataPath: async () => {
        throw new Error('no data path without device-mapper');
      },
    };
  });
});

for (const transport of ['rpc', 'virsh'] as const) {
  describe(`backend contract: libvirt over ${transport} (dir pool on a real libvirtd)`, needsRoot(), () => {
    poolContract(async () => {
      await startLibvirt();
      const pool = await dirPool(`vpool-contract-${transport}`);
      const opened = await openBackend({ kind: 'libvirt', uri: URI, transport, pool: pool.name, hypervisor: 'hv-contract', diskCache: 'none', attachTimeoutMs: 10_000, reserveBytes: 0 }, 'controller');
      return { backend: opened.backend!, parameters: {}, copies: true, countsPromisedSpace: false, close: () => pool.remove(), dataPath: async (id) => path.join(pool.dir, (await pool.volumes()).find((n) => n.startsWith(`${id}.`))!) };
    });
  });
}

// An rbd pool of a real single-node Ceph (test/ceph/ceph-start.sh) through the tests' libvirtd. The
// bytes are read and written through rbd-fuse (Debian's, librbd in a FUSE daemon: this kernel has no
// krbd), which shows each image of the Ceph pool as a file; copies are Ceph clones (clone-chains.ts).
// Made by libvirt, a volume written since its last copy is copied no more (libvirt's rbd backend:
// copiesOnce); made by librbd (the controller given a Ceph identity: ceph-store.ts), it is.
for (const withIdentity of [false, true]) {
  describe(`backend contract: libvirt rbd pool on a real Ceph${withIdentity ? ', the controller with a Ceph identity' : ''}`, needsRoot(), () => {
    poolContract(async () => {
      const execFileP = promisify(execFile);
      await startLibvirt();
      const ceph = await startCeph();
      const pool = await rbdPool(ceph, 'vpool-contract-rbd');
      const identity = withIdentity ? await controllerIdentity(ceph, 'contract') : undefined;
      if (withIdentity) {
        // Clone format 2 (Ceph's default once clients are mimic or newer): its images carry features librbd sets
        // itself, which a clone must not ask for again (librbd.ts, CLONE_FEATURES).
        await ceph.ceph('osd', 'set-require-min-compat-client', 'mimic');
        await ceph.ceph('config', 'set', 'client', 'rbd_default_clone_format', '2');
      }
      const mnt = await mkdtemp('/var/tmp/vpool-rbd-fuse-');
      await execFileP('rbd-fuse', ['-c', ceph.conf, '-p', 'rbd', mnt], { timeout: 60_000 });
      const ceph_ = identity ? { conf: identity.conf, user: identity.user, keyring: identity.keyring } : undefined;
      const opened = await openBackend({ kind: 'libvirt', uri: URI, transport: 'rpc', pool: pool.name, hypervisor: 'hv-contract', diskCache: 'none', attachTimeoutMs: 10_000, reserveBytes: 0, ceph: ceph_ }, 'controller');
      return {
        backend: opened.backend!,
        parameters: {},
        copies: true,
        copiesOnce: !withIdentity,
        countsPromisedSpace: false,
        release: () => execFileP('umount', [mnt]).then(() => undefined),
        close: async () => {
          await execFileP('umount', [mnt]).catch(() => undefined);
          await rm(mnt, { recursive: true, force: true });
          await pool.remove();
          await ceph.stop();
        },
        dataPath: async (id) => path.join(mnt, (await pool.volumes()).find((n) => n.startsWith(`${id}.`) && !n.endsWith('.retired'))!),
      };
    });
  });
}
