import { it } from 'node:test';
import { needsRoot } from '../helpers/driver.js';
import { runSuiteInVm } from '../helpers/vm.js';

// lvm pools need device-mapper, which this kernel lacks: the cross-node transfer with lvm on either
// side runs inside the QEMU (TCG) VM (test/vm/vm-run.sh), two blank disks for two VGs.
it('transfer with lvm pools inside the QEMU VM (test/vm/transfer-lvm.vm-test.ts)', { ...needsRoot(), timeout: 40 * 60_000 }, async () => {
  await runSuiteInVm(['--smp', '2', '--disk', '2G', '--disk', '2G', '--mem', '2048', '--timeout', '2100'], 'transfer-lvm.vm-test.js', 4);
});
