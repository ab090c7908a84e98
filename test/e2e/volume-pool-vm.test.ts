import { it } from 'node:test';
import { needsRoot } from '../helpers/driver.js';
import { runSuiteInVm } from '../helpers/vm.js';

// Thin pools need device-mapper, which this kernel lacks: the VolumePool suite that makes and grows
// them runs inside the QEMU (TCG) VM, with three blank virtio disks for the pool.
it('VolumePools with thin pools inside the QEMU VM (test/vm/volume-pool.vm-test.ts)', { ...needsRoot(), timeout: 20 * 60_000 }, async () => {
  await runSuiteInVm(['--smp', '2', '--disk', '1G', '--disk', '1G', '--disk', '1G', '--mem', '1536', '--timeout', '900'], 'volume-pool.vm-test.js', 2);
});
