import { it } from 'node:test';
import { needsRoot } from '../helpers/driver.js';
import { runSuiteInVm } from '../helpers/vm.js';

// pvmove needs device-mapper's mirror target, which this host lacks: the tier moves run inside the QEMU
// (TCG) VM, with three blank virtio disks (one slow, two fast).
it('lvm tier moves by pvmove inside the QEMU VM (test/vm/lvm-tiers.vm-test.ts)', { ...needsRoot(), timeout: 30 * 60_000 }, async () => {
  await runSuiteInVm(['--smp', '2', '--disk', '1G', '--disk', '1G', '--disk', '1G', '--mem', '1536', '--timeout', '1500'], 'lvm-tiers.vm-test.js', 2);
});
