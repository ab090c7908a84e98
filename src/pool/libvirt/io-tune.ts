import { invalid } from '../../errors.js';
import { ioLimitsOf, IO_BURST_KEYS, IO_LIMIT_KEYS, type IoBurstKey, type IoLimitKey } from '../mutable-parameters.js';

/**
 * A volume's I/O limits as QEMU's block throttling holds them: libvirt's <iotune> fields of the disk
 * in the node VM (virDomainSetBlockIoTune's typed parameters, virsh blkdeviotune's options).
 */
export const TUNE_FIELDS: Readonly<Record<IoLimitKey | IoBurstKey, string>> = {
  readIOPS: 'read_iops_sec',
  writeIOPS: 'write_iops_sec',
  readBytesPerSecond: 'read_bytes_sec',
  writeBytesPerSecond: 'write_bytes_sec',
  readIOPSBurst: 'read_iops_sec_max',
  writeIOPSBurst: 'write_iops_sec_max',
  readBytesPerSecondBurst: 'read_bytes_sec_max',
  writeBytesPerSecondBurst: 'write_bytes_sec_max',
};

const BASE_OF: Readonly<Record<IoBurstKey, IoLimitKey>> = {
  readIOPSBurst: 'readIOPS',
  writeIOPSBurst: 'writeIOPS',
  readBytesPerSecondBurst: 'readBytesPerSecond',
  writeBytesPerSecondBurst: 'writeBytesPerSecond',
};

/** Every field with its value, 0 (libvirt's "no limit") where the volume has none: a set of all of them leaves nothing older behind. */
export function tuneOf(parameters: Record<string, string>): Record<string, number> {
  const limits = ioLimitsOf(parameters);
  return Object.fromEntries(Object.entries(TUNE_FIELDS).map(([key, field]) => [field, limits[key as IoLimitKey] ?? 0]));
}

/**
 * QEMU refuses a burst without its limit, or below it (throttle_is_valid): refused here with the
 * key's name, before anything is recorded, rather than by libvirt at the next attach.
 */
export function checkBursts(parameters: Record<string, string>): void {
  const limits = ioLimitsOf(parameters);
  for (const burst of IO_BURST_KEYS) {
    const max = limits[burst];
    if (max === undefined) continue;
    const base = limits[BASE_OF[burst]];
    if (base === undefined) throw invalid(`mutable_parameters: ${burst} needs ${BASE_OF[burst]} (a burst is how far above the limit the disk may go for a while)`);
    if (max < base) throw invalid(`mutable_parameters: ${burst}=${max} is below ${BASE_OF[burst]}=${base}; a burst is at least the limit`);
  }
}

/** Whether a disk's tune, as libvirt reports it, is what the volume's parameters say (fields it does not report are 0). */
export function tuneMatches(reported: Record<string, number> | undefined, parameters: Record<string, string>): boolean {
  const want = tuneOf(parameters);
  return Object.entries(want).every(([f, v]) => (reported?.[f] ?? 0) === v);
}

export const IO_TUNE_KEYS = [...IO_LIMIT_KEYS, ...IO_BURST_KEYS];
