// The demo page against the real Keycloak, as a person uses it: sign in on Keycloak's own page
// (fields found by their visible labels), read the page's elements, and the administrator's
// side (Keycloak's admin REST API) for a test that ends a session at Keycloak.
//
// Environment: KEYCLOAK_URL (Keycloak's browser-facing origin), E2E_PASSWORD; for the admin
// API: KEYCLOAK_ADMIN_URL (its back-channel base URL), KEYCLOAK_REALM, KEYCLOAK_ADMIN_USER,
// KEYCLOAK_ADMIN_PASSWORD.

import { BASE, STEP_TIMEOUT_MS, USER, check, log, nextNavigation, pageSummary, until } from './lib.mjs';

export const KEYCLOAK = (process.env.KEYCLOAK_URL || '').replace(/\/+$/, '');
export const PASSWORD = process.env.E2E_PASSWORD || '';

export async function text(page, selector) {
  return (await page.locator(selector).textContent({ timeout: 2000 })) ?? '';
}

export async function attribute(page, selector, name) {
  return page.locator(selector).getAttribute(name, { timeout: 2000 });
}

export async function expectStatus(page, expected) {
  return until(`#status to contain "${expected}"`, async () => {
    const t = await text(page, '#status');
    return [t.includes(expected), t];
  });
}

const atApp = (page) => new URL(page.url()).origin === new URL(BASE).origin && new URL(page.url()).pathname === '/';

/**
 * From a page on its way to Keycloak (or already there): signs in as USER when Keycloak shows
 * its login form (with the username already known, only the password), until back on the demo
 * page, logged in.
 */
export async function signInOnKeycloakUntilBack(page, what) {
  for (let step = 0; step < 4; step += 1) {
    const where = await until(`${what}: Keycloak's login form or the demo page`, async () => {
      await page.waitForLoadState('load', { timeout: 2000 });
      if (atApp(page)) return [true, 'app'];
      const url = new URL(page.url());
      const password = url.origin === KEYCLOAK && (await page.getByLabel('Password', { exact: true }).count()) > 0;
      return [password, password ? 'form' : url.href];
    });
    if (where === 'app') break;
    log(`${what}: Keycloak's page "${await page.title()}"; signing in as ${USER}`);
    const username = page.getByLabel('Username or email');
    if ((await username.count()) > 0) await username.fill(USER);
    await page.getByLabel('Password', { exact: true }).fill(PASSWORD);
    const back = nextNavigation(page, `${what}: signing in`);
    await page.getByRole('button', { name: 'Sign In' }).click({ noWaitAfter: true });
    await back;
  }
  check(atApp(page), `${what}: not back on the demo page: ${await pageSummary(page)}`);
  await page.waitForLoadState('load');
  const status = await expectStatus(page, 'Logged in as');
  check(status.includes(USER), `#status does not name ${USER}: "${status}"`);
  log(`${what}: logged in as ${USER}`);
}

/** Opens the demo page and signs in with its Log in button. */
export async function openAndSignIn(page) {
  check(KEYCLOAK, 'KEYCLOAK_URL is not set');
  check(PASSWORD, 'E2E_PASSWORD is not set');
  log(`open ${BASE}/`);
  await page.goto(`${BASE}/`, { waitUntil: 'load' });
  await clickLogin(page);
}

/** Clicks the demo page's Log in button and signs in on Keycloak's page. */
export async function clickLogin(page) {
  await expectStatus(page, 'Not logged in');
  const toKeycloak = nextNavigation(page, 'clicking #login');
  await page.locator('#login').click();
  await toKeycloak;
  await signInOnKeycloakUntilBack(page, 'login');
}

/** The ID-token claims the page shows. */
export async function claimsOn(page) {
  const shown = await until('#claims to show the claims', async () => {
    const t = await text(page, '#claims');
    return [t.includes('"sub"'), t];
  });
  return JSON.parse(shown);
}

/** Follows a navigation that leaves for Keycloak's end-session page until back on the app. */
export async function followLogoutUntilBack(page) {
  for (let step = 0; step < 3 && new URL(page.url()).origin !== new URL(BASE).origin; step += 1) {
    await page.waitForLoadState('load');
    if (new URL(page.url()).origin === new URL(BASE).origin) break;
    const confirm = page.getByRole('button', { name: /log ?out|sign ?out|yes/i });
    if ((await confirm.count()) > 0) {
      const moved = nextNavigation(page, 'confirming the logout');
      await confirm.first().click({ noWaitAfter: true });
      await moved;
    } else {
      await until('leaving Keycloak', async () => [new URL(page.url()).origin === new URL(BASE).origin, await pageSummary(page)]);
    }
  }
  await page.waitForLoadState('load');
  await expectStatus(page, 'Not logged in');
}

/** Ends one Keycloak SSO session as an administrator (admin console: Sessions → Sign out). */
export async function endSessionAtKeycloak(sid) {
  const base = (process.env.KEYCLOAK_ADMIN_URL || '').replace(/\/+$/, '');
  const realm = process.env.KEYCLOAK_REALM || '';
  check(base && realm, 'KEYCLOAK_ADMIN_URL and KEYCLOAK_REALM are not set');
  const tokenAnswer = await fetch(`${base}/realms/master/protocol/openid-connect/token`, {
    method: 'POST',
    body: new URLSearchParams({
      grant_type: 'password',
      client_id: 'admin-cli',
      username: process.env.KEYCLOAK_ADMIN_USER || '',
      password: process.env.KEYCLOAK_ADMIN_PASSWORD || '',
    }),
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  check(tokenAnswer.ok, `Keycloak's admin token: ${tokenAnswer.status}`);
  const { access_token: token } = await tokenAnswer.json();
  const ended = await fetch(`${base}/admin/realms/${realm}/sessions/${encodeURIComponent(sid)}`, {
    method: 'DELETE',
    headers: { authorization: `Bearer ${token}` },
    signal: AbortSignal.timeout(STEP_TIMEOUT_MS),
  });
  check(ended.ok, `Keycloak refused to end the session ${sid}: ${ended.status}`);
}
