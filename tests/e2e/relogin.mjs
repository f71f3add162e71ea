// Browser end-to-end test: logging in again ends the previous session, although the
// SameSite=Strict session cookie does not come back on the provider's cross-site redirect to
// the callback (run it with the provider on another site, e.g. localhost vs 127.0.0.1).
//
// Logs in, notes the session cookie, starts a second login from the page (a same-origin
// navigation, which carries the cookie), completes it at the provider, and prints one JSON
// line on stdout: {"first": <first session cookie>, "second": <second>}. The Rust test then
// checks with Redis and the provider that the first session is gone and its refresh token
// revoked.
//
// Environment: VESTIBULE_URL (required), E2E_USER, CHROMIUM_PATH, E2E_TIMEOUT_SECS.

import {
  BASE, check, fetchUser, followProviderUntilBackAtApp, launch, log, nextNavigation, run, until,
} from './lib.mjs';

/** The session cookie's value in the browser (readable here only through the browser's API). */
async function sessionCookie(context) {
  const cookies = await context.cookies(BASE);
  return cookies.find((c) => c.name === 'vestibule' || c.name === '__Host-vestibule')?.value;
}

/** Navigates from the page to the login endpoint and completes the login at the provider. */
async function logInFromThePage(page, what) {
  const origin = new URL(BASE).origin;
  const toProvider = nextNavigation(page, what);
  await page.evaluate(() => window.location.assign('/api/auth/login?returnTo=/'));
  await toProvider;
  await until(`${what}: the provider's page`, async () => [new URL(page.url()).origin !== origin, page.url()]);
  await followProviderUntilBackAtApp(page, what);
  const user = await until(`${what}: GET /api/auth/user to answer 200`, async () => {
    const answer = await fetchUser(page);
    return [answer.status === 200, answer];
  });
  log(`${what}: logged in as ${user.body.sub}`);
}

async function main() {
  const { context, page } = await launch();
  await page.goto(`${BASE}/`, { waitUntil: 'load' });

  await logInFromThePage(page, 'first login');
  const first = await sessionCookie(context);
  check(first, 'no session cookie after the first login');

  await logInFromThePage(page, 'second login');
  const second = await sessionCookie(context);
  check(second && second !== first, 'the second login did not set a new session cookie');
  process.stdout.write(`${JSON.stringify({ first, second })}\n`);
}

await run(main);
