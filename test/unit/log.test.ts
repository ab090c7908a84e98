import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { log, setLogLevel } from '../../src/log.js';

function captured(fn: () => void): string[] {
  const lines: string[] = [];
  const write = process.stderr.write;
  process.stderr.write = ((chunk: string) => (lines.push(chunk), true)) as typeof process.stderr.write;
  try {
    fn();
  } finally {
    process.stderr.write = write;
  }
  return lines;
}

describe('log', () => {
  it('writes one JSON object a line on stderr: meta, level, message, timestamp; below the level nothing', () => {
    setLogLevel('info');
    const lines = captured(() => {
      log.info('rpc', { method: 'CreateVolume', ms: 1.5 });
      log.debug('hidden');
    });
    assert.equal(lines.length, 1);
    assert.ok(lines[0].endsWith('\n') && !lines[0].slice(0, -1).includes('\n'));
    const o = JSON.parse(lines[0]) as Record<string, unknown>;
    assert.deepEqual({ ...o, timestamp: undefined }, { method: 'CreateVolume', ms: 1.5, level: 'info', message: 'rpc', timestamp: undefined });
    assert.ok(!Number.isNaN(Date.parse(String(o.timestamp))));
  });

  it('keeps an error\'s message, writes bigints, cuts cycles, and refuses an unknown level', () => {
    const cyclic: Record<string, unknown> = { a: 1 };
    cyclic.self = cyclic;
    const [l] = captured(() => log.warn('x', { error: new Error('boom'), n: 10n, cyclic }));
    assert.deepEqual(JSON.parse(l).error, 'boom');
    assert.equal(JSON.parse(l).n, '10');
    assert.equal(JSON.parse(l).cyclic.self, '[circular]');
    assert.throws(() => setLogLevel('verbose'), /error, warn, info or debug/);
  });
});
