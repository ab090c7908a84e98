#!/usr/bin/env node
// kubectl-vpool as one file (dist/kubectl-plugin/kubectl-vpool): src/kubectl/plugin.ts and what it imports, bundled by
// esbuild (npm) into CommonJS, so it runs from any directory on PATH with Node.js 20 or later and nothing else.
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

// Its own directory, marked CommonJS: in this repository the project's "type": "module" would make Node
// read the extensionless file as an ES module; copied anywhere else on PATH it is CommonJS anyway.
const dir = 'dist/kubectl-plugin';
const outfile = `${dir}/kubectl-vpool`;
mkdirSync(dir, { recursive: true });
writeFileSync(`${dir}/package.json`, '{ "type": "commonjs" }\n');
await build({ entryPoints: ['src/kubectl/plugin.ts'], bundle: true, platform: 'node', target: 'node20', format: 'cjs', outfile, banner: { js: '#!/usr/bin/env node' }, logLevel: 'warning' });
chmodSync(outfile, 0o755);
