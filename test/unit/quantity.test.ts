import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseQuantity } from '../../src/units.js';

// Examples from Kubernetes' own documentation: "Resource Management for Pods and Containers" (meaning of
// memory: "128974848, 129e6, 129M, 128974848000m, 123Mi" and "400m ... is a request for 0.4 bytes") and the
// Quantity reference ("1.5 will be serialized as 1500m", "1.5Gi will be serialized as 1536Mi"), read as bytes.
describe("byte quantities in Kubernetes' grammar", () => {
  it('reads every form Kubernetes documents, exactly, a fraction of a byte rounded up as Value() does', () => {
    const table: [string, number][] = [
      ['128974848', 128974848],
      ['129e6', 129_000_000],
      ['129M', 129_000_000],
      ['128974848000m', 128974848],
      ['123Mi', 128974848],
      ['400m', 1],
      ['1500m', 2],
      ['1.5Gi', 1536 * 1024 * 1024],
      ['1536Mi', 1536 * 1024 * 1024],
      ['1k', 1000],
      ['1Ki', 1024],
      ['2Ti', 2 * 1024 ** 4],
      ['1Pi', 1024 ** 5],
      ['1P', 1e15],
      ['8E-3', 1],
      ['1e3', 1000],
      ['1E3', 1000],
      ['1e+3', 1000],
      ['25e-1', 3],
      ['+1Gi', 1024 ** 3],
      ['1.', 1],
      ['.5Ki', 512],
      ['0.1Gi', 107374183],
      ['0', 0],
      ['-0', 0],
      ['0.000', 0],
      ['7n', 1],
      ['7u', 1],
    ];
    for (const [text, bytes] of table) {
      assert.equal(parseQuantity(text), bytes, text);
    }
  });

  it('refuses what Kubernetes refuses, each with the reason', () => {
    const table: [string, RegExp][] = [
      ['1K', /"K" is not a suffix Kubernetes knows/],
      ['1KB', /"KB" is not a suffix/],
      ['1GB', /"GB" is not a suffix/],
      ['1gi', /"gi" is not a suffix/],
      ['1mi', /"mi" is not a suffix/],
      ['1 Gi', /" Gi" is not a suffix/],
      ['1Gi ', /"Gi " is not a suffix/],
      [' 1Gi', /must start with a number/],
      ['1toString', /"toString" is not a suffix/],
      ['1__proto__', /"__proto__" is not a suffix/],
      ['1.1.M', /".M" is not a suffix/],
      ['1+1.0M', /"\+1.0M" is not a suffix/],
      ['1e', /"e" is not a suffix/],
      ['1e1.5', /"e1.5" is not a suffix/],
      ['1Gie3', /"Gie3" is not a suffix/],
      ['-1Gi', /is negative/],
      ['-1', /is negative/],
      ['8Ei', /too large/],
      ['1E', /too large/],
      ['1e16', /too large/],
      ['1e999999999999', /too large/],
    ];
    for (const [text, reason] of table) assert.throws(() => parseQuantity(text), (e: Error) => reason.test(e.message) && e.message.includes(JSON.stringify(text).slice(1, -1)), text);
  });

  it("refuses a quantity without a number, which Kubernetes' parser reads as 0: a size written so is a mistake", () => {
    for (const text of ['', '.', 'Gi', '+', '-', 'e3']) assert.throws(() => parseQuantity(text), /must start with a number/, JSON.stringify(text));
  });
});
