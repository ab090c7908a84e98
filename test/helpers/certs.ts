import { execFile } from 'node:child_process';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
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

/**
 * A CA and certificates as the transfer signer writes them (URI SANs), with openssl: a node's names its
 * node and pod; `issueRouter` the snapshot router's role and its pod (no node).
 */
export async function uriPki(dir: string) {
  const issueUris = async (file: string, cn: string, uris: string[]) => {
    await writeFile(`${dir}/${file}.cnf`, `subjectAltName=${uris.map((u) => `URI:${u}`).join(',')}\nextendedKeyUsage=serverAuth,clientAuth\n`);
    await openssl('req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${dir}/${file}.key`, '-out', `${dir}/${file}.csr`, '-subj', `/CN=${cn}`);
    await openssl('x509', '-req', '-in', `${dir}/${file}.csr`, '-CA', `${dir}/ca.crt`, '-CAkey', `${dir}/ca.key`, '-CAcreateserial', '-out', `${dir}/${file}.crt`, '-days', '1', '-extfile', `${dir}/${file}.cnf`);
    return { key: await readFile(`${dir}/${file}.key`, 'utf8'), cert: await readFile(`${dir}/${file}.crt`, 'utf8') };
  };
  await openssl('req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-keyout', `${dir}/ca.key`, '-out', `${dir}/ca.crt`, '-days', '1', '-subj', '/CN=test-ca');
  return {
    ca: await readFile(`${dir}/ca.crt`, 'utf8'),
    issue: (node: string, uid: string) => issueUris(node, node, [`urn:vpool-csi:node:${node}`, `urn:vpool-csi:pod:vpool:plugin-${node}:${uid}`]),
    issueRouter: (pod: string, uid: string) => issueUris(`router-${pod}`, 'snapshot-router', ['urn:vpool-csi:role:snapshot-router', `urn:vpool-csi:pod:vpool:${pod}:${uid}`]),
  };
}
