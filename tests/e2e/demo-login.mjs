// Browser end-to-end test of Vestibule's built-in demo SPA, in a real Chromium (the OS's,
// driven by playwright-core; no browser is ever downloaded).
//
// Logs in at the provider, reads the claims, calls the proxied API, waits until the access
// token has expired and calls it again (Vestibule refreshes), checks that no token is
// reachable from the page, logs out through the provider and comes back logged out.
//
// Environment:
//   VESTIBULE_URL    Vestibule's public URL, e.g. http://127.0.0.1:8080 (required)
//   E2E_OUTPUT_DIR   where to write logged-in.png and browser-state.json (default: .)
//   E2E_USER         login name at the provider (default: alice)
//   CHROMIUM_PATH    the browser (default: /usr/bin/chromium)
//   E2E_TIMEOUT_SECS the whole run's limit (default: 90)
//
// Each step is printed to stderr. Exit code 0: every check passed; 1: a check failed (the
// message says which) or the run timed out.

import * as fs from 'node:fs';
import * as path from 'node:path';
import { chromium } from 'playwright-core';

const BASE = (process.env.VESTIBULE_URL || '').replace(/\/+$/, '');
const OUTPUT_DIR = process.env.E2E_OUTPUT_DIR || '.';
const USER = process.env.E2E_USER || 'alice';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TOTAL_TIMEOUT_MS = 1000 * Number(process.env.E2E_TIMEOUT_SECS || 90);
const STEP_TIMEOUT_MS = 15_000;
const TOKEN_EXPIRY_WAIT_MS = 60_000;

const started = Date.now();
function log(message) {
  const seconds = ((Date.now() - started) / 1000).toFixed(1).padStart(5);
  process.stderr.write(`[e2e ${seconds}s] ${message}\n`);
}

class CheckFailed extends Error {}
function fail(message) {
  throw new CheckFailed(message);
}
function check(condition, message) {
  if (!condition) fail(message);
}
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` (async, returns [ok, seen]) until ok; fails with what was last seen. */
async function until(what, probe, timeoutMs = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  let seen;
  for (;;) {
    try {
      let ok;
      [ok, seen] = await probe();
      if (ok) return seen;
    } catch (error) {
      // A navigation may destroy the context mid-probe; try again.
      seen = `(error: ${error.message.split('\n')[0]})`;
    }
    if (Date.now() > deadline) {
      fail(`timed out after ${timeoutMs / 1000} s waiting for ${what}; last seen: ${JSON.stringify(seen)}`);
    }
    await sleep(100);
  }
}

let ORIGIN;

let browser;
const watchdog = setTimeout(() => {
  log(`FAILED: the whole run took longer than ${TOTAL_TIMEOUT_MS / 1000} s`);
  browser?.close().catch(() => {});
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
watchdog.unref();

/** The page's visible text (shortened), for failure messages. */
async function pageSummary(page) {
  const text = await page.locator('body').innerText({ timeout: 2000 }).catch(() => '(no body)');
  return `${page.url()} — "${text.replace(/\s+/g, ' ').trim().slice(0, 300)}"`;
}

/** Resolves on the next committed main-frame navigation (redirects commit only at the end). */
function nextNavigation(page, what) {
  return page
    .waitForEvent('framenavigated', { predicate: (frame) => frame === page.mainFrame(), timeout: STEP_TIMEOUT_MS })
    .catch(() => fail(`${what} did not navigate within ${STEP_TIMEOUT_MS / 1000} s (at ${page.url()})`));
}

function isBackAtApp(page) {
  const url = new URL(page.url());
  return url.origin === ORIGIN && !url.pathname.startsWith('/api/auth/');
}

/**
 * Drives the provider's pages: fills the login form, submits consent, logout confirmation or
 * any other form (each provider page has exactly one), until the browser is back on the app.
 */
async function followProviderUntilBackAtApp(page, what) {
  for (let step = 1; step <= 6; step += 1) {
    await page.waitForLoadState('load', { timeout: STEP_TIMEOUT_MS });
    if (isBackAtApp(page)) {
      log(`${what}: back at ${page.url()}`);
      return;
    }
    const form = page.locator('form').first();
    if ((await page.locator('form').count()) === 0) {
      // An auto-redirecting or auto-submitting page, or an error page.
      const stuckAt = page.url();
      log(`${what}: no form at ${stuckAt}; waiting for the page to move on`);
      const moved = await page
        .waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame(), timeout: 5000 })
        .then(() => true, () => page.url() !== stuckAt);
      if (!moved) fail(`${what}: stuck on a page without a form: ${await pageSummary(page)}`);
      continue;
    }
    // What the form holds, read in one go (locator reads would wait for missing elements).
    const shape = await form.evaluate((f) => {
      const submitter = f.querySelector('button[type="submit"], input[type="submit"], button:not([type])');
      const fieldNames = new Set(Array.from(f.elements).filter((e) => e !== submitter && e.name).map((e) => e.name));
      return {
        login: !!f.querySelector('input[name="login"]'),
        password: !!f.querySelector('input[name="password"]'),
        prompt: f.querySelector('input[name="prompt"]')?.value ?? null,
        submitter: !!submitter,
        // A named submit button duplicating another field: clicking it sends that field twice.
        duplicate: submitter && submitter.name && fieldNames.has(submitter.name) ? submitter.name : null,
      };
    });
    const where = new URL(page.url()).pathname;
    if (shape.login) {
      log(`${what}: provider login form at ${where}; signing in as ${USER}`);
      await form.locator('input[name="login"]').fill(USER);
      if (shape.password) await form.locator('input[name="password"]').fill('any-password');
    } else {
      log(`${what}: submitting the provider's ${shape.prompt ? `${shape.prompt} ` : ''}form at ${where}`);
    }
    // A user clicks the button; a button that repeats another field would make that click fail.
    check(!shape.duplicate, `${what}: the submit button repeats the field "${shape.duplicate}"`);
    const navigated = nextNavigation(page, `${what}: submitting the form at ${page.url()}`);
    if (shape.submitter) {
      await form
        .locator('button[type="submit"], input[type="submit"], button:not([type])')
        .first()
        .click({ timeout: STEP_TIMEOUT_MS, noWaitAfter: true });
    } else {
      await form.evaluate((f) => f.requestSubmit());
    }
    await navigated;
  }
  await page.waitForLoadState('load', { timeout: STEP_TIMEOUT_MS });
  check(isBackAtApp(page), `${what}: not back at ${ORIGIN} after 6 provider pages: ${await pageSummary(page)}`);
}

