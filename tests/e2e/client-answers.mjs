// Browser test (Chromium from the OS, driven by playwright-core) of how client.js's
// vestibule.fetch handles Vestibule's answers on API routes, and of the login URLs it builds.
// The upstream behind /api/orders answers in the exact shapes of Vestibule's own refusals
// (they pass through Vestibule as any answer does):
//   - 401 step_up_required → the browser goes to its login_url (acr_values, max_age kept)
//     with returnTo = this page; with {rejectStepUp} a VestibuleError instead;
//   - 403 insufficient_permissions → no navigation: the Response as before, readable, with
//     vestibule.insufficientPermissions(response) and onInsufficientPermissions telling what
//     it is; with {rejectInsufficientPermissions} a VestibuleError naming the route;
//   - a 401 whose login_url leaves the site → the site's own login instead;
//   - stepUp() and login(…, {prompt: 'none'}) build the login URLs;
//   - a 401 of Vestibule's own (no session) → the login as before.
//
// Environment: VESTIBULE_URL (required), E2E_USER, CHROMIUM_PATH, E2E_TIMEOUT_SECS.

import { BASE, check, launch, log, run } from './lib.mjs';
import {
  CLIENT_PAGE, isClientPage, logInToClientPage, navigationOf, serveClientPage,
} from './client-page.mjs';

const LOGIN = '/api/auth/login';

/** The query of a login URL as [name, value] pairs, in order. */
function pairs(url) {
  return Array.from(url.searchParams.entries());
}

function same(actual, expected, what) {
  check(JSON.stringify(actual) === JSON.stringify(expected), `${what}: ${JSON.stringify(actual)}, expected ${JSON.stringify(expected)}`);
}

async function backToClientPage(page) {
  await page.goto(`${BASE}${CLIENT_PAGE}`, { waitUntil: 'load' });
  await page.waitForFunction(() => typeof window.vestibule === 'object');
}

