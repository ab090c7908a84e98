import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { onShutdown, runShutdownHooks } from '../../src/shutdown-hooks.js';

describe('shutdown hooks (work a stopping process must end: a backup job no call waits for)', () => {
  it('runs every registered hook, not one removed; a failing hook does not stop the others', async () => {
    const ran: string[] = [];
    const offA = onShutdown(async () => void ran.push('a'));
    const offB = onShutdown(async () => {
      ran.push('b');
      throw new Error('libvirtd is gone');
    });
    const offC = onShutdown(async () => void ran.push('c'));
    offC();
    await runShutdownHooks();
    assert.deepEqual(ran.sort(), ['a', 'b']);
    offA();
    offB();
  });

  it('is bounded: a hook that hangs does not keep the process past the bound', async () => {
    let settle: () => void = () => undefined;
    const off = onShutdown(() => new Promise<void>((r) => (settle = r)));
    const t0 = performance.now();
    await runShutdownHooks(200);
    const took = performance.now() - t0;
    assert.ok(took >= 150, `waited for the bound (${Math.round(took)} ms)`);
    settle();
    off();
  });
});
