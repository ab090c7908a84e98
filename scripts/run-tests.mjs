#!/usr/bin/env node
// Runs every compiled test file with node's test runner (Node 20 has no glob in --test), in two lanes
// at once: the suites that run inside a QEMU VM, and everything else on the host.
//
// Why two lanes: the VM suites are TCG-bound (minutes of emulated CPU each) and the host suites spend
// most of their time waiting on disks, fsync and daemons, so side by side they take about as long as
// the longer of the two instead of their sum. They share nothing a test could trip over: a VM sees the
// host's root read-only (its writes go to its own tmpfs), has its own kernel, mounts, loop devices and
// device-mapper, and its disks are files in its own run directory. The one shared thing, the VM
// harness's cached kernel and initramfs, is made once here before either lane starts.
import { readdirSync, statSync } from 'node:fs';
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import path from 'node:path';

const root = path.join(process.cwd(), 'dist', 'test');
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
};
walk(root);
const filter = process.argv[2];
const selected = filter ? files.filter((f) => f.includes(filter)) : files;
if (selected.length === 0) {
  console.error('no test files found under dist/test');
  process.exit(1);
}

// The files whose tests boot test/vm/vm-run.sh's VM (they call runSuiteInVm). libvirt-node-vm is not
// one: it runs a domain under the host's test libvirtd, which host suites use too.
const VM_SUITES = [
  'transfer-vm', 'transfer-pit-vm', 'snapshot-backup-lvm-vm', 'lvm-vm', 'io-limits-vm', 'lvm-tiers-vm', 'volume-pool-vm', 'libvirt-logical-vm',
];
const vmRank = (f) => VM_SUITES.indexOf(path.basename(f, '.test.js'));
const vmLane = selected.filter((f) => vmRank(f) >= 0).sort((x, y) => vmRank(x) - vmRank(y));
const hostLane = selected.filter((f) => vmRank(f) < 0);

const root_ = process.getuid?.() === 0;
if (vmLane.length > 0 && root_) {
  // Made once, before the lanes race for it (apt-get, the kernel and initramfs cache).
  const setup = spawnSync('bash', [path.join('test', 'vm', 'vm-run.sh'), '--setup-only'], { stdio: 'inherit' });
  if (setup.status !== 0) console.error(`vm-run.sh --setup-only exited ${setup.status}: the VM suites will say why`);
}

// A bound on every test, so a hang fails the run instead of eating CI's time.
// One file at a time in each lane (on more cores node would run several: VMs beside VMs).
const args = (list) => ['--test', '--test-concurrency=1', '--test-reporter=spec', '--test-timeout=1800000', ...list];

const children = [];
/** Runs one lane; its lines go out whole, prefixed when another lane runs beside it. */
function lane(name, list, prefix) {
  if (list.length === 0) return Promise.resolve({ name, code: 0, ms: 0 });
  const t0 = Date.now();
  const child = spawn(process.execPath, args(list), { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  for (const stream of [child.stdout, child.stderr]) {
    createInterface({ input: stream }).on('line', (l) => process.stdout.write(`${prefix}${l}\n`));
  }
  return new Promise((resolve) => child.on('close', (code, signal) => resolve({ name, code: code ?? (signal ? 1 : 0), ms: Date.now() - t0 })));
}

const both = vmLane.length > 0 && hostLane.length > 0;
const running = [lane('host', hostLane, ''), lane('vm', vmLane, both ? '[vm lane] ' : '')];
// A CI cancel (SIGTERM) or Ctrl-C reaches the lanes, whose tests stop their VMs and daemons.
for (const sig of ['SIGTERM', 'SIGINT']) process.on(sig, () => { for (const c of children) c.kill(sig); });
const results = await Promise.all(running);
for (const r of results) if (r.ms > 0) console.log(`run-tests: ${r.name} lane ${r.code === 0 ? 'passed' : `FAILED (exit ${r.code})`} in ${(r.ms / 1000).toFixed(0)} s`);
process.exit(results.some((r) => r.code !== 0) ? 1 : 0);
