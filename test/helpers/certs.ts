import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';

const execFileP = promisify(execFile);
const openssl = (...args: string[]) => execFileP('openssl', args);

/**
 * A CA and node certificates as the chart makes them (the transfer name in the SAN), with openssl:
 * each node's directory holds ca.crt, tls.crt and tls.key, as --transfer-tls-dir reads them.
 */
export async function makeCa(dir: string, name: string): Promise<{ node(node: string): Promise<string> }> {
  await mkdir(dir, { recursive: true });
  const caKey = path.join(dir, `${name}-ca.key`);
  const caCrt = path.join(dir, `${name}-ca.crt`);
  await openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', caKey, '-out', caCrt, '-days', '2', '-subj', `/CN=${name}`);
  return {
    async node(node: string) {
      const out = path.join(dir, `${name}-${node}`);
      await mkdir(out, { recursive: true });
      const key = path.join(out, 'tls.key');
      const csr = path.join(out, 'tls.csr');
      const ext = path.join(out, 'ext.cnf');
      await writeFile(ext, 'subjectAltName=DNS:vpool-csi-transfer\nextendedKeyUsage=serverAuth,clientAuth\n');
      await openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', key, '-out', csr, '-subj', `/CN=${node}`);
      await openssl('x509', '-req', '-in', csr, '-CA', caCrt, '-CAkey', caKey, '-CAcreateserial', '-out', path.join(out, 'tls.crt'), '-days', '2', '-extfile', ext);
      await execFileP('cp', [caCrt, path.join(out, 'ca.crt')]);
      return out;
    },
  };
}
