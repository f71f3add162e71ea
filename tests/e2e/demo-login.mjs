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
import {
  BASE, STEP_TIMEOUT_MS, USER, check, fetchUser, followProviderUntilBackAtApp, launch, log,
  nextNavigation, pageSummary, run, sleep, until,
} from './lib.mjs';

const OUTPUT_DIR = process.env.E2E_OUTPUT_DIR || '.';
const TOKEN_EXPIRY_WAIT_MS = 60_000;

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
  fs.mkdirSync(OUTPUT_DIR, { recursive: true });
  const { context, page } = await launch();
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
    new URL(page.url()).origin !== new URL(BASE).origin,
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

await run(main);
