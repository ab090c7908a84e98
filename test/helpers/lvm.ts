import { execFile } from 'node:child_process';
import { mkdtemp, rm, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { BIN } from './driver.js';
import { deviceMapperAvailable } from '../../src/pool/lvm/lvm-cli.js';

const execFileP = promisify(execFile);
/** lvm and losetup answer in seconds; a hung one fails its test instead of holding the file until the runner's timeout. */
const T = { timeout: 120_000, killSignal: 'SIGKILL' as const };

/** Sparse files attached as loop devices: disks for a test pool. */
export interface LoopDisks {
  dir: string;
  devices: string[];
  release(): Promise<void>;
}

export async function loopDisks(count: number, bytes: number): Promise<LoopDisks> {
  const dir = await mkdtemp('/var/tmp/vpool-disks-');
  const devices: string[] = [];
  for (let i = 0; i < count; i++) {
    const file = path.join(dir, `disk${i}.img`);
    await writeFile(file, '');
    await truncate(file, bytes);
    devices.push((await execFileP('losetup', ['--find', '--show', file], T)).stdout.trim());
  }
  return {
    dir,
    devices,
    async release() {
      for (const d of devices) await execFileP('losetup', ['-d', d], T).catch(() => undefined);
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** Runs `vpool-csi pool ...`; resolves with exit code, stdout and stderr (never rejects). */
export async function poolCmd(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(BIN, ['pool', ...args], T);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

const NOACT = ['--config', 'global{activation=0}'];

/** Removes a test VG whatever state it is in, and wipes the PV labels of its disks. */
export async function forgetVg(vg: string, devices: string[]): Promise<void> {
  const act = deviceMapperAvailable() ? [] : NOACT;
  await execFileP('vgremove', [...act, '-y', '-f', vg], T).catch(() => undefined);
  await execFileP('pvremove', [...act, '-y', '-ff', ...devices], T).catch(() => undefined);
}

export async function vgNames(): Promise<string[]> {
  const act = deviceMapperAvailable() ? [] : NOACT;
  const { stdout } = await execFileP('vgs', [...act, '--reportformat', 'json', '-o', 'vg_name'], T);
  return (JSON.parse(stdout) as { report: Array<{ vg: Array<{ vg_name: string }> }> }).report.flatMap((r) => r.vg.map((v) => v.vg_name));
}

export const uniqueVg = (prefix: string) => `${prefix}${process.pid}${Math.floor(Math.random() * 1e6)}`;
