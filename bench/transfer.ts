// A cross-node restore (bench for #13): a 1 GiB volume with half its bytes allocated, restored on
// node B from a snapshot on node A, beside a plain copy of the same allocated bytes over the same
// veth (a TCP stream, no TLS, file to file), each plugin in its own network namespace. Prints the
// throughput of both, the ratio, and the CPU time the two plugins spent per GiB sent. Not a test.
// Run as root: node dist/bench/transfer.js (BENCH_LOG=1 prints the plugins' transfer lines). The plugins get their
// certificates and authorize each read as in a cluster (test/helpers/transfer-nodes.ts: a FAKE API server, the real signer).
import { spawn } from 'node:child_process';
import { readFile, rm, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { blockCap } from '../test/helpers/csi.js';
import { tempDir } from '../test/helpers/driver.js';
import { transferNodes } from '../test/helpers/transfer-nodes.js';

const MiB = 1024 * 1024;
const SIZE = 1024 * MiB;
const RUNS = Number(process.env.BENCH_RUNS ?? 3);

/** CPU seconds (user + system) a process has used. */
async function cpuSeconds(pid: number): Promise<number> {
  const f = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1].split(' ');
  return (Number(f[11]) + Number(f[12])) / 100;
}

/** Writes `bytes` of data into a file in 1 MiB runs, every other MiB left a hole. */
async function halfAllocated(file: string): Promise<number> {
  const { open } = await import('node:fs/promises');
  const fh = await open(file, 'r+');
  let written = 0;
  try {
    const buf = Buffer.alloc(MiB);
    for (let at = 0; at < SIZE; at += 2 * MiB) {
      for (let i = 0; i < buf.length; i += 4) buf.writeUInt32LE(((at + i) ^ 0x9e3779b9) >>> 0, i);
      await fh.write(buf, 0, buf.length, at);
      written += buf.length;
    }
  } finally {
    await fh.close();
  }
  return written;
}

function runIn(wrap: string[], script: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const p = spawn(wrap[0], [...wrap.slice(1), process.execPath, '-e', script, ...args], { stdio: ['ignore', 'inherit', 'inherit'] });
    p.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`exit ${code}`))));
  });
}

async function main(): Promise<void> {
  const nodes = await transferNodes('vpb', { stallTimeout: '60s' });
  const { a, b, hosts } = nodes;
  const scratch = await tempDir('vpool-bench-copy-');
  try {
    const src = (await a.client.createVolume({ name: 'src', capacity_range: { required_bytes: String(SIZE) }, volume_capabilities: [blockCap()], parameters: {} })).volume!;
    const allocated = await halfAllocated(path.join(a.poolDir, 'volumes', `${src.volume_id}.img`));
    const snap = (await a.client.createSnapshot({ name: 'snap', source_volume_id: src.volume_id, parameters: {} })).snapshot!;
    // The plain copy's input: the same allocated bytes, dense.
    const dense = path.join(scratch, 'dense');
    await writeFile(dense, Buffer.alloc(0));
    {
      const { open } = await import('node:fs/promises');
      const from = await open(path.join(a.poolDir, 'snapshots', `${snap.snapshot_id}.img`), 'r');
      const to = await open(dense, 'w');
      const buf = Buffer.alloc(MiB);
      for (let at = 0; at < SIZE; at += 2 * MiB) {
        await from.read(buf, 0, MiB, at);
        await to.write(buf);
      }
      await from.close();
      await to.close();
    }
    const ours: number[] = [];
    const plain: number[] = [];
    const cpu: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const cpu0 = (await cpuSeconds(a.proc.pid!)) + (await cpuSeconds(b.proc.pid!));
      const t = performance.now();
      const v = await nodes.restore(`restored-${r}`, { snapshot: snap.snapshot_id }, { size: SIZE });
      ours.push((performance.now() - t) / 1000);
      cpu.push((await cpuSeconds(a.proc.pid!)) + (await cpuSeconds(b.proc.pid!)) - cpu0);
      await b.client.deleteVolume({ volume_id: v.volume_id });

      // The plain copy: one TCP stream over the same veth, read from a file on A, written to a file on B (synced, as B syncs the volume).
      const out = path.join(scratch, `out-${r}`);
      const sender = runIn(hosts.wrap(hosts.a.ns), "const net=require('net'),fs=require('fs');const s=net.createServer(c=>{fs.createReadStream(process.argv[1]).pipe(c);s.close()});s.listen(9900,process.argv[2])", [dense, hosts.a.addr]);
      await new Promise((res) => setTimeout(res, 300));
      const t2 = performance.now();
      await runIn(hosts.wrap(hosts.b.ns), "const net=require('net'),fs=require('fs');const o=fs.createWriteStream(process.argv[1]);net.connect(9900,process.argv[2]).pipe(o);o.on('finish',()=>{const fd=fs.openSync(process.argv[1],'r');fs.fdatasyncSync(fd)})", [out, hosts.a.addr]);
      plain.push((performance.now() - t2) / 1000);
      await sender;
      await rm(out, { force: true });
    }
    const median = (xs: number[]) => [...xs].sort((x, y) => x - y)[Math.floor(xs.length / 2)];
    const gib = allocated / 1024 ** 3;
    const oursRate = allocated / MiB / median(ours);
    const plainRate = allocated / MiB / median(plain);
    console.log(`\nCross-node restore of a 1 GiB volume with ${allocated / MiB} MiB allocated, over a veth between two network namespaces, ${RUNS} runs (medians)`);
    console.log(`restore on B (mutual TLS, sparse, SHA-256 checked, synced)   ${median(ours).toFixed(2)} s   ${oursRate.toFixed(0)} MiB/s`);
    console.log(`plain TCP copy of the same bytes, file to file (synced)         ${median(plain).toFixed(2)} s   ${plainRate.toFixed(0)} MiB/s`);
    console.log(`ratio ${(oursRate / plainRate).toFixed(2)} (target ≥ 0.80)   CPU of both plugins ${(median(cpu) / gib).toFixed(2)} s per GiB sent`);
    if (process.env.BENCH_LOG) for (const l of [...a.logs, ...b.logs]) if (/received a volume|sent a volume|CreateVolume/.test(l)) console.log(l.slice(0, 400));
    await a.client.deleteSnapshot({ snapshot_id: snap.snapshot_id });
    await a.client.deleteVolume({ volume_id: src.volume_id });
  } finally {
    await nodes.remove();
    await rm(scratch, { recursive: true, force: true });
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
