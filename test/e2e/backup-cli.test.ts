import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { after, before, beforeEach, describe, it } from 'node:test';
import { blockCap, createVolume, paths, stageAndPublish, unpublishAndUnstage } from '../helpers/csi.js';
import { readAt, writeAt } from '../helpers/data.js';
import { BIN, MiB, needsRoot, pattern, type Driver } from '../helpers/driver.js';
import { startFakeSidecar, type FakeSidecar } from '../helpers/fake-snapshot-metadata-sidecar.js';
import { useOwnPool } from '../helpers/own-pool.js';

const execFileP = promisify(execFile);
const SIZE = 16 * MiB;
const cli = (args: string[]) => execFileP(BIN, args, { maxBuffer: 16 * MiB }).then(
  (r) => ({ ok: true, out: r.stdout, err: r.stderr }),
  (e: { stdout?: string; stderr?: string; code?: number }) => ({ ok: false, out: e.stdout ?? '', err: e.stderr ?? '', code: e.code }),
);

/**
 * `vpool-csi backup` as a backup application would run it: each snapshot's data read from a volume
 * restored from it (a raw block publish stands for the backup pod's attached claim), the blocks to read
 * from the SnapshotMetadata API: the driver's CSI socket, or the Kubernetes API through a FAKE
 * external-snapshot-metadata sidecar (test/helpers/fake-snapshot-metadata-sidecar.ts); then restored
 * onto a blank volume and compared byte for byte.
 */
