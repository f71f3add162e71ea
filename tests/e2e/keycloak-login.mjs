// Browser end-to-end test against the real Keycloak (the bundled realm): log in on Keycloak's
// own login page as a person does (finding the fields by their visible labels and clicking
// "Sign In"), read the claims on the demo page, call the demo API through Vestibule, then log
// out through Keycloak's end-session endpoint and land back on Vestibule's page, logged out.
//
// Prints one JSON line on stdout for the Rust test to check against Keycloak's admin API:
//   {"claims": {...}, "api": {"status": 200, "body": {...}},
//    "endSession": {"url": "...", "status": 302, "location": "..."}, "landedOn": "..."}
//
// Environment: VESTIBULE_URL, KEYCLOAK_URL (Keycloak's browser-facing origin), E2E_USER,
// E2E_PASSWORD (required), CHROMIUM_PATH, E2E_TIMEOUT_SECS.

import {
  BASE, STEP_TIMEOUT_MS, USER, check, fetchUser, launch, log, nextNavigation, pageSummary, run, until,
} from './lib.mjs';

const KEYCLOAK = (process.env.KEYCLOAK_URL || '').replace(/\/+$/, '');
const PASSWORD = process.env.E2E_PASSWORD || '';

async function text(page, selector) {
  return (await page.locator(selector).textContent({ timeout: 2000 })) ?? '';
}

async function expectStatus(page, expected) {
  return until(`#status to contain "${expected}"`, async () => {
    const t = await text(page, '#status');
    return [t.includes(expected), t];
  });
}

async function main() {
  check(KEYCLOAK, 'KEYCLOAK_URL is not set');
  check(PASSWORD, 'E2E_PASSWORD is not set');
  const { page } = await launch();
  const report = {};

  // What the browser asks of Keycloak's end-session endpoint, and what it answers.
  page.on('response', (response) => {
    const url = new URL(response.url());
    if (url.origin === KEYCLOAK && url.pathname.endsWith('/protocol/openid-connect/logout') && !report.endSession) {
      report.endSession = { url: response.url(), status: response.status(), location: response.headers().location ?? null };
    }
  });

  log(`open ${BASE}/`);
  await page.goto(`${BASE}/`, { waitUntil: 'load' });
  await expectStatus(page, 'Not logged in');

  // Keycloak's login page, read like a user reads it.
  log('click #login');
  const toKeycloak = nextNavigation(page, 'clicking #login');
  await page.locator('#login').click();
  await toKeycloak;
  await page.waitForLoadState('load');
  check(new URL(page.url()).origin === KEYCLOAK, `#login led to ${await pageSummary(page)}, not to Keycloak at ${KEYCLOAK}`);
  log(`Keycloak's page: "${await page.title()}"`);
  await page.getByLabel('Username or email').fill(USER);
  await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
  const back = nextNavigation(page, 'signing in');
  await page.getByRole('button', { name: 'Sign In' }).click({ noWaitAfter: true });
  await back;
  await until(`back at ${BASE}`, async () => [
    new URL(page.url()).origin === new URL(BASE).origin && new URL(page.url()).pathname === '/',
    await pageSummary(page),
  ]);
  await page.waitForLoadState('load');

  const status = await expectStatus(page, 'Logged in as');
  check(status.includes(USER), `#status does not name ${USER}: "${status}"`);
  const claimsText = await until('#claims to show the ID-token claims', async () => {
    const t = await text(page, '#claims');
    return [t.includes('"sub"'), t];
  });
  report.claims = JSON.parse(claimsText);
  log(`logged in as ${USER}; claims: ${Object.keys(report.claims).join(', ')}`);

  // The demo API through Vestibule.
  await page.locator('#call-api').click({ timeout: STEP_TIMEOUT_MS });
  const result = await until('#api-result[data-status]', async () => {
    const s = await page.locator('#api-result').getAttribute('data-status', { timeout: 2000 });
    return [s !== null, { status: s, text: s === null ? null : await text(page, '#api-result') }];
  });
  // The page shows "<status> <reason>\n\n<JSON body>".
  const bodyText = result.text.slice(result.text.indexOf('\n\n') + 2);
  let body = null;
  try { body = JSON.parse(bodyText); } catch { body = bodyText; }
  report.api = { status: Number(result.status), body };
  log(`API call: ${result.status}`);

  // Log out: Vestibule ends the session and sends the browser to Keycloak's end-session URL.
  log('click #logout');
  const leaving = nextNavigation(page, 'clicking #logout');
  await page.locator('#logout').click();
  await leaving;
  for (let step = 0; step < 3 && new URL(page.url()).origin !== new URL(BASE).origin; step += 1) {
    await page.waitForLoadState('load');
    if (new URL(page.url()).origin === new URL(BASE).origin) break;
    // Keycloak asks for confirmation only when it cannot tie the request to a session.
    const confirm = page.getByRole('button', { name: /log ?out|sign ?out|yes/i });
    if ((await confirm.count()) > 0) {
      log(`Keycloak asks to confirm at ${new URL(page.url()).pathname}; clicking ${await confirm.first().textContent()}`);
      const moved = nextNavigation(page, 'confirming the logout');
      await confirm.first().click({ noWaitAfter: true });
      await moved;
    } else {
      await until('leaving Keycloak', async () => [new URL(page.url()).origin === new URL(BASE).origin, await pageSummary(page)]);
    }
  }
  await page.waitForLoadState('load');
  report.landedOn = page.url();
  check(new URL(page.url()).origin === new URL(BASE).origin, `logout ended at ${await pageSummary(page)}`);
  await expectStatus(page, 'Not logged in');
  const gone = await fetchUser(page);
  check(gone.status === 401, `GET /api/auth/user answered ${gone.status} after logout, expected 401`);
  log(`logged out, back at ${report.landedOn}`);
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

await run(main);
