import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { it } from 'node:test';
import { PROJECT_ROOT } from '../../src/csi/proto.js';
import { needsRoot } from '../helpers/driver.js';
import { startLibvirt } from '../helpers/libvirt.js';

// libvirt's `logical` pool runs lvcreate, which needs device-mapper: the suite runs inside the QEMU
// VM (test/vm/vm-run.sh) with its own libvirtd and one blank disk for the VG.
it('libvirt logical pool inside the QEMU VM (test/vm/libvirt-logical.vm-test.ts)', { ...needsRoot(), timeout: 10 * 60_000 }, async () => {
  await startLibvirt(); // packages, the libvirt-qemu user and qemu.conf, which the VM sees through the host's root
  const script = path.join(PROJECT_ROOT, 'test', 'vm', 'vm-run.sh');
  const inner = path.join(PROJECT_ROOT, 'dist', 'test', 'vm', 'libvirt-logical.vm-test.js');
  const vm = spawn('bash', [script, '--smp', '2', '--disk', '1G', '--mem', '2048', '--timeout', '480', '--', 'node', '--test', '--test-reporter=spec', inner], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  vm.stdout.on('data', (b: Buffer) => (out += b.toString()));
  vm.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const code = await new Promise<number | null>((resolve) => vm.on('exit', resolve));
  process.stdout.write(out.split('\n').map((l) => `    vm| ${l}`).join('\n') + '\n');
  assert.equal(code, 0, 'the suite inside the VM failed (its report is above)');
  assert.match(out, /ℹ fail 0/);
  assert.match(out, /ℹ pass 3\b/);
});
