import { it } from 'node:test';
import { needsRoot } from '../helpers/driver.js';
import { runSuiteInVm } from '../helpers/vm.js';

// The lvm data path needs device-mapper, which this kernel lacks: the suite runs inside a QEMU (TCG)
// VM booted from Debian's kernel (test/vm/vm-run.sh), with two blank virtio disks for the pool.
it('lvm data path inside the QEMU VM (test/vm/lvm-datapath.vm-test.ts)', { ...needsRoot(), timeout: 25 * 60_000 }, async () => {
  await runSuiteInVm(['--smp', '2', '--disk', '4G', '--disk', '4G', '--disk', '1G', '--mem', '2048', '--timeout', '1200'], 'lvm-datapath.vm-test.js', 20);
});