async function text(page, selector) {
  return (await page.locator(selector).textContent({ timeout: 2000 })) ?? '';
}

async function expectStatus(page, expected) {
  const seen = await until(`#status to contain "${expected}"`, async () => {
    const t = await text(page, '#status');
    return [t.includes(expected), t];
  });
  log(`#status: "${seen.trim()}"`);
}

/** GET /api/auth/user from the page, as the SPA does. */
function fetchUser(page) {
  return page.evaluate(async () => {
    const response = await fetch('/api/auth/user', { headers: { 'X-CSRF': '1' } });
    return { status: response.status, body: await response.json().catch(() => null) };
  });
}

/** Clicks #call-api and waits for this call's result (the attribute is cleared first). */
async function callApi(page, label) {
  await page.locator('#call-api').waitFor({ state: 'visible', timeout: STEP_TIMEOUT_MS });
  await until('#call-api to be enabled', async () => [await page.locator('#call-api').isEnabled(), 'disabled']);
  await page.evaluate(() => document.getElementById('api-result').removeAttribute('data-status'));
  await page.locator('#call-api').click({ timeout: STEP_TIMEOUT_MS });
  const result = await until(`#api-result[data-status] after ${label}`, async () => {
    const status = await page.locator('#api-result').getAttribute('data-status', { timeout: 2000 });
    return [status !== null, { status, text: status === null ? null : await text(page, '#api-result') }];
  });
  check(
    result.status === '200',
    `${label}: #api-result data-status is ${result.status}, expected 200; it shows: ${result.text}`,
  );
  check(
    /"ok":\s*true/.test(result.text) || result.text.includes('Hello'),
    `${label}: #api-result does not show the upstream's answer ("ok": true or "Hello…"): ${result.text}`,
  );
  log(`${label}: 200 — ${result.text.replace(/\s+/g, ' ').slice(0, 160)}`);
}

