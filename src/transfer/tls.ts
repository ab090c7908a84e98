import { readFile } from 'node:fs/promises';
import path from 'node:path';

/** The name every node's transfer certificate carries: peers check the CA and this name, not an address. */
export const TRANSFER_SERVER_NAME = 'vpool-csi-transfer';

/** The driver's CA, and this node's certificate and key (PEM), as the chart mounts them. */
export interface TransferTls {
  ca: Buffer;
  cert: Buffer;
  key: Buffer;
}

/** ca.crt, tls.crt and tls.key from one directory (a Kubernetes TLS Secret with the CA beside it). */
export async function readTransferTls(dir: string): Promise<TransferTls> {
  const [ca, cert, key] = await Promise.all(['ca.crt', 'tls.crt', 'tls.key'].map((f) => readFile(path.join(dir, f))));
  return { ca, cert, key };
}
