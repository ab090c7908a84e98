import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { after, before, describe, it } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { loadCsi } from '../../src/csi/proto.js';
import { BIN } from '../helpers/driver.js';
import { pollUntil } from '../helpers/libvirt.js';

/**
 * A long call seen from the client: a real gRPC server on a unix socket stands in for a driver busy
 * with a slow CreateVolume (it holds the call and never answers; it records whether the client
 * cancelled). The client shows that it waits, and Ctrl-C (a real one, typed on a pseudo-terminal)
 * or SIGTERM cancels the call and exits 130.
 */
describe('vpool-csi client: waiting on a long call, and Ctrl-C', () => {
  let dir = '';
  let server: grpc.Server;
  let socket = '';
  const cancelled: string[] = [];
  before(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'vpool-wait-'));
    socket = path.join(dir, 'csi.sock');
    server = new grpc.Server();
    server.addService(loadCsi().csi.v1.Controller.service, {
      CreateVolume: (call: grpc.ServerUnaryCall<{ name: string }, unknown>) => call.on('cancelled', () => cancelled.push(call.request.name)),
    } as unknown as grpc.UntypedServiceImplementation);
    await new Promise<void>((resolve, reject) => server.bindAsync(`unix://${socket}`, grpc.ServerCredentials.createInsecure(), (err) => (err ? reject(err) : resolve())));
  });
  after(async () => {
    server?.forceShutdown();
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const start = (command: string, args: string[]) => {
    const p = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    p.stdout.on('data', (d: Buffer) => (out += d.toString()));
    p.stderr.on('data', (d: Buffer) => (out += d.toString()));
    const exited = new Promise<number | null>((r) => p.on('exit', (code) => r(code)));
    return { p, output: () => out, exited };
  };

  it('on a terminal: a line redrawn each second with the time so far; Ctrl-C cancels the call and exits 130', async () => {
    const run = start('script', ['-qec', `stty cols 120; exec ${BIN} client --endpoint unix://${socket} create-volume --name slow-tty --size 1Gi`, '/dev/null']);
    await pollUntil(async () => (/create-volume: waiting for the driver, [0-9]+s so far \(Ctrl-C/.test(run.output()) ? true : undefined), 30_000, async () => `no waiting line: ${JSON.stringify(run.output())}`);
    run.p.stdin.write('\x03');
    assert.equal(await run.exited, 130);
    assert.match(run.output(), /vpool-csi: interrupted: create-volume was cancelled; .*running the same command again is safe/);
    await pollUntil(async () => (cancelled.includes('slow-tty') ? true : undefined), 10_000, async () => 'the server never saw the call cancelled');
  });

  it('in a log (not a terminal): a line every 10 s; SIGTERM cancels the call the same way (exit 143)', async () => {
    const run = start(BIN, ['client', '--endpoint', `unix://${socket}`, 'create-volume', '--name', 'slow-log', '--size', '1Gi']);
    await pollUntil(async () => (/^create-volume: waiting for the driver, 1[0-9]s so far/m.test(run.output()) ? true : undefined), 30_000, async () => `no waiting line: ${JSON.stringify(run.output())}`);
    assert.doesNotMatch(run.output(), /\r/, 'no redrawing in a log');
    run.p.kill('SIGTERM');
    assert.equal(await run.exited, 143, '128 + SIGTERM');
    await pollUntil(async () => (cancelled.includes('slow-log') ? true : undefined), 10_000, async () => 'the server never saw the call cancelled');
  });
});
