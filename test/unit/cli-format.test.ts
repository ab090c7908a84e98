import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { formatBytes, formatBytesPair, parseQuantity } from '../../src/units.js';
import { age, humanDuration } from '../../src/cli/view/age.js';
import { renderTable, type Column } from '../../src/cli/view/table.js';
import { protoJson, rfc3339 } from '../../src/cli/view/proto-json.js';
import { describeFailure, EXIT, transportProblem } from '../../src/cli/call-errors.js';
import { chooseFormat } from '../../src/cli/view/output.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
const TiB = 1024 * GiB;
const PiB = 1024 * TiB;

describe('sizes in binary units, as Kubernetes writes them', () => {
  it('whole units exact, one decimal otherwise, the largest unit reached', () => {
    const cases: Array<[number, string]> = [
      [0, '0'],
      [1, '1'],
      [1023, '1023'],
      [KiB, '1Ki'],
      [1536, '1.5Ki'],
      [768 * MiB, '768Mi'],
      [GiB, '1Gi'],
      [2.5 * TiB, '2.5Ti'],
      [69.4 * GiB, '69.4Gi'],
      [74470055936, '69.4Gi'],
      [5 * TiB, '5Ti'],
      [10 * PiB, '10Pi'],
      [1024 * PiB, '1Ei'],
      [GiB - 1, '1Gi'], // 1023.99...Mi rounds to 1024.0Mi: that is 1Gi
      [GiB + 1, '1Gi'], // one byte more than 1Gi: not whole, rounds to 1.0, written 1Gi
      [1.25 * GiB, '1.3Gi'],
    ];
    for (const [n, s] of cases) assert.equal(formatBytes(n), s, `${n}`);
  });
  it('every short form reads back within a twentieth of a unit (parseQuantity accepts what formatBytes writes)', () => {
    for (const n of [1536, 768 * MiB, 2.5 * TiB, 74470055936, 7 * PiB]) {
      const back = parseQuantity(formatBytes(n));
      assert.ok(Math.abs(back - n) / n < 0.05, `${n} → ${formatBytes(n)} → ${back}`);
    }
  });
  it('two figures that would read alike in an error also carry their bytes', () => {
    assert.deepEqual(formatBytesPair(74470055936, 5 * TiB), ['69.4Gi', '5Ti']);
    assert.deepEqual(formatBytesPair(GiB - MiB, GiB), ['1023Mi', '1Gi']);
    assert.deepEqual(formatBytesPair(GiB + 1, GiB + 2), [`1Gi (${GiB + 1} bytes)`, `1Gi (${GiB + 2} bytes)`]);
  });
});

describe("ages as kubectl's AGE column writes them (apimachinery duration.HumanDuration)", () => {
  it('at every boundary', () => {
    const s = 1000;
    const m = 60 * s;
    const h = 60 * m;
    const d = 24 * h;
    const y = 365 * d;
    const cases: Array<[number, string]> = [
      [-3 * s, '<invalid>'],
      [-500, '0s'],
      [0, '0s'],
      [119 * s, '119s'],
      [2 * m, '2m'],
      [3 * m + 20 * s, '3m20s'],
      [10 * m, '10m'],
      [179 * m, '179m'],
      [3 * h, '3h'],
      [5 * h + 30 * m, '5h30m'],
      [8 * h, '8h'],
      [47 * h, '47h'],
      [2 * d, '2d'],
      [3 * d + 4 * h, '3d4h'],
      [8 * d, '8d'],
      [729 * d, '729d'],
      [2 * y + 30 * d, '2y30d'],
      [8 * y, '8y'],
    ];
    for (const [ms, text] of cases) assert.equal(humanDuration(ms), text, `${ms} ms`);
    assert.equal(age(undefined, 0), '<unknown>');
    assert.equal(age(new Date('nonsense'), 0), '<unknown>');
  });
});

