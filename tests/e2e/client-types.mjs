// The TypeScript declarations Vestibule serves at /api/auth/client.d.ts, checked with the real
// compiler (typescript, pinned in package-lock.json):
//   - served as application/typescript with client.js's caching;
//   - `tsc --noEmit --strict` accepts client-types.ts, a use of every part of the API against
//     the served file (its `@ts-expect-error` lines prove the types are precise);
//   - the members it declares on `Vestibule.Api` are exactly those client.js (as served)
//     puts on `window.vestibule`.
//
// Environment: VESTIBULE_URL (required). Exit code 0: every check passed.

import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as vm from 'node:vm';
import ts from 'typescript';

const BASE = (process.env.VESTIBULE_URL || '').replace(/\/+$/, '');

function log(message) {
  process.stderr.write(`[client-types] ${message}\n`);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

async function served(file, contentType) {
  const response = await fetch(`${BASE}/api/auth/${file}`);
  check(response.status === 200, `GET /api/auth/${file} answered ${response.status}`);
  const type = response.headers.get('content-type');
  check(type === contentType, `${file} is served as ${type}, expected ${contentType}`);
  const cache = response.headers.get('cache-control');
  check(cache === 'no-cache', `${file} is cached as ${cache}, expected no-cache (like client.js)`);
  return response.text();
}

/** The members of `Vestibule.Api` as the compiler reads the declarations. */
function declaredMembers(file) {
  const program = ts.createProgram([file], { strict: true, noEmit: true, lib: ['lib.es2022.d.ts', 'lib.dom.d.ts'] });
  const checker = program.getTypeChecker();
  const source = program.getSourceFile(file);
  let api;
  ts.forEachChild(source, function visit(node) {
    if (ts.isInterfaceDeclaration(node) && node.name.text === 'Api') api = node;
    ts.forEachChild(node, visit);
  });
  check(api, 'client.d.ts declares no interface Vestibule.Api');
  return checker.getTypeAtLocation(api).getProperties().map((symbol) => symbol.name).sort();
}

/** The members client.js puts on `window.vestibule` (loaded in a bare context: no call made). */
function runtimeMembers(js) {
  const window = {};
  vm.runInNewContext(js, { window, URL, Headers, Promise, WeakMap, setTimeout, clearTimeout });
  check(window.vestibule, 'client.js did not define window.vestibule');
  return Object.keys(window.vestibule).sort();
}

async function main() {
  check(BASE, 'VESTIBULE_URL is not set');
  const types = await served('client.d.ts', 'application/typescript; charset=utf-8');
  const js = await served('client.js', 'text/javascript; charset=utf-8');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'vestibule-types-'));
  const typesFile = path.join(dir, 'client.d.ts');
  fs.writeFileSync(typesFile, types);
  try {
    const here = path.dirname(new URL(import.meta.url).pathname);
    const tsc = path.join(here, 'node_modules', 'typescript', 'bin', 'tsc');
    const args = ['--noEmit', '--strict', '--target', 'es2022', '--lib', 'es2022,dom', typesFile, path.join(here, 'client-types.ts')];
    log(`tsc ${args.join(' ')}`);
    try {
      execFileSync(process.execPath, [tsc, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    } catch (error) {
      throw new Error(`tsc --strict refused client-types.ts against the served client.d.ts:\n${error.stdout}${error.stderr}`);
    }
    log('tsc --noEmit --strict: no error');
    const declared = declaredMembers(typesFile);
    const defined = runtimeMembers(js);
    log(`declared: ${declared.join(', ')}`);
    check(
      JSON.stringify(declared) === JSON.stringify(defined),
      `client.d.ts declares [${declared}] but client.js defines [${defined}]`,
    );
    const unused = declared.filter((name) => !fs.readFileSync(path.join(here, 'client-types.ts'), 'utf8').includes(`vestibule.${name}`));
    check(unused.length === 0, `client-types.ts does not use ${unused.join(', ')}`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

try {
  await main();
  log('PASSED');
} catch (error) {
  log(`FAILED: ${error.message}`);
  process.exitCode = 1;
}