describe('vpool-csi backup: full, incremental, restore, on a file pool on XFS', needsRoot(), () => {
  const pool = useOwnPool('xfs');
  let d: Driver;
  let dir: string;
  let sidecar: FakeSidecar;
  beforeEach(() => {
    d = pool.d;
  });
  before(async () => {
    dir = await mkdtemp('/var/tmp/vpool-backup-');
  });
  after(async () => {
    await sidecar?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  /** A volume (restored from `snapshot`, or blank) published as a raw block device, until `done`. */
  async function device(name: string, size: number, snapshot?: string) {
    const cap = blockCap();
    const vol = await createVolume(d, name, size, cap, snapshot ? { source: { snapshot } } : {});
    const p = await paths(d, vol.volume_id);
    await stageAndPublish(d, vol.volume_id, p, cap);
    return {
      path: p.target,
      done: async () => {
        await unpublishAndUnstage(d, vol.volume_id, p);
        await d.client.deleteVolume({ volume_id: vol.volume_id });
      },
    };
  }

  it('a full backup and two increments restore each snapshot byte for byte; increments hold only what changed; through the CSI socket and the Kubernetes API alike', async (t) => {
    const cap = blockCap();
    const vol = await createVolume(d, 'app', SIZE, cap);
    const p = await paths(d, vol.volume_id);
    await stageAndPublish(d, vol.volume_id, p, cap);
    const snaps: string[] = [];
    const devices: Array<{ done: () => Promise<void> }> = [];
    try {
      await writeAt(p.target, 0, pattern('a', 2 * MiB));
      await writeAt(p.target, 9 * MiB, pattern('b', MiB));
      snaps.push((await d.client.createSnapshot({ name: 's1', source_volume_id: vol.volume_id })).snapshot!.snapshot_id);
      await writeAt(p.target, 64 * 1024, pattern('c', 128 * 1024));
      await writeAt(p.target, 12 * MiB, pattern('d', 256 * 1024));
      snaps.push((await d.client.createSnapshot({ name: 's2', source_volume_id: vol.volume_id })).snapshot!.snapshot_id);
      await writeAt(p.target, 9 * MiB, pattern('e', 64 * 1024));
      await execFileP('blkdiscard', ['--offset', String(MiB), '--length', String(MiB), p.target]);
      snaps.push((await d.client.createSnapshot({ name: 's3', source_volume_id: vol.volume_id })).snapshot!.snapshot_id);

      const sources: Array<{ id: string; path: string; bytes: Buffer }> = [];
      for (const [i, s] of snaps.entries()) {
        const dev = await device(`src-${i}`, SIZE, s);
        devices.push(dev);
        sources.push({ id: s, path: dev.path, bytes: await readAt(dev.path, 0, SIZE) });
      }

      // Through the driver's socket: s1 in full, then s2 and s3 as increments.
      const viaCsi = path.join(dir, 'csi');
      for (const [i, s] of sources.entries()) {
        const r = await cli(['backup', 'take', '--endpoint', d.endpoint, '--snapshot-id', s.id, '--source', s.path, '--out', viaCsi, ...(i ? ['--base-id', sources[i - 1]!.id] : [])]);
        assert.ok(r.ok, r.err);
        assert.match(r.err, /done in/, 'the progress line ends the run');
      }
      const files = (await readdir(viaCsi)).sort();
      assert.equal(files.length, 3);
      const sizes = await Promise.all(files.map(async (f) => (await stat(path.join(viaCsi, f))).size));
      t.diagnostic(`backup files: ${files.map((f, i) => `${f.slice(0, 6)} ${sizes[i]} bytes`).join(', ')}`);
      assert.ok(sizes[0]! > 3 * MiB && sizes[0]! < 3.2 * MiB, 'the full backup holds the 3 MiB written');
      assert.ok(sizes[1]! < 0.5 * MiB, 'the first increment holds the 384 KiB changed, not the volume');
      assert.ok(sizes[2]! < 1.2 * MiB, 'the second increment holds the 64 KiB rewritten and the 1 MiB discarded');

      for (const [i, s] of sources.entries()) {
        const blank = await device(`restore-${i}`, SIZE);
        try {
          const r = await cli(['backup', 'restore', '--from', viaCsi, '--to', blank.path, '--upto', s.id]);
          assert.ok(r.ok, r.err);
          assert.ok((await readAt(blank.path, 0, SIZE)).equals(s.bytes), `the restore of ${s.id} is the snapshot byte for byte`);
        } finally {
          await blank.done();
        }
      }

      // Through the Kubernetes API: the FAKE sidecar authenticates the token and resolves VolumeSnapshot names.
      sidecar = await startFakeSidecar(dir, d.client);
      const token = path.join(dir, 'token');
      await writeFile(token, 'good-token');
      sidecar.tokens.set('good-token', ['apps']);
      sources.forEach((s, i) => sidecar.snapshots.set(`apps/snap-${i + 1}`, s.id));
      const viaApi = path.join(dir, 'api');
      const k8s = (i: number, extra: string[] = []) => ['backup', 'take', '--service', sidecar.address, '--ca', sidecar.caFile, '--token-file', token, '--namespace', 'apps', '--snapshot', `snap-${i + 1}`, '--snapshot-handle', sources[i]!.id, '--source', sources[i]!.path, '--out', viaApi, ...(i ? ['--base-id', sources[i - 1]!.id] : []), ...extra];
      assert.ok((await cli(k8s(0))).ok);
      // The next stream is cut after its first message: the backup asks again from the last offset it got.
      sidecar.cutAfter = 1;
      const resumed = await cli(k8s(1, ['--max-results', '1']));
      assert.ok(resumed.ok, resumed.err);
      assert.match(resumed.err, /broke off .*asking again from offset \d+/);
      assert.ok(sidecar.calls.filter((c) => c.name === 'snap-2').length >= 2 && sidecar.calls.filter((c) => c.name === 'snap-2').at(-1)!.from !== '0', 'resumed at an offset past 0');
      assert.ok((await cli(k8s(2))).ok);
      const blank = await device('restore-api', SIZE);
      try {
        assert.ok((await cli(['backup', 'restore', '--from', viaApi, '--to', blank.path])).ok);
        assert.ok((await readAt(blank.path, 0, SIZE)).equals(sources[2]!.bytes), 'restored through the Kubernetes API path: s3 byte for byte');
      } finally {
        await blank.done();
      }

      // Refusals, each touching nothing.
      const before = (await readdir(viaCsi)).sort();
      const refused = {
        noBase: await cli(['backup', 'take', '--endpoint', d.endpoint, '--snapshot-id', sources[2]!.id, '--source', sources[2]!.path, '--out', path.join(dir, 'empty'), '--base-id', sources[1]!.id]),
        twice: await cli(['backup', 'take', '--endpoint', d.endpoint, '--snapshot-id', sources[0]!.id, '--source', sources[0]!.path, '--out', viaCsi]),
      };
      await writeFile(token, 'stolen-token');
      const unauthenticated = await cli(k8s(0, ['--out', path.join(dir, 'other')]));
      assert.ok(!unauthenticated.ok && /UNAUTHENTICATED/.test(unauthenticated.err), unauthenticated.err);
      assert.ok(!refused.noBase.ok && /holds no .*take a full backup/.test(refused.noBase.err), refused.noBase.err);
      assert.ok(!refused.twice.ok && /holds .* already/.test(refused.twice.err), refused.twice.err);
      assert.deepEqual((await readdir(viaCsi)).sort(), before, 'nothing added, no temporary file left');
      assert.deepEqual((await readdir(path.join(dir, 'other')).catch(() => [])).filter((f) => f.endsWith('.vbk') || f.endsWith('.tmp')), []);

      // A damaged increment: the restore refuses before it writes a byte.
      const damaged = path.join(viaCsi, files[1]!);
      const bytes = await readFile(damaged);
      bytes[bytes.length - 100] ^= 0xff;
      await writeFile(damaged, bytes);
      const target = await device('restore-damaged', SIZE);
      try {
        const r = await cli(['backup', 'restore', '--from', viaCsi, '--to', target.path]);
        assert.ok(!r.ok && /checksum/.test(r.err), r.err);
        assert.ok((await readAt(target.path, 0, SIZE)).equals(Buffer.alloc(SIZE)), 'the target untouched');
      } finally {
        await target.done();
      }
    } finally {
      for (const dev of devices) await dev.done();
      await unpublishAndUnstage(d, vol.volume_id, p);
      for (const s of snaps) await d.client.deleteSnapshot({ snapshot_id: s });
      await d.client.deleteVolume({ volume_id: vol.volume_id });
    }
  });
});
