#!/usr/bin/env node
// The commands a person types (`vpool-csi client`, `status`, `completion`, `--version`, `--help`) from
// the compiled code bundled by esbuild (npm) into dist/cli/: the project's own modules and commander in a
// few files instead of some forty modules each resolved, read and compiled on its own, which was most of
// what such a start cost beyond node's own (bench/footprint.ts). Every other package stays in
// node_modules, loaded as the driver loads it. Each dynamic import stays its own chunk, loaded by the
// command that needs it. The launcher (./vpool-csi) runs `serve` and the other commands from dist/src.
import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import { build } from 'esbuild';

const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
const external = Object.keys(pkg.dependencies)
  .filter((name) => name !== 'commander')
  .flatMap((name) => [name, `${name}/*`]);
rmSync('dist/cli', { recursive: true, force: true });
const { metafile } = await build({
  entryPoints: ['dist/src/main.js'],
  bundle: true,
  splitting: true,
  platform: 'node',
  target: 'node20',
  format: 'esm',
  outdir: 'dist/cli',
  external,
  // commander is CommonJS: in an ES module its require() of node's own modules needs one.
  banner: { js: "import { createRequire as __vpoolRequire } from 'node:module'; const require = __vpoolRequire(import.meta.url);" },
  logLevel: 'warning',
  metafile: true,
});
// Which modules each file of the bundle holds: test/e2e/footprint.test.ts reads what a command loads through it.
const inputs = Object.fromEntries(Object.entries(metafile.outputs).map(([file, o]) => [file.replace(/^dist\/cli\//, ''), Object.keys(o.inputs)]));
writeFileSync('dist/cli/modules.json', JSON.stringify(inputs));
