import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import path from 'node:path';
import { PROJECT_ROOT } from '../../src/csi/proto.js';

/**
 * Runs a compiled node:test file inside the QEMU VM (test/vm/vm-run.sh: Debian's kernel, with
 * device-mapper, and the host's root) and asserts its report: the exit code, no failure, and as
 * many passes as expected. The report is echoed, indented, so a failure shows which step broke.
 */
export async function runSuiteInVm(vmArgs: string[], suite: string, passes: number): Promise<void> {
  const script = path.join(PROJECT_ROOT, 'test', 'vm', 'vm-run.sh');
  const inner = path.join(PROJECT_ROOT, 'dist', 'test', 'vm', suite);
  // An emulated VM beside the host's suites (scripts/run-tests.mjs) is a machine whose disks are slow to
  // answer when nothing is wrong: a PV's header read gets 30 s before the plugins count it as hung.
  const env = { ...process.env, VPOOL_PV_READ_TIMEOUT_MS: process.env.VPOOL_PV_READ_TIMEOUT_MS ?? '30000' };
  const vm = spawn('bash', [script, ...vmArgs, '--env', 'VPOOL_PV_READ_TIMEOUT_MS', '--', 'node', '--test', '--test-reporter=spec', inner], { cwd: PROJECT_ROOT, stdio: ['ignore', 'pipe', 'pipe'], env });
  let out = '';
  vm.stdout.on('data', (b: Buffer) => (out += b.toString()));
  vm.stderr.on('data', (b: Buffer) => (out += b.toString()));
  const code = await new Promise<number | null>((resolve) => vm.on('exit', resolve));
  process.stdout.write(out.split('\n').map((l) => `    vm| ${l}`).join('\n') + '\n');
  assert.equal(code, 0, 'the suite inside the VM failed (its report is above)');
  assert.match(out, /ℹ fail 0/);
  assert.match(out, new RegExp(`ℹ pass ${passes}\\b`));
}
