import { XMLParser } from 'fast-xml-parser';
import { DriverError } from '../../errors.js';
import { CommandError, run, watch, type Watch } from '../../exec.js';
import { storageFailure } from './libvirt-api.js';

/** What libvirt said when the object a call named does not exist: a not-found kind, so one that escapes is NOT_FOUND. */
export class LibvirtMissingError extends DriverError {
  constructor(message: string) {
    super('not-found', message);
  }
  override name = 'LibvirtMissingError';
}

// libvirt's own words for a missing object; virsh exits 1 for every failure, so stderr is all there is.
const MISSING = /failed to get (vol|domain|pool)|Storage volume not found|Domain not found|Storage pool not found|no domain with matching/i;

const parser = new XMLParser({
  ignoreAttributes: false,
  attributeNamePrefix: '@',
  parseTagValue: false,
  parseAttributeValue: false,
  isArray: (name) => ['disk', 'volume', 'host'].includes(name),
});

/** A parsed XML document: elements by name, attributes as `@name`, text as `#text` or a string. */
export type XmlNode = { [key: string]: XmlValue };
export type XmlValue = string | XmlNode | XmlNode[] | undefined;

export function parseXml(xml: string): XmlNode {
  return parser.parse(xml) as XmlNode;
}

export function child(node: XmlValue, name: string): XmlNode | undefined {
  if (!node || typeof node === 'string' || Array.isArray(node)) return undefined;
  const v = node[name];
  if (v === undefined || typeof v === 'string') return v === undefined ? undefined : { '#text': v };
  return Array.isArray(v) ? v[0] : v;
}

export function children(node: XmlValue, name: string): XmlNode[] {
  if (!node || typeof node === 'string' || Array.isArray(node)) return [];
  const v = node[name];
  if (v === undefined) return [];
  if (typeof v === 'string') return [{ '#text': v }];
  return Array.isArray(v) ? v : [v];
}

export function text(node: XmlValue, name?: string): string | undefined {
  const n = name ? (node && typeof node === 'object' && !Array.isArray(node) ? node[name] : undefined) : node;
  if (typeof n === 'string') return n;
  if (n && typeof n === 'object' && !Array.isArray(n) && typeof n['#text'] === 'string') return n['#text'];
  return undefined;
}

export function attr(node: XmlNode | undefined, name: string): string | undefined {
  const v = node?.[`@${name}`];
  return typeof v === 'string' ? v : undefined;
}

/** Escapes a value for an XML attribute or text; the values are validated already, this is the second fence. */
export function xmlEscape(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;').replace(/'/g, '&apos;');
}

/**
 * virsh through the one command runner: one connection per call (≈15-50 ms, the connection
 * dominates), argument arrays, a timeout, and libvirt's "no such object" turned into a sentinel.
 * Any URI libvirt accepts works: qemu:///system, qemu+ssh://host/system, qemu+tls://...
 */
export class Virsh {
  constructor(
    readonly uri: string,
    private readonly timeoutMs = 120_000,
  ) {}

  async run(args: string[], opts: { timeoutMs?: number } = {}): Promise<string> {
    try {
      return (await run('virsh', ['-q', '-c', this.uri, ...args], { timeoutMs: opts.timeoutMs ?? this.timeoutMs })).stdout;
    } catch (err) {
      if (err instanceof CommandError && MISSING.test(err.stderr)) throw new LibvirtMissingError(err.stderr.trim().split('\n').pop() ?? err.message);
      throw (err instanceof CommandError && storageFailure(err.stderr)) || err;
    }
  }

  /** Streams a domain's events of one type (`virsh event --loop`), one line each, for at most `timeoutMs`. */
  events(domain: string, event: string, timeoutMs: number): Watch {
    return watch('virsh', ['-q', '-c', this.uri, 'event', '--domain', domain, '--event', event, '--loop', '--timeout', String(Math.max(1, Math.ceil(timeoutMs / 1000)))], { timeoutMs: timeoutMs + 5_000 });
  }

  /** run(), but null when libvirt says the object does not exist. */
  async maybe(args: string[]): Promise<string | null> {
    try {
      return await this.run(args);
    } catch (err) {
      if (err instanceof LibvirtMissingError) return null;
      throw err;
    }
  }
}

/** `Key: value` lines (pool-info, dominfo) → a map. */
export function parseInfo(out: string): Record<string, string> {
  const info: Record<string, string> = {};
  for (const line of out.split('\n')) {
    const m = /^([^:]+):\s*(.*)$/.exec(line.trim());
    if (m) info[m[1].trim()] = m[2].trim();
  }
  return info;
}
