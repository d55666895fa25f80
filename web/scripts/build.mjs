// Builds dist/: type-checks src/ with tsc (which also writes the .d.ts files),
// keeps the .d.ts files reachable from dist/zim.d.ts, and bundles src/zim.ts
// into one self-contained ES module, dist/zim.js, with esbuild. The output has
// no timestamps or absolute paths: the same sources give the same bytes.
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, mkdirSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(web, 'dist');
const pkg = JSON.parse(readFileSync(join(web, 'package.json'), 'utf8'));

mkdirSync(dist, { recursive: true });
for (const name of readdirSync(dist)) {
  if (name.endsWith('.d.ts') || name === 'zim.js') {
    rmSync(join(dist, name));
  }
}

const tsc = join(web, 'node_modules', '.bin', process.platform === 'win32' ? 'tsc.cmd' : 'tsc');
if (!existsSync(tsc)) {
  console.error('build: node_modules is missing; run `npm ci` (or `npm install`) in web/ first');
  process.exit(1);
}
const checked = spawnSync(tsc, ['-p', join(web, 'tsconfig.json')], { stdio: 'inherit' });
if (checked.status !== 0) {
  console.error('build: tsc found errors');
  process.exit(checked.status ?? 1);
}

// Keep only the declaration files that dist/zim.d.ts needs.
const keep = new Set();
const visit = (name) => {
  if (keep.has(name)) return;
  keep.add(name);
  const text = readFileSync(join(dist, name), 'utf8');
  for (const m of text.matchAll(/from '\.\/([\w-]+)'/g)) {
    visit(`${m[1]}.d.ts`);
  }
};
visit('zim.d.ts');
for (const name of readdirSync(dist)) {
  if (name.endsWith('.d.ts') && !keep.has(name)) {
    rmSync(join(dist, name));
  }
}

await esbuild.build({
  entryPoints: [join(web, 'src', 'zim.ts')],
  outfile: join(dist, 'zim.js'),
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  charset: 'utf8',
  legalComments: 'none',
  sourcemap: false,
  minify: false,
  logLevel: 'warning',
  banner: {
    js: `// confab web SDK ${pkg.version} (ZIM 1.x web API). Built from web/src by \`npm run build\`: do not edit.`,
  },
});
console.log(`build: dist/zim.js and ${[...keep].sort().join(', ')}`);
