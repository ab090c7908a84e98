import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { runForCall } from '../../src/call-context.js';
import { DriverError } from '../../src/errors.js';
import { probePool } from '../../src/pool/probe-once.js';
import { Proc } from '../../src/pool/libvirt/rpc/protocol.js';
import { RpcLibvirt } from '../../src/pool/libvirt/rpc/rpc-libvirt.js';
import type { XdrWriter } from '../../src/pool/libvirt/rpc/xdr.js';
import { FakeLibvirtd, type FakeCall } from '../helpers/fake-libvirtd.js';

const poolRef = (w: XdrWriter, name: string) => w.string(name).fixed(Buffer.alloc(16, 7));
const running = (w: XdrWriter) => w.u32(2).u64(10).u64(5).u64(5);

/**
 * A caller as the CSI edge runs one (src/csi/rpc.ts): inside its call's context, whose signal aborts
 * at the call's deadline, here `ms` (the livenessprobe sidecar's 3 s, shortened).
 */
function callWithDeadline(ms: number, fn: () => Promise<void>): Promise<string> {
  const call = new AbortController();
  const timer = setTimeout(() => call.abort(), ms);
  return runForCall(call.signal, fn).then(
    () => 'answered',
    (err: unknown) => (err instanceof DriverError ? err.kind : String(err)),
  ).finally(() => clearTimeout(timer));
}

async function until(what: () => boolean, message: string): Promise<void> {
  const end = Date.now() + 10_000;
  while (!what()) {
    if (Date.now() > end) throw new Error(message);
    await new Promise((r) => setTimeout(r, 10));
  }
}

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

  it('a caller without a call of its own (/healthz) waits waitMs at most; the probe goes on', async () => {
    let answer: (() => void) | undefined;
    const backend = { probe: () => new Promise<void>((r) => (answer = r)) };
    await assert.rejects(probePool(backend, { waitMs: 20 }), (e: DriverError) => e.kind === 'unavailable' && /within 0.02 s/.test(e.message));
    const next = probePool(backend);
    answer!();
    await next;
  });

  // The libvirt side is the FAKE libvirtd of test/helpers/fake-libvirtd.ts (libvirtd's wire protocol; it
  // answers or holds each call as the test says): a real libvirtd cannot be made to hold one call.
  describe('against a libvirtd that does not answer pool-info (the FAKE libvirtd)', () => {
    let dir: string;
    let n = 0;
    before(async () => {
      dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-probe-once-'));
    });
    after(async () => {
      await rm(dir, { recursive: true, force: true });
    });

    async function withLibvirtd(fn: (rpc: RpcLibvirt, held: FakeCall[]) => Promise<void>): Promise<void> {
      const s = path.join(dir, `libvirt-${++n}.sock`);
      const held: FakeCall[] = [];
      const fake = await FakeLibvirtd.start(s, (call) => {
        if (call.proc === Proc.StoragePoolLookupByName) call.client.send(call.client.reply(call, (w) => poolRef(w, 'p')));
        else if (call.proc === Proc.StoragePoolGetInfo) held.push(call);
        else if (call.proc === Proc.ConnectGetHostname) call.client.send(call.client.reply(call, (w) => w.string('host')));
      });
      const rpc = new RpcLibvirt('qemu:///system', s, { timeoutMs: 60_000 });
      try {
        await fn(rpc, held);
      } finally {
        for (const c of held.splice(0)) c.client.send(c.client.reply(c, running));
        rpc.close();
        await fake.stop();
      }
    }

    it('Probes that run out of time leave one pool-info call in libvirtd, not one each: the connection\'s other call slots stay free', async () => {
      await withLibvirtd(async (rpc, held) => {
        // What LibvirtPool.probe() asks of a directory pool.
        const backend = { probe: async () => void (await rpc.poolInfo('p')) };
        // Ten Probes one after another, each ending at its deadline (the connection takes four calls at once).
        for (let i = 0; i < 10; i++) {
          assert.equal(await callWithDeadline(30, () => probePool(backend)), 'cancelled', `Probe ${i}`);
          if (i === 0) await until(() => held.length > 0, 'the first pool-info never reached libvirtd');
        }
        assert.equal(held.length, 1, `${held.length} pool-info calls reached libvirtd`);
        // A call that serves volumes still gets a slot at once.
        let late: NodeJS.Timeout | undefined;
        assert.equal(await Promise.race([rpc.hostname(), new Promise((r) => (late = setTimeout(() => r('no slot'), 5_000)))]), 'host');
        clearTimeout(late);
        // libvirtd answers: a Probe meanwhile has that answer; the one after it asks again.
        const c = held.shift()!;
        c.client.send(c.client.reply(c, running));
        assert.equal(await callWithDeadline(5_000, () => probePool(backend)), 'answered');
        assert.equal(held.length, 0);
        const next = callWithDeadline(5_000, () => probePool(backend));
        await until(() => held.length === 1, 'the Probe after the answer did not ask libvirtd again');
        const d = held.shift()!;
        d.client.send(d.client.reply(d, running));
        assert.equal(await next, 'answered');
      });
    });

    it('one caller\'s end does not fail the others sharing the question', async () => {
      await withLibvirtd(async (rpc, held) => {
        const backend = { probe: async () => void (await rpc.poolInfo('p')) };
        const short = callWithDeadline(30, () => probePool(backend));
        const long = callWithDeadline(30_000, () => probePool(backend));
        assert.equal(await short, 'cancelled');
        await until(() => held.length === 1, 'the pool-info never reached libvirtd');
        const c = held.shift()!;
        c.client.send(c.client.reply(c, running));
        assert.equal(await long, 'answered');
      });
    });
  });
});
