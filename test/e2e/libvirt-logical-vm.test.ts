import { it } from 'node:test';
import { needsRoot } from '../helpers/driver.js';
import { startLibvirt } from '../helpers/libvirt.js';
import { runSuiteInVm } from '../helpers/vm.js';

// libvirt's `logical` pool runs lvcreate, which needs device-mapper: the suite runs inside the QEMU
// VM (test/vm/vm-run.sh) with its own libvirtd and one blank disk for the VG.
it('libvirt logical pool inside the QEMU VM (test/vm/libvirt-logical.vm-test.ts)', { ...needsRoot(), timeout: 20 * 60_000 }, async () => {
  await startLibvirt(); // packages, the libvirt-qemu user and qemu.conf, which the VM sees through the host's root
  await runSuiteInVm(['--smp', '2', '--disk', '1G', '--mem', '2048', '--timeout', '960'], 'libvirt-logical.vm-test.js', 4);
});
