// The demo page's live feeds in Chromium against the real Keycloak: a WebSocket through
// Vestibule to the demo API (dev/demo-api.mjs) and an event stream beside it receive ticks;
// both end when the session ends, and the page says so ("Session ended — log in again", close
// code 4401): first when the same user logs out in another tab of the same browser, then, after
// a new login, when an administrator ends the SSO session at Keycloak (which tells Vestibule on
// the back channel). Any Content-Security-Policy complaint of the page is reported.
//
// Prints one JSON line on stdout for the Rust test to check:
//   {"csp": [...], "first": {"ws": "...", "sse": "..."},
//    "logoutInAnotherTab": {"code", "wsText", "sseText", "wsAfterMs", "sseAfterMs"},
//    "endedAtKeycloak": {..., "sid", "adminCallMs"}}
//
// Environment: see keycloak-page.mjs and lib.mjs.

import { BASE, launch, log, nextNavigation, run, until } from './lib.mjs';
import {
  attribute, claimsOn, clickLogin, endSessionAtKeycloak, expectStatus, followLogoutUntilBack,
  openAndSignIn, text,
} from './keycloak-page.mjs';

/** Waits until both feeds are open and have shown `more` messages beyond `since`. */
async function feedsFlowing(page, since = { ws: 0, sse: 0 }, more = 2) {
  return until(`both feeds to show ${more} new messages`, async () => {
    const seen = {
      ws: Number(await attribute(page, '#ws-feed', 'data-count')),
      sse: Number(await attribute(page, '#sse-feed', 'data-count')),
      wsState: await attribute(page, '#ws-status', 'data-state'),
      sseState: await attribute(page, '#sse-status', 'data-state'),
    };
    const ok = seen.ws >= since.ws + more && seen.sse >= since.sse + more
      && seen.wsState === 'open' && seen.sseState === 'open';
    return [ok, seen];
  });
}

/**
 * Waits until both feeds ended after `since` (ms since the epoch, the browser's clock is this
 * machine's): what the page shows, and how long after `from` each ended.
 */
async function feedsEnded(page, since, what, from = since) {
  return until(`both feeds to end (${what})`, async () => {
    const closedAt = Number(await attribute(page, '#ws-status', 'data-closed-at'));
    const endedAt = Number(await attribute(page, '#sse-status', 'data-ended-at'));
    const seen = {
      code: Number(await attribute(page, '#ws-status', 'data-close-code')),
      wsState: await attribute(page, '#ws-status', 'data-state'),
      sseState: await attribute(page, '#sse-status', 'data-state'),
      wsText: await text(page, '#ws-status'),
      sseText: await text(page, '#sse-status'),
      wsAfterMs: closedAt - from,
      sseAfterMs: endedAt - from,
    };
    return [closedAt > since && endedAt > since && seen.wsState === 'ended' && seen.sseState === 'ended', seen];
  }, 20_000);
}

async function main() {
  const { context, page } = await launch();
  const report = { csp: [] };
  page.on('console', (message) => {
    if (/Content.Security.Policy|Refused to connect/i.test(message.text())) report.csp.push(message.text());
  });

  await openAndSignIn(page);
  const flowing = await feedsFlowing(page);
  report.first = {
    ws: (await text(page, '#ws-feed')).split('\n').pop(),
    sse: (await text(page, '#sse-feed')).split('\n').pop(),
  };
  log(`feeds flowing: ${JSON.stringify(flowing)}; last tick ${report.first.ws}`);

  // Another tab of the same browser (same cookies): the same user logs out there.
  const other = await context.newPage();
  await other.goto(`${BASE}/`, { waitUntil: 'load' });
  await expectStatus(other, 'Logged in as');
  const leaving = nextNavigation(other, 'clicking #logout in the other tab');
  const loggedOutAt = Date.now();
  await other.locator('#logout').click();
  report.logoutInAnotherTab = await feedsEnded(page, loggedOutAt, 'logout in another tab');
  log(`after the logout in another tab: ${JSON.stringify(report.logoutInAnotherTab)}`);
  await leaving;
  await followLogoutUntilBack(other);
  await other.close();

  // A new login on the first tab; then an administrator ends the SSO session at Keycloak.
  await clickLogin(page);
  const counts = {
    ws: Number(await attribute(page, '#ws-feed', 'data-count')),
    sse: Number(await attribute(page, '#sse-feed', 'data-count')),
  };
  await feedsFlowing(page, counts);
  const { sid } = await claimsOn(page);
  log(`feeds flowing again; ending Keycloak session ${sid} as an administrator`);
  const adminStarted = Date.now();
  await endSessionAtKeycloak(sid);
  const adminReturned = Date.now();
  // Measured from the admin call's answer: by then Keycloak has told Vestibule (its back-channel
  // logout is sent while the session is removed), so the session has ended.
  const ended = await feedsEnded(page, adminStarted, 'the administrator ended the session', adminReturned);
  report.endedAtKeycloak = { ...ended, sid, adminCallMs: adminReturned - adminStarted };
  log(`after Keycloak ended the session: ${JSON.stringify(report.endedAtKeycloak)}`);
  await expectStatus(page, 'Not logged in');
  process.stdout.write(`${JSON.stringify(report)}\n`);
}

await run(main);