/** Everything the page's JavaScript can reach, plus the browser's cookie jar. */
async function browserState(page, context) {
  const fromPage = await page.evaluate(() => {
    const dump = (storage) => Object.fromEntries(
      Array.from({ length: storage.length }, (_, i) => storage.key(i)).map((k) => [k, storage.getItem(k)]),
    );
    return {
      documentCookie: document.cookie,
      localStorage: dump(window.localStorage),
      sessionStorage: dump(window.sessionStorage),
      html: document.documentElement.outerHTML,
    };
  });
  return { ...fromPage, cookies: await context.cookies(BASE) };
}

async function main() {
  check(BASE, 'VESTIBULE_URL is not set (e.g. http://127.0.0.1:8080)');
  ORIGIN = new URL(BASE).origin;
  check(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM}: apt-get install -y chromium chromium-driver (or set CHROMIUM_PATH)`);
  fs.mkdirSync(OUTPUT_DIR, { recursive: true });

  log(`launching ${CHROMIUM} (headless) for ${BASE} as ${USER}`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-sync', '--disable-quic',
    ],
  });
  log(`browser: Chromium ${browser.version()}`);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (error) => {
    pageErrors.push(error.message);
    log(`page error: ${error.message}`);
  });
  page.on('console', (message) => {
    // Failed resource loads are expected (the SPA's 401 probe while logged out, favicons,
    // the provider page's external assets offline); anything else is worth seeing.
    if (message.type() === 'error' && !message.text().startsWith('Failed to load resource')) {
      log(`console error (${new URL(page.url()).pathname}): ${message.text()}`);
    }
  });

  // 1. Logged out.
  log(`open ${BASE}/`);
  const first = await page.goto(`${BASE}/`, { waitUntil: 'load' });
  check(first && first.status() === 200, `GET ${BASE}/ answered ${first?.status()}, expected 200 (the demo SPA)`);
  await expectStatus(page, 'Not logged in');
  check(await page.locator('#login').isVisible(), '#login is not visible while logged out');
  check(!(await page.locator('#logout').isVisible()), '#logout is visible while logged out');

  // 2. Log in at the provider.
  log('click #login');
  const toProvider = nextNavigation(page, 'clicking #login');
  await page.locator('#login').click();
  await toProvider;
  check(
    new URL(page.url()).origin !== ORIGIN,
    `clicking #login did not lead to the provider (at ${await pageSummary(page)})`,
  );
  await followProviderUntilBackAtApp(page, 'login');
  check(new URL(page.url()).pathname === '/', `login came back to ${page.url()}, expected the returnTo path /`);

  // 3. Logged in: status, claims, the API.
  await expectStatus(page, 'Logged in as');
  check((await text(page, '#status')).includes(USER), `#status does not name ${USER}: "${await text(page, '#status')}"`);
  check(await page.locator('#logout').isVisible(), '#logout is not visible while logged in');
  check(!(await page.locator('#login').isVisible()), '#login is visible while logged in');
  const claims = await until('#claims to show the ID-token claims', async () => {
    const t = await text(page, '#claims');
    return [t.includes('"sub"'), t];
  });
  log(`#claims: ${claims.replace(/\s+/g, ' ').slice(0, 200)}`);
  await until('#access-countdown to count', async () => {
    const t = await text(page, '#access-countdown');
    return [/\d+\s*s\b|expired|min/.test(t), t];
  });
  log(`#access-countdown: "${await text(page, '#access-countdown')}", #session-countdown: "${await text(page, '#session-countdown')}"`);

  await callApi(page, 'first API call');
  await sleep(1200); // let the countdown bars finish their animation
  const screenshot = path.join(OUTPUT_DIR, 'logged-in.png');
  await page.screenshot({ path: screenshot, fullPage: true });
  log(`screenshot: ${screenshot} (${fs.statSync(screenshot).size} bytes)`);

  // 4. Let the access token expire; the next call must still work (Vestibule refreshes it).
  const before = await fetchUser(page);
  check(before.status === 200, `GET /api/auth/user answered ${before.status} while logged in: ${JSON.stringify(before.body)}`);
  const expiresAt = before.body?.session?.access_token_expires_at;
  check(typeof expiresAt === 'number', `/api/auth/user has no session.access_token_expires_at: ${JSON.stringify(before.body)}`);
  log(`access token expires at ${expiresAt} (in ${(expiresAt - Date.now() / 1000).toFixed(1)} s); waiting`);
  const waitDeadline = Date.now() + TOKEN_EXPIRY_WAIT_MS;
  let current = expiresAt;
  while (Date.now() / 1000 <= current) {
    check(Date.now() < waitDeadline, `the access token did not expire within ${TOKEN_EXPIRY_WAIT_MS / 1000} s (expires_at ${current})`);
    await sleep(Math.min(2000, Math.max(100, (current - Date.now() / 1000) * 1000 + 300)));
    const now = await fetchUser(page);
    check(now.status === 200, `the session ended while waiting for the access token to expire: ${now.status} ${JSON.stringify(now.body)}`);
    current = now.body.session.access_token_expires_at;
  }
  log('the access token has expired; calling the API again');
  await callApi(page, 'API call after expiry');
  const after = await fetchUser(page);
  check(after.status === 200, `GET /api/auth/user answered ${after.status} after the refresh`);
  check(
    after.body.session.access_token_expires_at > current,
    `the access token was not renewed: expires_at ${after.body.session.access_token_expires_at}, was ${current}`,
  );
  log(`renewed: the access token now expires at ${after.body.session.access_token_expires_at}`);

  // 5. Nothing the page can reach holds a token.
  const state = await browserState(page, context);
  fs.writeFileSync(path.join(OUTPUT_DIR, 'browser-state.json'), JSON.stringify(state, null, 2));
  check(!state.documentCookie.includes('vestibule'), `document.cookie exposes the session cookie: ${state.documentCookie}`);
  for (const [name, storage] of [['localStorage', state.localStorage], ['sessionStorage', state.sessionStorage]]) {
    for (const [key, value] of Object.entries(storage)) {
      const entry = `${key}=${value}`;
      check(!/eyJ|token/i.test(entry), `${name} holds something token-like: ${entry.slice(0, 120)}`);
    }
  }
  check(!state.html.includes('eyJ'), 'the DOM contains a JWT ("eyJ…")');
  const session = state.cookies.find((c) => c.name === 'vestibule' || c.name === '__Host-vestibule');
  check(session, `no Vestibule session cookie in the browser: ${state.cookies.map((c) => c.name).join(', ')}`);
  check(session.httpOnly, 'the session cookie is not HttpOnly');
  check(session.sameSite === 'Strict', `the session cookie is SameSite=${session.sameSite}, expected Strict`);
  check(!session.value.includes('eyJ'), 'the session cookie holds a JWT');
  log(`no token reachable from the page (cookie ${session.name}: HttpOnly, SameSite=${session.sameSite}); state saved to browser-state.json`);
  check(pageErrors.length === 0, `the SPA threw: ${pageErrors.join(' | ')}`);

  // 6. Log out through the provider and come back logged out.
  log('click #logout');
  const leaving = nextNavigation(page, 'clicking #logout');
  await page.locator('#logout').click();
  await leaving;
  await followProviderUntilBackAtApp(page, 'logout');
  check(new URL(page.url()).pathname === '/', `logout ended at ${page.url()}, expected ${BASE}/`);
  await expectStatus(page, 'Not logged in');
  const gone = await fetchUser(page);
  check(gone.status === 401, `GET /api/auth/user answered ${gone.status} after logout, expected 401`);
  const left = (await context.cookies(BASE)).filter((c) => c.name === 'vestibule' || c.name === '__Host-vestibule');
  check(left.length === 0, 'the session cookie is still in the browser after logout');
  log(`reload ${BASE}/`);
  await page.goto(`${BASE}/`, { waitUntil: 'load' });
  await expectStatus(page, 'Not logged in');
  check(pageErrors.length === 0, `the SPA threw: ${pageErrors.join(' | ')}`);
}

try {
  await main();
  log(`PASSED in ${((Date.now() - started) / 1000).toFixed(1)} s`);
  process.exitCode = 0;
} catch (error) {
  log(`FAILED: ${error instanceof CheckFailed ? error.message : error.stack || error}`);
  process.exitCode = 1;
} finally {
  await browser?.close().catch(() => {});
  clearTimeout(watchdog);
}
