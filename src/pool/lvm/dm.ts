import { readdirSync, readFileSync } from 'node:fs';

/** device-mapper's name for an LV: VG and LV names with each '-' doubled, joined by '-'. */
export function dmName(vg: string, lv: string): string {
  return `${vg.replace(/-/g, '--')}-${lv.replace(/-/g, '--')}`;
}

/**
 * The kernel's dm device (dm-N) of an active LV, null when it has none (inactive), undefined when
 * the kernel's table cannot be read (then the caller must ask lvm). Read from
 * /sys/block/dm-*\/dm/name, with no lvm command and no udev.
 */
export function dmDeviceOf(vg: string, lv: string, sysBlock = '/sys/block'): string | null | undefined {
  const want = dmName(vg, lv);
  let entries: string[];
  try {
    entries = readdirSync(sysBlock).filter((e) => e.startsWith('dm-'));
  } catch {
    return undefined;
  }
  for (const e of entries) {
    try {
      if (readFileSync(`${sysBlock}/${e}/dm/name`, 'utf8').trim() === want) return e;
    } catch {
      // removed meanwhile
    }
  }
  return null;
}

/** The names of every dm device the kernel has now, or undefined when its table cannot be read. */
export function dmNames(sysBlock = '/sys/block'): Set<string> | undefined {
  let entries: string[];
  try {
    entries = readdirSync(sysBlock).filter((e) => e.startsWith('dm-'));
  } catch {
    return undefined;
  }
  const names = new Set<string>();
  for (const e of entries) {
    try {
      names.add(readFileSync(`${sysBlock}/${e}/dm/name`, 'utf8').trim());
    } catch {
      // removed meanwhile
    }
  }
  return names;
}
