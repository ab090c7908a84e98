// Alone in its module: the CLI's clients need it without loading the server and every handler behind it.

/** `unix:///run/csi.sock`, `unix:/run/csi.sock` or a bare absolute path → the socket path. */
export function socketPath(endpoint: string): string {
  const p = endpoint.replace(/^unix:\/\//, '').replace(/^unix:/, '');
  if (!p.startsWith('/')) throw new Error(`--endpoint must be unix:///absolute/path (got ${endpoint})`);
  // Longer paths do not fit sockaddr_un: the bind would take a truncated name and the socket be lost.
  if (Buffer.byteLength(p) > 107) throw new Error(`--endpoint ${p} is ${Buffer.byteLength(p)} bytes long; a unix socket path is at most 107`);
  return p;
}
