// A bare page of the app's origin that loads only Vestibule's client.js (served by Vestibule),
// so the helper's tests depend on nothing the demo page does; and a login that lands on it.

import { BASE, check, followProviderUntilBackAtApp, log, nextNavigation } from './lib.mjs';

/** Path (with a query and a fragment, as returnTo keeps them) of the bare page. */
export const CLIENT_PAGE = '/client-test?tab=orders#top';
const CLIENT_PAGE_PATH = '/client-test';

/** Whether `url` (string or URL) is the bare page. */
export function isClientPage(url) {
  const parsed = new URL(url);
  return parsed.origin === new URL(BASE).origin && parsed.pathname === CLIENT_PAGE_PATH;
}

/** Serves the bare page from the test (the demo frontend has no such path). */
export async function serveClientPage(page) {
  await page.route(isClientPage, (route) => route.fulfill({
    status: 200,
    contentType: 'text/html; charset=utf-8',
    body: '<!doctype html><title>client.js test</title><script src="/api/auth/client.js"></script><p>client.js test</p>',
  }));
}

/** Logs in at the provider, coming back to the bare page with client.js loaded. */
export async function logInToClientPage(page) {
  log(`log in, returnTo=${CLIENT_PAGE}`);
  const toProvider = nextNavigation(page, 'starting the login');
  await page.goto(`${BASE}/api/auth/login?returnTo=${encodeURIComponent(CLIENT_PAGE)}`, { waitUntil: 'commit' });
  await toProvider;
  await followProviderUntilBackAtApp(page, 'login');
  check(isClientPage(page.url()), `the login came back to ${page.url()}, not ${CLIENT_PAGE}`);
  // A route does not see the end of a redirect chain: load the bare page once more (from
  // another document: the same URL with a fragment would not load again).
  await page.goto('about:blank');
  await page.goto(`${BASE}${CLIENT_PAGE}`, { waitUntil: 'load' });
  await page.waitForFunction(() => typeof window.vestibule === 'object');
}

/** Runs `act` in the page and returns the URL of the main-frame navigation it starts. */
export async function navigationOf(page, what, act) {
  const navigation = page.waitForRequest(
    (request) => request.isNavigationRequest() && request.frame() === page.mainFrame(),
    { timeout: 15_000 },
  ).catch(() => {
    throw new Error(`${what} did not navigate`);
  });
  await page.evaluate(act).catch(() => {}); // the navigation may destroy the context
  return new URL((await navigation).url());
}
