import { it } from 'node:test';
import { needsRoot } from '../helpers/driver.js';
import { runSuiteInVm } from '../helpers/vm.js';

// LVs need device-mapper and cgroup v2's io controller, which this host lacks (it runs v1): the file and lvm
// I/O-limit suite runs inside the QEMU (TCG) VM, with two blank virtio disks for the lvm pool and one for the file pool's filesystem.
it('file and lvm I/O limits in cgroup v2 inside the QEMU VM (test/vm/io-limits.vm-test.ts)', { ...needsRoot(), timeout: 30 * 60_000 }, async () => {
  await runSuiteInVm(['--smp', '2', '--disk', '1G', '--disk', '1G', '--disk', '2G', '--mem', '1536', '--timeout', '1500'], 'io-limits.vm-test.js', 5);
});
