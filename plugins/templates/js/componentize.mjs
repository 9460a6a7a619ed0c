// Turns a JavaScript module into a ferry plugin component with
// componentize-js, through its JS API (the `jco componentize` command line
// is not needed).
//
//   node componentize.mjs <source.js> <wit dir> <out.wasm>
//
// The source may import other modules by relative path; they are bundled
// into the component, which embeds the StarlingMonkey engine (about 12 MB).
import { componentize } from '@bytecodealliance/componentize-js';
import { spawnSync } from 'node:child_process';
import { rename, writeFile } from 'node:fs/promises';

const [sourcePath, witPath, out] = process.argv.slice(2);
if (!out) {
  console.error('usage: node componentize.mjs <source.js> <wit dir> <out.wasm>');
  process.exit(2);
}

// componentize-js reports a syntax error as "failed to parse JS source"
// without saying where; node's own check does.
if (spawnSync(process.execPath, ['--check', sourcePath], { stdio: 'inherit' }).status !== 0) {
  process.exit(1);
}

const { component } = await componentize({
  sourcePath,
  witPath,
  worldName: 'plugin',
  // ferry offers no wasi:http, so `http` and `fetch-event` must go.
  // Without `random`, Math.random() has a fixed seed: a mapping stays a pure
  // function of its event. `clocks` stays: without it Date.now() would be
  // the build time, with it the sandbox's clock, frozen at the epoch (0).
  // `stdio` stays: an uncaught exception's message and stack reach
  // ferry's log and the `crashed` error.
  disableFeatures: ['http', 'fetch-event', 'random'],
});

// Write then rename, so that a failed build never leaves a truncated
// component and a running ferry watching the file sees one atomic change.
await writeFile(`${out}.tmp`, component);
await rename(`${out}.tmp`, out);
