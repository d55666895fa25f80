// Rebuilds dist/ and fails if the result differs from what was on disk, so a
// commit that changes web/src without the rebuilt dist/ is caught (the server
// embeds dist/zim.js).
import { spawnSync } from 'node:child_process';
import { readdirSync, readFileSync, existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = join(dirname(fileURLToPath(import.meta.url)), '..');
const dist = join(web, 'dist');

const snapshot = () => {
  const files = new Map();
  if (existsSync(dist)) {
    for (const name of readdirSync(dist).sort()) {
      files.set(name, readFileSync(join(dist, name)));
    }
  }
  return files;
};

const before = snapshot();
const built = spawnSync(process.execPath, [join(web, 'scripts', 'build.mjs')], { stdio: 'inherit' });
if (built.status !== 0) {
  console.error('check-dist: the build failed');
  process.exit(1);
}
const after = snapshot();
const differ = [];
for (const name of new Set([...before.keys(), ...after.keys()])) {
  const a = before.get(name);
  const b = after.get(name);
  if (a === undefined) differ.push(`${name}: new (not on disk before the build)`);
  else if (b === undefined) differ.push(`${name}: no longer built`);
  else if (!a.equals(b)) differ.push(`${name}: differs`);
}
if (differ.length > 0) {
  console.error('check-dist: web/dist is out of date with web/src:');
  for (const line of differ) console.error(`  ${line}`);
  console.error('run `npm run build` in web/ and commit web/dist');
  process.exit(1);
}
console.log(`check-dist: web/dist is up to date (${after.size} files)`);
