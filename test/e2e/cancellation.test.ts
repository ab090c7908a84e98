import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadCsi } from '../../src/csi/proto.js';
import { mountCap } from '../helpers/csi.js';
import { finish, MiB, needsRoot, startDriver, tempDir } from '../helpers/driver.js';

const execFileP = promisify(execFile);
const SLEEP = '4242';
const sleeping = async () => (await execFileP('pgrep', ['-f', `^sleep ${SLEEP}$`]).then((r) => r.stdout.trim(), () => '')).split('\n').filter(Boolean);

// A call whose deadline passes stops its command: the real driver, a real gRPC deadline, and a
// losetup that hangs (a stand-in for a stuck device, put first on the driver's PATH) while a marker
// file exists.
describe('cancellation reaches the command', needsRoot(), () => {
  it('a NodeStageVolume past its deadline kills its hung command, and the retry succeeds', async () => {
    const bin = await tempDir('vpool-slowbin-');
    const marker = path.join(bin, 'hang');
    const real = (await execFileP('sh', ['-c', 'command -v losetup'])).stdout.trim();
    await writeFile(path.join(bin, 'losetup'), `#!/bin/sh\nif [ -e '${marker}' ]; then exec sleep ${SLEEP}; fi\nexec '${real}' "$@"\n`);
    await chmod(path.join(bin, 'losetup'), 0o755);
    // The hung command is losetup, which the driver runs only where it cannot make the loop ioctls
    // itself (VPOOL_NO_SYSCALLS=1 makes it so): what is shown is that a deadline reaches a child process.
    const d = await startDriver({ env: { PATH: `${bin}:${process.env.PATH}`, VPOOL_NO_SYSCALLS: '1' } });
    try {
      const cap = mountCap('ext4');
      const id = (await d.client.createVolume({ name: 'slow', capacity_range: { required_bytes: String(16 * MiB) }, volume_capabilities: [cap] })).volume!.volume_id;
      const staging = path.join(d.mntDir, 'staging', 'slow');
      await mkdir(staging, { recursive: true });
      await writeFile(marker, '');
      const node = new (loadCsi().csi.v1.Node)(`unix://${d.socket}`, grpc.credentials.createInsecure());
      const code = await new Promise<number | undefined>((resolve) =>
        node.NodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap }, { deadline: Date.now() + 1000 }, (err) => resolve(err?.code)),
      );
      node.close();
      assert.equal(code, grpc.status.DEADLINE_EXCEEDED);
      for (let i = 0; i < 50 && (await sleeping()).length; i++) await new Promise((r) => setTimeout(r, 100));
      assert.deepEqual(await sleeping(), [], 'the hung command was killed with its call');
      await new Promise((r) => setTimeout(r, 200));
      assert.ok(d.logs.some((l) => l.includes('"cancelled":true') && l.includes('losetup')), 'the driver logged the stopped command');
      await rm(marker);
      await d.client.nodeStageVolume({ volume_id: id, staging_target_path: staging, volume_capability: cap });
      await d.client.nodeUnstageVolume({ volume_id: id, staging_target_path: staging });
      await d.client.deleteVolume({ volume_id: id });
    } finally {
      await rm(marker, { force: true });
      assert.deepEqual(await finish(d), []);
      await rm(bin, { recursive: true, force: true });
    }
  });
});
