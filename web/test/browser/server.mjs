// Starts the real confab server for the browser tests: `confab serve --listen
// 127.0.0.1:0 --data <fresh temp dir>`, with the binary from CONFAB_BIN (default
// ../target/debug/confab relative to web/). Reads the URL from the banner line
// `confab X.Y.Z serving on http://127.0.0.1:PORT`. stop() always kills it.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const web = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const DEFAULT_BIN = resolve(web, '..', 'target', 'debug', 'confab');

/** The server binary, or an Error saying how to get one. */
export function serverBinary() {
  const bin = process.env.CONFAB_BIN || DEFAULT_BIN;
  if (!existsSync(bin)) {
    throw new Error(
      `the confab server binary is missing: ${bin}\n` +
        'build it with `cargo build -p confab-cli` in the repository root, ' +
        'or point CONFAB_BIN at a confab binary',
    );
  }
  return bin;
}

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

export async function startServer({ timeoutMs = 30_000 } = {}) {
  const bin = serverBinary();
  const data = mkdtempSync(join(tmpdir(), 'confab-web-test-'));
  const env = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('CONFAB_')) env[k] = v;
  }
  env.CONFAB_LOG = process.env.CONFAB_TEST_LOG || 'warn';
  const child = spawn(bin, ['serve', '--listen', '127.0.0.1:0', '--data', data], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let stderr = '';
  child.stderr.setEncoding('utf8');
  child.stderr.on('data', (chunk) => {
    stderr = (stderr + chunk).slice(-20_000);
  });
  let exited = null;
  const exit = new Promise((res) => child.once('exit', (code, signal) => {
    exited = { code, signal };
    running.delete(child);
    res(exited);
  }));
  const stop = async () => {
    if (exited === null) {
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exit;
      clearTimeout(timer);
    }
    rmSync(data, { recursive: true, force: true });
  };
  try {
    const url = await new Promise((res, rej) => {
      let out = '';
      const timer = setTimeout(() => rej(new Error(`no banner from ${bin} within ${timeoutMs} ms; stdout: ${out}; stderr: ${stderr}`)), timeoutMs);
      child.stdout.setEncoding('utf8');
      child.stdout.on('data', (chunk) => {
        out += chunk;
        const m = /^confab \S+ serving on (http:\/\/[^\s]+)/m.exec(out);
        if (m) {
          clearTimeout(timer);
          res(m[1]);
        }
      });
      exit.then((how) => {
        clearTimeout(timer);
        rej(new Error(`${bin} exited (${JSON.stringify(how)}) before serving; stderr:\n${stderr}`));
      });
    });
    return { url, stop, stderr: () => stderr, data };
  } catch (err) {
    await stop();
    throw err;
  }
}
