// The demo page's routes with policies in Chromium against the real Keycloak: the admin-only
// call (its route's claim rule: the realm role admin) answers for alice and shows "insufficient
// permissions" for bob; the step-up button, once the login is older than the route's max_age,
// follows Vestibule's step_up_required answer through the login endpoint and back to the page.
//
// Prints one JSON line on stdout for the Rust test to check:
//   {"admin": {"status", "refused", "text"},
//    "stepUp": {"loginUrl", "backAt", "authTimeAgeSecs"}}      (stepUp only with E2E_STEP_UP_AGE)
//
// Environment: see keycloak-page.mjs and lib.mjs; E2E_STEP_UP_AGE: the step-up route's
// max_age_secs (when set, the step-up button is tried).

import { BASE, check, launch, log, nextNavigation, run, until } from './lib.mjs';
import { attribute, claimsOn, openAndSignIn, signInOnKeycloakUntilBack, text } from './keycloak-page.mjs';

const STEP_UP_AGE = Number(process.env.E2E_STEP_UP_AGE || 0);

async function clickAndRead(page, button, result) {
  await until(`${button} to be enabled`, async () => [await page.locator(button).isEnabled(), 'disabled']);
  await page.locator(button).click();
  return until(`${result}[data-status]`, async () => {
    const status = await attribute(page, result, 'data-status');
    return [status !== null, { status: Number(status), refused: await attribute(page, result, 'data-refused'), text: await text(page, result) }];
  });
}

async function main() {
  const { page } = await launch();
  const report = {};
  await openAndSignIn(page);

  report.admin = await clickAndRead(page, '#call-admin', '#admin-result');
  log(`admin call: ${JSON.stringify(report.admin)}`);

  if (STEP_UP_AGE > 0) {
    // The login must be older than the route allows: wait for the ID token's auth_time to age.
    const { auth_time: authTime } = await claimsOn(page);
    check(typeof authTime === 'number', 'Keycloak\'s ID token has an auth_time');
    await until(`the login to be older than ${STEP_UP_AGE} s`, async () => {
      const age = Date.now() / 1000 - authTime;
      return [age > STEP_UP_AGE + 1, age];
    }, (STEP_UP_AGE + 10) * 1000);
    const logins = [];
    page.on('request', (request) => {
      const url = new URL(request.url());
      if (url.origin === new URL(BASE).origin && url.pathname === '/api/auth/login') logins.push(request.url());
    });
    const leaving = nextNavigation(page, 'clicking #call-step-up');
    await page.locator('#call-step-up').click();
    await leaving;
    await signInOnKeycloakUntilBack(page, 'step-up');
    check(logins.length > 0, 'the step-up button led to no /api/auth/login request');
    report.stepUp = { loginUrl: logins[0], backAt: page.url(), authTimeAgeSecs: Date.now() / 1000 - authTime };
    log(`step-up: ${JSON.stringify(report.stepUp)}`);
  }
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

await run(main);
