import assert from 'node:assert/strict';
import type { GetMetadataAllocatedResponse__Output } from '../../gen/csi/v1/GetMetadataAllocatedResponse.js';

export type Range = [number, number];

/** The tuples of a stream, as [start, end) pairs; the stream's own rules checked on the way. */
export function rangesOf(messages: GetMetadataAllocatedResponse__Output[], capacity: number, maxPerMessage?: number): Range[] {
  assert.ok(messages.length >= 1, 'at least one message: it carries the capacity');
  const out: Range[] = [];
  for (const m of messages) {
    assert.equal(m.block_metadata_type, 'VARIABLE_LENGTH');
    assert.equal(m.volume_capacity_bytes, String(capacity));
    if (maxPerMessage) assert.ok(m.block_metadata.length <= maxPerMessage, `at most ${maxPerMessage} tuples a message`);
    for (const b of m.block_metadata) {
      const s = Number(b.byte_offset);
      const e = s + Number(b.size_bytes);
      assert.ok(e > s, 'size_bytes > 0');
      if (out.length) assert.ok(out.at(-1)![1] <= s, `ascending, apart: ${JSON.stringify(out.at(-1))} then ${JSON.stringify([s, e])}`);
      assert.ok(e <= capacity, 'within the volume');
      out.push([s, e]);
    }
  }
  return out;
}

export const bytesIn = (rs: readonly Range[]) => rs.reduce((n, [s, e]) => n + e - s, 0);
export const covered = (rs: readonly Range[], at: number) => rs.some(([s, e]) => s <= at && at < e);
