import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { it } from 'node:test';
import { PROJECT_ROOT } from '../../src/csi/proto.js';
import { needsRoot } from '../helpers/driver.js';

// The lvm data path needs device-mapper, which this kernel lacks: the suite runs inside a QEMU (TCG)
// VM booted from Debian's kernel (test/vm/vm-run.sh), with two blank virtio disks for the pool.
it('lvm data path inside the QEMU VM (test/vm/lvm-datapath.vm-test.ts)', { ...needsRoot(), timeout: 10 * 60_000 }, async () => {
  const script = path.join(PROJECT_ROOT, 'test', 'vm', 'vm-run.sh');
  const inner = path.join(PROJECT_ROOT, 'dist', 'test', 'vm', 'lvm-datapath.vm-test.js');
  const vm = spawn('bash', [script, '--smp', '2', '--disk', '4G', '--disk', '4G', '--disk', '1G', '--mem', '2048', '--timeout', '480', '--', 'node', '--test', '--test-reporter=spec', inner], {
    cwd: PROJECT_ROOT,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  vm.stdout.on('data', (b: Buffer) => (out += b.toString()));
  vm.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const code = await new Promise<number | null>((resolve) => vm.on('exit', resolve));
  // The inner runner's report, indented, so a failure shows which step broke.
  process.stdout.write(out.split('\n').map((l) => `    vm| ${l}`).join('\n') + '\n');
  assert.equal(code, 0, 'the suite inside the VM failed (its report is above)');
  assert.match(out, /ℹ fail 0/);
  assert.doesNotMatch(out, /ℹ pass 0\b/);
});
