import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { probePool } from '../../src/pool/probe-once.js';
import { Proc } from '../../src/pool/libvirt/rpc/protocol.js';
import { RpcLibvirt } from '../../src/pool/libvirt/rpc/rpc-libvirt.js';
import type { XdrWriter } from '../../src/pool/libvirt/rpc/xdr.js';
import { FakeLibvirtd, type FakeCall } from '../helpers/fake-libvirtd.js';

const poolRef = (w: XdrWriter, name: string) => w.string(name).fixed(Buffer.alloc(16, 7));
/** A caller that gives up after `ms` (the livenessprobe sidecar's timeout, a CSI call's deadline). */
const giveUpAfter = (p: Promise<void>, ms: number) => Promise.race([p.then(() => 'answered' as const), new Promise<'gave up'>((r) => setTimeout(() => r('gave up'), ms))]);

describe('the pool is probed once at a time, whoever asks meanwhile', () => {
  it('callers at once share one probe, its failure included; the next caller after it settles asks again', async () => {
    let asked = 0;
    let fail: ((err: Error) => void) | undefined;
    const backend = {
      probe: () => {
        asked++;
        return new Promise<void>((_, reject) => (fail = reject));
      },
    };
    const callers = Array.from({ length: 5 }, () => probePool(backend).then(() => 'ok', (e: Error) => e.message));
    assert.equal(asked, 1);
    fail!(new Error('pool gone'));
    assert.deepEqual(await Promise.all(callers), Array(5).fill('pool gone'));
    void probePool(backend).catch(() => undefined);
    assert.equal(asked, 2);
    fail!(new Error('done'));
  });

  // The libvirt side is the FAKE libvirtd of test/helpers/fake-libvirtd.ts (libvirtd's wire protocol; it
  // answers or holds each call as the test says): a real libvirtd cannot be made to hold one call.
  describe('against a libvirtd that does not answer pool-info (the FAKE libvirtd)', () => {
    let dir: string;
    before(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-probe-once-'));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    it('Probes that give up leave one pool-info call in libvirtd, not one each: the connection\'s other call slots stay free', async () => {
      const s = path.join(dir, 'libvirt.sock');
      const held: FakeCall[] = [];
      const fake = await FakeLibvirtd.start(s, (call) => {
        if (call.proc === Proc.StoragePoolLookupByName) call.client.send(call.client.reply(call, (w) => poolRef(w, 'p')));
        else if (call.proc === Proc.StoragePoolGetInfo) held.push(call);
        else if (call.proc === Proc.ConnectGetHostname) call.client.send(call.client.reply(call, (w) => w.string('host')));
      });
      const rpc = new RpcLibvirt('qemu:///system', s, { timeoutMs: 60_000 });
      // What LibvirtPool.probe() asks of a directory pool.
      const backend = { probe: async () => void (await rpc.poolInfo('p')) };
      try {
        // Ten Probes, each given up on (the connection takes four calls at once: asked anew, the fifth on would queue).
        for (let i = 0; i < 10; i++) assert.equal(await giveUpAfter(probePool(backend), 30), 'gave up');
        assert.equal(held.length, 1, `${held.length} pool-info calls reached libvirtd`);
        // A call that serves volumes still gets a slot at once.
        assert.equal(await Promise.race([rpc.hostname(), new Promise((r) => setTimeout(() => r('no slot'), 5_000))]), 'host');
        // libvirtd answers: the Probe asked meanwhile has that answer, and the next one asks again.
        const c = held.shift()!;
        c.client.send(c.client.reply(c, (w) => w.u32(2).u64(10).u64(5).u64(5)));
        assert.equal(await giveUpAfter(probePool(backend), 10_000), 'answered');
        assert.equal(held.length, 0);
        void probePool(backend).catch(() => undefined);
        const end = Date.now() + 10_000;
        while (held.length === 0 && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
        assert.equal(held.length, 1, 'the Probe after the answer asked libvirtd again');
      } finally {
        for (const c of held) c.client.send(c.client.reply(c, (w) => w.u32(2).u64(10).u64(5).u64(5)));
        rpc.close();
        await fake.stop();
      }
    });
  });
});
