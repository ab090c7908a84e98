import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { describe, it } from 'node:test';
import { blockCap } from '../helpers/csi.js';
import { BIN, type Driver, needsRoot, useDriver } from '../helpers/driver.js';

const execFileP = promisify(execFile);

/**
 * The completion scripts in real shells: bash's completion function called as bash's completion calls
 * it (COMP_WORDS, COMP_CWORD, COMPREPLY), with volume and snapshot IDs asked of a real driver.
 */
describe('vpool-csi completion', needsRoot(), () => {
  let d: Driver;
  useDriver((x) => (d = x));
  const env = () => ({ ...process.env, PATH: `${path.dirname(BIN)}:${process.env.PATH}` });
  const q = (w: string) => `'${w}'`;
  /**
   * bash: COMP_LINE and COMP_POINT as bash sets them, and COMP_WORDS split as bash splits them (at blanks
   * and at ':', COMP_WORDBREAKS: `unix:///x` is three words); zsh: COMP_WORDS as its bashcompinit gives them.
   */
  const complete = async (shell: 'bash' | 'zsh', words: string[]): Promise<string[]> => {
    const line = words.join(' ');
    const bashWords = words.flatMap((w) => w.split(/(:)/).filter((x, i, a) => x !== '' || a.length === 1));
    const setup =
      shell === 'bash'
        ? `source <(vpool-csi completion bash); COMP_LINE=${q(line)}; COMP_POINT=${line.length}; COMP_WORDS=(${bashWords.map(q).join(' ')}); COMP_CWORD=${bashWords.length - 1}`
        : `source <(vpool-csi completion zsh); emulate -L sh; setopt kshglob noshglob braceexpand; COMP_WORDS=(${words.map(q).join(' ')}); COMP_CWORD=${words.length - 1}`;
    const { stdout } = await execFileP(shell, ['-c', `${setup}; _vpool_csi; printf '%s\\n' "\${COMPREPLY[@]}"`], { env: env() });
    return stdout.split('\n').filter(Boolean).sort();
  };

  it('bash: commands, flags, flag values, and the IDs the running driver holds', async () => {
    const vol = (await d.client.createVolume({ name: 'comp-vol', capacity_range: { required_bytes: String(1 << 20) }, volume_capabilities: [blockCap()] })).volume!.volume_id;
    const snap = (await d.client.createSnapshot({ name: 'comp-snap', source_volume_id: vol })).snapshot!.snapshot_id;
    try {
      assert.deepEqual(await complete('bash', ['vpool-csi', 'cl']), ['client']);
      assert.deepEqual(await complete('bash', ['vpool-csi', 'client', '-o', 'json', 'list-v']), ['list-volumes']);
      assert.deepEqual(await complete('bash', ['vpool-csi', 'client', '-o', '']), ['json', 'name', 'table', 'wide', 'yaml']);
      assert.deepEqual(await complete('bash', ['vpool-csi', 'serve', '--backend', '']), ['file', 'libvirt', 'lvm']);
      assert.deepEqual(await complete('bash', ['vpool-csi', 'client', 'create-volume', '--fs-type', '']), ['ext4', 'xfs']);
      assert.deepEqual(await complete('bash', ['vpool-csi', 'client', '--endpoint', d.endpoint, 'get-volume', '--id', '']), [vol]);
      assert.deepEqual(await complete('bash', ['vpool-csi', 'client', '--endpoint', d.endpoint, 'delete-snapshot', '--id', '']), [snap]);
      assert.deepEqual(await complete('bash', ['vpool-csi', 'client', '--endpoint', `unix://${d.dir}/nobody.sock`, 'get-volume', '--id', '']), [], 'no driver: no IDs, and no error printed');
      assert.ok((await complete('bash', ['vpool-csi', 'client', 'list-volumes', '--'])).includes('--max'));
      assert.deepEqual(await complete('bash', ['vpool-csi', 'client', '--endpoint', d.endpoint, 'get-volume', '--id', 'vol-comp']), [vol], 'a typed prefix');
      assert.deepEqual(await complete('bash', ['vpool-csi', 'client', '--endpoint', d.endpoint, 'get-volume', '--id', 'vol-zz']), []);
      // A driver that accepts and never answers: the Tab press gives up within its 2 s.
      const hung = net.createServer(() => undefined);
      const hungSock = path.join(d.dir, 'hung.sock');
      await new Promise<void>((r) => hung.listen(hungSock, r));
      try {
        const t0 = Date.now();
        assert.deepEqual(await complete('bash', ['vpool-csi', 'client', '--endpoint', `unix://${hungSock}`, 'get-volume', '--id', '']), []);
        assert.ok(Date.now() - t0 < 8000, `took ${Date.now() - t0} ms`);
      } finally {
        hung.close();
      }
    } finally {
      await d.client.deleteSnapshot({ snapshot_id: snap });
      await d.client.deleteVolume({ volume_id: vol });
    }
  });

  it("zsh: the script loads through bashcompinit and registers vpool-csi; the same candidates as bash (zsh's compadd filters them by what is typed)", async () => {
    const { stdout } = await execFileP('zsh', ['-c', 'source <(vpool-csi completion zsh) && print -r -- "${_comps[vpool-csi]}"'], { env: env() });
    assert.match(stdout.trim(), /_bash_complete -F _vpool_csi|_vpool_csi/);
    assert.deepEqual(await complete('zsh', ['vpool-csi', 'client', '-o', '']), ['json', 'name', 'table', 'wide', 'yaml']);
    assert.deepEqual(await complete('zsh', ['vpool-csi', 'serve', '--backend', '']), ['file', 'libvirt', 'lvm']);
  });

  it('refuses a shell it has no script for, as a usage error', async () => {
    const r = await execFileP(BIN, ['completion', 'fish']).catch((e: { code: number; stderr: string }) => e);
    assert.equal((r as { code: number }).code, 2);
    assert.match((r as { stderr: string }).stderr, /completion fish: bash or zsh/);
  });
});
