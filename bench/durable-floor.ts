// The least a durable create can cost on a disk, measured with the bare file calls in this process,
// so that the file pool's figures can be read as a ratio to the limit in the same run:
// - a durable record: open(O_CREAT|O_EXCL), write, fsync, close, rename into place, fsync of the directory;
// - a sparse image: open(O_CREAT|O_EXCL), ftruncate, close;
// - a durable create: both, one after the other (what a create must at least do to survive a crash).
// The directory fsyncs here are not shared between callers: the kernel's journal batches them, and
// the driver's own sharing is what the ratio is meant to show.
import { open, mkdtemp, rename, rm } from 'node:fs/promises';
import path from 'node:path';
import { median } from './measure.js';

/** p50 ms, one caller at a time. */
export interface FloorParts {
  recordMs: number;
  sparseMs: number;
  createMs: number;
}

async function sparse(file: string, bytes: number): Promise<void> {
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.truncate(bytes);
  } finally {
    await fh.close();
  }
}

async function durableRecord(tmp: string, file: string, data: string): Promise<void> {
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await rename(tmp, file);
  const d = await open(path.dirname(file), 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

async function timedMs(fn: () => Promise<void>): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t) / 1e6;
}

/** A directory on the disk to be compared, where bare creates are made; removed by `remove`. */
export class FloorDir {
  private n = 0;
  private readonly record: string;
  private constructor(
    readonly dir: string,
    private readonly bytes: number,
  ) {
    this.record = JSON.stringify({ id: 'x'.repeat(40), name: 'pvc-00000000-0000-0000-0000-000000000000', capacityBytes: bytes, createdAt: Date.now(), parameters: {} });
  }

  static async make(near: string, bytes = 1024 * 1024): Promise<FloorDir> {
    return new FloorDir(await mkdtemp(path.join(near, 'floor-')), bytes);
  }

  /** One durable create, bare: a sparse image, then a durable record beside it. */
  async create(): Promise<void> {
    const i = this.n++;
    await sparse(path.join(this.dir, `c${i}.img`), this.bytes);
    await durableRecord(path.join(this.dir, `c${i}.tmp`), path.join(this.dir, `c${i}.json`), this.record);
  }

  /** p50 ms of each part alone and of the whole, one caller, `rounds` times. */
  async parts(rounds: number): Promise<FloorParts> {
    const rec: number[] = [];
    const img: number[] = [];
    const both: number[] = [];
    for (let r = 0; r < rounds; r++) {
      const i = this.n++;
      rec.push(await timedMs(() => durableRecord(path.join(this.dir, `r${i}.tmp`), path.join(this.dir, `r${i}.json`), this.record)));
      img.push(await timedMs(() => sparse(path.join(this.dir, `s${i}.img`), this.bytes)));
      both.push(await timedMs(() => this.create()));
    }
    return { recordMs: median(rec), sparseMs: median(img), createMs: median(both) };
  }

  /** Durable creates per second with `callers` at once, `creates` in all (as the driver's fill). */
  async rate(creates: number, callers: number): Promise<number> {
    let left = creates;
    const t = performance.now();
    await Promise.all(
      Array.from({ length: callers }, async () => {
        while (left > 0) {
          left--;
          await this.create();
        }
      }),
    );
    return (creates * 1000) / (performance.now() - t);
  }

  async remove(): Promise<void> {
    await rm(this.dir, { recursive: true, force: true });
  }
}
