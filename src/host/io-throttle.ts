import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';

/** Limits on one device for one cgroup; an absent figure is no limit. */
export interface DeviceIoLimits {
  readIOPS?: number;
  writeIOPS?: number;
  readBytesPerSecond?: number;
  writeBytesPerSecond?: number;
}

/** Why a pod's limits cannot be set (no cgroup, no I/O controller), as a sentence an operator acts on. */
export class CgroupProblem extends Error {}

export const MAJOR_MINOR = /^[0-9]{1,10}:[0-9]{1,10}$/;

export function checkDeviceNumber(device: string): void {
  if (!MAJOR_MINOR.test(device)) throw new Error(`${JSON.stringify(device)} is not a major:minor device number`);
}

/** How the kernel is told a pod cgroup's limits on a device: cgroup v2's io.max, or v1's blkio.throttle files. */
export interface IoThrottle {
  readonly version: 1 | 2;
  /** Sets every figure on the device (an absent one lifts that limit); nothing is written where the kernel holds them already. */
  set(dir: string, device: string, limits: DeviceIoLimits): Promise<void>;
  /** What the kernel holds for the device in the pod's cgroup. */
  get(dir: string, device: string): Promise<DeviceIoLimits>;
  /** Stops whatever the throttle keeps running (v1's watches); limits already set stay. */
  close(): void;
}

const V2_KEYS: ReadonlyArray<[keyof DeviceIoLimits, string]> = [
  ['readBytesPerSecond', 'rbps'],
  ['writeBytesPerSecond', 'wbps'],
  ['readIOPS', 'riops'],
  ['writeIOPS', 'wiops'],
];

export const sameLimits = (a: DeviceIoLimits, b: DeviceIoLimits): boolean => V2_KEYS.every(([k]) => a[k] === b[k]);

/**
 * cgroup v2: one write of the pod cgroup's io.max, all figures at once (all or nothing). v2 is
 * hierarchical: the pod's limit holds every container under it, whatever the runtime does with them.
 */
export class IoMax implements IoThrottle {
  readonly version = 2;

  async set(dir: string, device: string, limits: DeviceIoLimits): Promise<void> {
    checkDeviceNumber(device);
    const file = path.join(dir, 'io.max');
    if (!existsSync(file)) throw new CgroupProblem(`${dir} has no io.max: the io controller is not enabled for the kubelet's pod cgroups (cgroup.subtree_control of its parents)`);
    if (sameLimits(await this.get(dir, device), limits)) return;
    await writeFile(file, [device, ...V2_KEYS.map(([k, key]) => `${key}=${limits[k] ?? 'max'}`)].join(' '));
  }

  async get(dir: string, device: string): Promise<DeviceIoLimits> {
    const out: DeviceIoLimits = {};
    const line = (await readFile(path.join(dir, 'io.max'), 'utf8')).split('\n').find((l) => l.startsWith(`${device} `));
    for (const field of line?.split(' ').slice(1) ?? []) {
      const [key, value] = field.split('=');
      const k = V2_KEYS.find(([, name]) => name === key)?.[0];
      if (k && value !== 'max') out[k] = Number(value);
    }
    return out;
  }

  close(): void {}
}