describe('tables as kubectl prints them', () => {
  interface R {
    id: string;
    size: string;
  }
  const cols: Column<R>[] = [
    { header: 'ID', cell: (r) => r.id, shrink: true },
    { header: 'SIZE', cell: (r) => r.size },
    { header: 'NOTE', cell: () => 'x', wide: true },
  ];
  const rows = [
    { id: 'vol-a-0123456789abcdef', size: '1Gi' },
    { id: `vol-${'long-'.repeat(9)}name-fedcba9876543210`, size: '10Pi' },
  ];
  it('three spaces apart, upper-case headers, no trailing blanks; -o wide adds its columns; --no-headers drops the header', () => {
    const t = renderTable(cols, rows, { headers: true, wide: false });
    const pad = ' '.repeat(rows[1]!.id.length - 'vol-a-0123456789abcdef'.length);
    assert.equal(t.text, [`ID${' '.repeat(rows[1]!.id.length - 2)}   SIZE`, `vol-a-0123456789abcdef${pad}   1Gi`, `${rows[1]!.id}   10Pi`, ''].join('\n'));
    assert.match(renderTable(cols, rows, { headers: true, wide: true }).text.split('\n')[0]!, /SIZE   NOTE$/);
    assert.doesNotMatch(renderTable(cols, rows, { headers: false, wide: false }).text, /SIZE/);
  });
  it('on a narrow terminal an ID is cut in its middle (its start and unique end kept), never in -o wide', () => {
    const t = renderTable(cols, rows, { headers: true, wide: false, width: 40 });
    assert.ok(t.shortened);
    for (const line of t.text.trimEnd().split('\n')) assert.ok(line.length <= 40, line);
    assert.match(t.text, /\nvol-long-long-lo…fedcba9876543210   10Pi\n/);
    const wide = renderTable(cols, rows, { headers: true, wide: true, width: 40 });
    assert.ok(!wide.shortened);
    assert.ok(wide.text.includes(rows[1]!.id));
  });
});

describe("CSI responses in proto3's JSON mapping (-o json, -o yaml)", () => {
  it('lowerCamelCase names, RFC 3339 times, wrappers as values, no oneof markers or unset messages; map keys as they are', () => {
    const got = protoJson({
      snapshot: { snapshot_id: 's', size_bytes: '0', creation_time: { seconds: '1796393783', nanos: 435000000 }, ready_to_use: true, group_snapshot_id: '' },
      volume: { volume_context: { fsType: 'ext4', 'csi.storage.k8s.io/pvc/name': 'x' }, content_source: { snapshot: { snapshot_id: 's' }, volume: null, type: 'snapshot' } },
      maximum_volume_size: { value: '1024' },
      minimum_volume_size: null,
    });
    assert.deepEqual(got, {
      snapshot: { snapshotId: 's', sizeBytes: '0', creationTime: '2026-12-04T14:16:23.435Z', readyToUse: true, groupSnapshotId: '' },
      volume: { volumeContext: { fsType: 'ext4', 'csi.storage.k8s.io/pvc/name': 'x' }, contentSource: { snapshot: { snapshotId: 's' } } },
      maximumVolumeSize: '1024',
    });
    assert.equal(rfc3339(0, 0), '1970-01-01T00:00:00Z');
    assert.equal(rfc3339(0, 1), '1970-01-01T00:00:00.000000001Z');
    assert.equal(rfc3339(0, 1000), '1970-01-01T00:00:00.000001Z');
  });
});

describe('a failed call as a person acts on it', () => {
  const status = (code: number, details: string) => Object.assign(new Error(details), { code, details });
  it("turns grpc-js's connection errors into what to check, exit 4", () => {
    const noFile = describeFailure(status(14, 'No connection established. Last error: Error: connect ENOENT /run/x.sock. Resolution note: '), '/run/x.sock');
    assert.deepEqual([noFile.message, noFile.exitCode], ['no driver listening at /run/x.sock: is `vpool-csi serve` running, and is --endpoint (or $VPOOL_CSI_ENDPOINT) its socket? (ENOENT)', EXIT.unavailable]);
    assert.match(transportProblem('No connection established. Last error: Error: connect ECONNREFUSED /s', '/s')!, /has stopped.*ECONNREFUSED/);
    assert.match(transportProblem('No connection established. Last error: Error: connect EACCES /s', '/s')!, /not allowed.*socket-group.*EACCES/);
    assert.equal(transportProblem('the pool is not ready: starting', '/s'), null, "the driver's own UNAVAILABLE is its message");
  });
  it("keeps the driver's message, names the code, and exits by kind", () => {
    assert.deepEqual(describeFailure(status(5, 'volume v does not exist'), '/s').exitCode, EXIT.notFound);
    assert.deepEqual(describeFailure(status(3, 'bad'), '/s').exitCode, EXIT.usage);
    const full = describeFailure(status(8, 'pool /p has 69.4Gi free (after the reserve), 5Ti asked'), '/s');
    assert.deepEqual([full.message, full.exitCode], ['pool /p has 69.4Gi free (after the reserve), 5Ti asked (RESOURCE_EXHAUSTED)', EXIT.error]);
    assert.match(full.raw!, /^gRPC status 8 RESOURCE_EXHAUSTED: "pool/);
    assert.equal(describeFailure(status(14, 'the pool is not ready: starting'), '/s').exitCode, EXIT.unavailable);
  });
  it('a table for a person at a terminal, JSON for a program; a format no one knows is a usage error', () => {
    assert.equal(chooseFormat(undefined, true), 'table');
    assert.equal(chooseFormat(undefined, false), 'json');
    assert.equal(chooseFormat('yaml', true), 'yaml');
    assert.throws(() => chooseFormat('xml', true), /table, wide, json, yaml, name/);
  });
});
