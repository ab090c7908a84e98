import { it } from 'node:test';
import { needsRoot } from '../helpers/driver.js';
import { runSuiteInVm } from '../helpers/vm.js';

// Thin pools, snapshots and suspending devices need device-mapper, which this kernel lacks: the suite
// runs inside a QEMU (TCG) VM booted from Debian's kernel (test/vm/vm-run.sh), two blank disks for the pool.
it('lvm snapshot metadata and group snapshots inside the QEMU VM (test/vm/snapshot-backup-lvm.vm-test.ts)', { ...needsRoot(), timeout: 35 * 60_000 }, async () => {
  await runSuiteInVm(['--smp', '2', '--disk', '4G', '--disk', '4G', '--mem', '2048', '--timeout', '1800'], 'snapshot-backup-lvm.vm-test.js', 7);
});
