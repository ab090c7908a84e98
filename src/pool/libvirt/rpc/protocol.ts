// libvirt's RPC wire: program and procedure numbers, message framing, and the error libvirtd answers with.
import { DriverError } from '../../../errors.js';
import { XdrWriter } from './xdr.js';

// libvirt's src/rpc/virnetprotocol.x and src/remote/remote_protocol.x (9.0)
export const REMOTE_PROGRAM = 0x20008086;
export const REMOTE_VERSION = 1;
export const KEEPALIVE_PROGRAM = 0x6b656570;
export const KEEPALIVE_PING = 1;
export const KEEPALIVE_PONG = 2;
export const enum MessageType {
  Call = 0,
  Reply = 1,
  Message = 2,
}
export const enum Status {
  Ok = 0,
  Error = 1,
}

// virterror.h: the codes for "that object does not exist".
export const MISSING_CODES = new Set([42 /* NO_DOMAIN */, 49 /* NO_STORAGE_POOL */, 50 /* NO_STORAGE_VOL */, 99 /* DEVICE_MISSING */]);

/** An error libvirtd answered a call with: its virErrorNumber and its message. */
export class LibvirtRpcError extends DriverError {
  constructor(
    readonly code: number,
    readonly domain: number,
    message: string,
  ) {
    super(MISSING_CODES.has(code) ? 'not-found' : 'internal', message);
  }
  override name = 'LibvirtRpcError';

  get missing(): boolean {
    return MISSING_CODES.has(this.code);
  }
}

/** A call's arguments in XDR (empty for none). */
export function encodeArgs(args: ((w: XdrWriter) => void) | undefined): Buffer {
  const w = new XdrWriter();
  args?.(w);
  return Buffer.from(w.bytes());
}

export function frame(prog: number, proc: number, type: MessageType, serial: number, body: Buffer): Buffer {
  const w = new XdrWriter();
  w.u32(0).u32(prog).u32(prog === REMOTE_PROGRAM ? REMOTE_VERSION : 1).i32(proc).u32(type).u32(serial).u32(Status.Ok);
  const head = w.bytes();
  const buf = Buffer.concat([head, body]);
  buf.writeUInt32BE(buf.length, 0);
  return buf;
}

/** The remote program's procedure numbers this driver calls (remote_protocol.x). */
export const enum Proc {
  ConnectOpen = 1,
  ConnectGetHostname = 59,
  ConnectSupportsFeature = 60,
  DomainGetXmlDesc = 14,
  DomainLookupByName = 23,
  DomainLookupByUuid = 24,
  AuthList = 66,
  StoragePoolLookupByName = 84,
  StoragePoolGetInfo = 87,
  StoragePoolGetXmlDesc = 88,
  StorageVolCreateXml = 93,
  StorageVolDelete = 94,
  StorageVolGetXmlDesc = 99,
  StorageVolCreateXmlFrom = 125,
  DomainAttachDeviceFlags = 160,
  DomainDetachDeviceFlags = 161,
  DomainBlockResize = 251,
  DomainSetBlockIoTune = 252,
  StorageVolWipePattern = 259,
  StorageVolResize = 260,
  ConnectListAllDomains = 273,
  StoragePoolListAllVolumes = 282,
  ConnectDomainEventCallbackRegisterAny = 316,
  ConnectDomainEventCallbackDeregisterAny = 317,
  DomainEventCallbackDeviceRemoved = 333,
}
