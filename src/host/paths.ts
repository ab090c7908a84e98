import { lstat, mkdir, realpath } from 'node:fs/promises';
import path from 'node:path';
import { errno, invalid } from '../errors.js';

/**
 * Paths from the CO are where this privileged process mounts and deletes things, so each one is
 * pinned down before use: absolute, normalized, inside a directory the operator allowed (after
 * resolving symlinks in its parents), and not itself a symlink.
 */
export class PathPolicy {
  private constructor(private readonly roots: readonly string[]) {}

  static async create(roots: readonly string[]): Promise<PathPolicy> {
    const resolved: string[] = [];
    for (const r of roots) {
      await mkdir(r, { recursive: true });
      resolved.push(await realpath(r));
    }
    return new PathPolicy(resolved);
  }

  get allowedRoots(): readonly string[] {
    return this.roots;
  }

  /** The canonical form of a CO path; its parent must exist. */
  async resolve(field: string, p: string): Promise<string> {
    if (!p) throw invalid(`${field} is required`);
    if (p.includes('\0')) throw invalid(`${field} contains a NUL byte`);
    if (Buffer.byteLength(p) > 4096) throw invalid(`${field} is longer than 4096 bytes`);
    if (!path.isAbsolute(p)) throw invalid(`${field} ${JSON.stringify(p)} is not an absolute path`);
    const trimmed = p.length > 1 ? p.replace(/\/+$/, '') : p;
    if (path.normalize(trimmed) !== trimmed || trimmed.split('/').includes('..')) {
      throw invalid(`${field} ${JSON.stringify(p)} is not a normalized path`);
    }
    let parent: string;
    try {
      parent = await realpath(path.dirname(trimmed));
    } catch (err) {
      throw invalid(`${field}: the parent directory of ${JSON.stringify(p)} cannot be resolved (${errno(err) ?? err})`);
    }
    const full = path.join(parent, path.basename(trimmed));
    if (!this.roots.some((r) => full.startsWith(r + '/'))) {
      throw invalid(`${field} ${JSON.stringify(p)} is outside the directories this driver may use (${this.roots.join(', ')})`);
    }
    const st = await lstat(full).catch(() => null);
    if (st?.isSymbolicLink()) throw invalid(`${field} ${JSON.stringify(p)} is a symbolic link`);
    return full;
  }
}
