import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { runForCall } from '../../src/call-context.js';
import { CommandError, onCommand, run, watch } from '../../src/exec.js';
import { KeyedLocks } from '../../src/locks.js';

describe('command runner', () => {
  it('passes arguments verbatim, never through a shell', async () => {
    const { stdout } = await run('printf', ['%s|', '$(id)', '`id`', 'a;b', '*']);
    assert.equal(stdout, '$(id)|`id`|a;b|*|');
  });
  it('puts the exit code and stderr in the error', async () => {
    await assert.rejects(run('sh', ['-c', 'echo boom >&2; exit 3']), (err: unknown) => err instanceof CommandError && err.exitCode === 3 && err.stderr.trim() === 'boom' && /exited 3: boom/.test(err.message));
  });
  it('treats listed exit codes as answers', async () => {
    assert.equal((await run('sh', ['-c', 'exit 2'], { okExitCodes: [2] })).exitCode, 2);
  });
  it('stops the command of a cancelled call, but lets an uninterruptible one finish', async () => {
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 150);
    const started = Date.now();
    await assert.rejects(runForCall(ac.signal, () => run('sleep', ['10'])), (err: unknown) => err instanceof CommandError && err.cancelled && !err.timedOut && /cancelled/.test(err.message));
    assert.ok(Date.now() - started < 5000, 'killed, not waited for');
    const late = new AbortController();
    setTimeout(() => late.abort(), 50);
    assert.equal((await runForCall(late.signal, () => run('sh', ['-c', 'sleep 0.4; echo done'], { uninterruptible: true }))).stdout, 'done\n');
    await assert.rejects(runForCall(late.signal, () => run('true', [])), (err: unknown) => err instanceof CommandError && err.cancelled, 'nothing starts for a call already cancelled');
  });
  it('a call cancelled while it waits for a lock stops waiting (ABORTED)', async () => {
    const locks = new KeyedLocks();
    let release!: () => void;
    const holder = locks.with(['volume/x'], () => new Promise<void>((r) => (release = r)));
    const ac = new AbortController();
    setTimeout(() => ac.abort(), 100);
    await assert.rejects(runForCall(ac.signal, () => locks.with(['volume/x'], async () => 'never')), /cancelled while an operation on volume\/x/);
    release();
    await holder;
    // The abandoned wait is granted and handed back at once, so the queue moves on.
    for (let i = 0; i < 10 && locks.busyKeys().length; i++) await new Promise((r) => setImmediate(r));
    assert.deepEqual(locks.busyKeys(), []);
  });
  it('kills a command at its timeout', async () => {
    const started = Date.now();
    await assert.rejects(run('sleep', ['10'], { timeoutMs: 200 }), (err: unknown) => err instanceof CommandError && err.timedOut && /timed out/.test(err.message));
    assert.ok(Date.now() - started < 5000);
  });
  it('gives a command no input, so a prompt fails fast instead of waiting for the timeout', async () => {
    const started = Date.now();
    const { stdout } = await run('sh', ['-c', 'read answer; echo "got:$answer:$?"'], { timeoutMs: 5000 });
    assert.equal(stdout.trim(), 'got::1');
    assert.ok(Date.now() - started < 2000);
  });
  it('reports a missing program clearly', async () => {
    await assert.rejects(run('/nonexistent/tool', []), (err: unknown) => err instanceof CommandError && /ENOENT/.test(err.message));
  });
  it('runs with a C locale and tells listeners how long each command took', async () => {
    const seen: Array<[string, boolean]> = [];
    onCommand((c, s, ok) => {
      assert.ok(s >= 0);
      seen.push([c, ok]);
    });
    assert.equal((await run('sh', ['-c', 'echo $LC_ALL'])).stdout.trim(), 'C');
    assert.deepEqual(seen, [['sh', true]]);
  });
});

describe('watched commands', () => {
  it('yields each line as it is printed, then null once the command ends', async () => {
    const w = watch('sh', ['-c', 'echo one; sleep 0.2; echo two'], { timeoutMs: 5000 });
    assert.equal(await w.next(), 'one');
    assert.equal(await w.next(), 'two');
    assert.equal(await w.next(), null);
    await w.stop();
  });

  it('is killed at its time bound, and stop() ends one that would run on', async () => {
    const t = performance.now();
    const bounded = watch('sleep', ['30'], { timeoutMs: 300 });
    assert.equal(await bounded.next(), null);
    assert.ok(performance.now() - t < 5000);
    const stopped = watch('sleep', ['30'], { timeoutMs: 60_000 });
    const pending = stopped.next();
    await stopped.stop();
    assert.equal(await pending, null);
  });
});
