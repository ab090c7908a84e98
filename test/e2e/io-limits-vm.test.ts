import { it } from 'node:test';
import { needsRoot } from '../helpers/driver.js';
import { runSuiteInVm } from '../helpers/vm.js';

// LVs need device-mapper and cgroup v2's io controller, which this host lacks (it runs v1): the lvm
// I/O-limit suite runs inside the QEMU (TCG) VM, with two blank virtio disks for the pool.
it('lvm I/O limits in cgroup v2 inside the QEMU VM (test/vm/io-limits-lvm.vm-test.ts)', { ...needsRoot(), timeout: 10 * 60_000 }, async () => {
  await runSuiteInVm(['--smp', '2', '--disk', '1G', '--disk', '1G', '--mem', '1536', '--timeout', '480'], 'io-limits-lvm.vm-test.js', 2);
});
