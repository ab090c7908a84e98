import type { Libvirt, LibvirtTransport } from './libvirt-api.js';
import { localSocketFor, RpcLibvirt, type RpcLibvirtOptions } from './rpc/rpc-libvirt.js';
import { VirshLibvirt } from './virsh-libvirt.js';

/**
 * libvirt for a URI: the held RPC connection for the local system daemon (auto or rpc), virsh for
 * any other URI (auto or virsh). rpc with a URI it cannot serve is an error, not a quiet fallback.
 */
export function connectLibvirt(uri: string, transport: LibvirtTransport = 'auto', rpc: RpcLibvirtOptions = {}): Libvirt {
  const socket = transport === 'virsh' ? null : localSocketFor(uri);
  if (socket) return new RpcLibvirt(uri, socket, rpc);
  if (transport === 'rpc') throw new Error(`--libvirt-transport rpc speaks to the local system daemon only (qemu:///system), not ${uri}; use auto or virsh`);
  return new VirshLibvirt(uri);
}