async function main() {
  const { context, page } = await launch();
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  await serveClientPage(page);
  await logInToClientPage(page);

  // From here on, every login navigation is answered by the test (no second provider visit).
  await page.route((url) => url.pathname === LOGIN || url.hostname === 'login.example', (route) => route.fulfill({
    status: 200, contentType: 'text/html', body: '<p>login page (stand-in)</p>',
  }));

  log('401 step_up_required → its login_url, returnTo appended');
  const stepUp = await navigationOf(page, 'fetch of a step-up route', () => {
    vestibule.fetch('/api/orders/step-up-required');
  });
  same(stepUp.pathname, LOGIN, 'step-up navigation path');
  same(pairs(stepUp), [['acr_values', 'urn:example:mfa gold'], ['max_age', '300'], ['returnTo', CLIENT_PAGE]], 'step-up login query');
  check(stepUp.search.startsWith('?acr_values=urn%3Aexample%3Amfa%20gold&max_age=300&returnTo='), `the login_url was not kept as sent: ${stepUp.search}`);
  await backToClientPage(page);

  log('401 step_up_required with {rejectStepUp} → a VestibuleError, no navigation');
  const stepUpError = await page.evaluate(() => vestibule.fetch('/api/orders/step-up-required', {}, { rejectStepUp: true })
    .then(() => null, (error) => ({
      isVestibuleError: error instanceof vestibule.VestibuleError,
      isError: error instanceof Error,
      name: error.name, code: error.code, status: error.status, loginUrl: error.loginUrl,
      responseStatus: error.response && error.response.status,
    })));
  same(stepUpError, {
    isVestibuleError: true, isError: true, name: 'VestibuleError', code: 'step_up_required', status: 401,
    loginUrl: '/api/auth/login?acr_values=urn%3Aexample%3Amfa%20gold&max_age=300', responseStatus: 401,
  }, 'the step-up rejection');
  check(isClientPage(page.url()), `rejectStepUp navigated to ${page.url()}`);

  log('403 insufficient_permissions → the Response, marked; no navigation');
  const refused = await page.evaluate(async () => {
    const heard = [];
    const stop = vestibule.onInsufficientPermissions((refusal, response) => heard.push({ refusal, status: response.status }));
    const response = await vestibule.fetch('/api/orders/insufficient-permissions');
    const refusal = vestibule.insufficientPermissions(response);
    const body = await response.json(); // the SPA can still read the answer
    const rejected = await vestibule.fetch('/api/orders/insufficient-permissions', {}, { rejectInsufficientPermissions: true })
      .then(() => null, (error) => ({
        isVestibuleError: error instanceof vestibule.VestibuleError,
        code: error.code, status: error.status, route: error.route, message: error.message,
      }));
    stop();
    await vestibule.fetch('/api/orders/insufficient-permissions');
    const fine = await vestibule.fetch('/api/orders/hello');
    const teapot = await vestibule.fetch('/api/orders/teapot');
    return {
      status: response.status, refusal, body, heard, rejected,
      fine: [fine.status, vestibule.insufficientPermissions(fine)],
      teapot: [teapot.status, vestibule.insufficientPermissions(teapot)],
    };
  });
  same(refused.status, 403, 'the refused call resolved to its Response');
  same(refused.refusal, {
    code: 'insufficient_permissions', status: 403, route: '/api/admin', message: "the route's rules do not allow this user",
  }, 'insufficientPermissions(response)');
  same(refused.body.error, 'insufficient_permissions', "the Response's body, read by the SPA");
  same(refused.heard.length, 2, 'onInsufficientPermissions calls (two refusals while subscribed, none after)');
  same(refused.heard[0], { refusal: refused.refusal, status: 403 }, 'what onInsufficientPermissions heard');
  same(refused.rejected, {
    isVestibuleError: true, code: 'insufficient_permissions', status: 403, route: '/api/admin',
    message: "the route's rules do not allow this user",
  }, 'the rejection under rejectInsufficientPermissions');
  same(refused.fine, [200, null], 'an allowed call');
  same(refused.teapot, [418, null], 'another error status');
  check(isClientPage(page.url()), `a refusal navigated to ${page.url()}`);

  log("a 401 whose login_url leaves the site → this site's login");
  const foreign = await navigationOf(page, 'fetch answered with a foreign login_url', () => {
    vestibule.fetch('/api/orders/foreign-login-url');
  });
  same(`${foreign.origin}${foreign.pathname}`, `${new URL(BASE).origin}${LOGIN}`, 'the login followed');
  same(pairs(foreign), [['returnTo', CLIENT_PAGE]], 'its query');
  await backToClientPage(page);

  log("stepUp() and login(…, {prompt: 'none'}) build the login URLs");
  const steppedUp = await navigationOf(page, 'vestibule.stepUp', () => {
    vestibule.stepUp({ acrValues: ['mfa', 'hwk'], maxAge: 60, returnTo: '/admin?x=1' });
  });
  same(steppedUp.pathname, LOGIN, 'stepUp path');
  same(pairs(steppedUp), [['returnTo', '/admin?x=1'], ['acr_values', 'mfa hwk'], ['max_age', '60']], 'stepUp query');
  await backToClientPage(page);
  const silent = await navigationOf(page, 'a silent login check', () => {
    vestibule.login('/after', null, { prompt: 'none' });
  });
  same(`${silent.pathname}${silent.search}`, `${LOGIN}?returnTo=%2Fafter&prompt=none`, 'silent check URL');
  await backToClientPage(page);

  log("Vestibule's own 401 (no session) → the login, as before");
  await context.clearCookies();
  const plain = await navigationOf(page, 'fetch without a session', () => {
    vestibule.fetch('/api/orders/42');
  });
  same(`${plain.pathname}${plain.search}`, `${LOGIN}?returnTo=${encodeURIComponent(CLIENT_PAGE)}`, 'the login after a plain 401');
  check(pageErrors.length === 0, `the page threw: ${pageErrors.join(' | ')}`);
}

await run(main);
