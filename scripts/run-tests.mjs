#!/usr/bin/env node
// Runs every compiled test file with node's test runner (Node 20 has no glob in --test).
import { readdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.join(process.cwd(), 'dist', 'test');
const files = [];
const walk = (dir) => {
  for (const name of readdirSync(dir).sort()) {
    const p = path.join(dir, name);
    if (statSync(p).isDirectory()) walk(p);
    else if (name.endsWith('.test.js')) files.push(p);
  }
};
walk(root);
const filter = process.argv[2];
const selected = filter ? files.filter((f) => f.includes(filter)) : files;
if (selected.length === 0) {
  console.error('no test files found under dist/test');
  process.exit(1);
}
// A bound on every test, so a hang fails the run instead of eating CI's time.
const res = spawnSync(process.execPath, ['--test', '--test-reporter=spec', '--test-timeout=1800000', ...selected], { stdio: 'inherit' });
process.exit(res.status ?? 1);
