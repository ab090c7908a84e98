import { it } from 'node:test';
import { needsRoot } from '../helpers/driver.js';
import { runSuiteInVm } from '../helpers/vm.js';

// What an lvm node reads when it sends a volume, and the sweep of unfinished LVs at a receiver's
// start, need device-mapper, which this kernel lacks: inside the QEMU (TCG) VM (test/vm/vm-run.sh),
// two blank disks for two VGs. Its own file, so the two lvm transfer suites are each well within the runner's bound on a file.
it('lvm sends of one point in time and the sweep of unfinished LVs inside the QEMU VM (test/vm/transfer-lvm-pit.vm-test.ts)', { ...needsRoot(), timeout: 40 * 60_000 }, async () => {
  await runSuiteInVm(['--smp', '2', '--disk', '2G', '--disk', '2G', '--mem', '2048', '--timeout', '2100'], 'transfer-lvm-pit.vm-test.js', 4);
});
