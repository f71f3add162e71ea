// Browser end-to-end test of "your sessions" on Vestibule's demo page, in a real Chromium (the
// OS's, driven by playwright-core; no browser is ever downloaded).
//
// The test that runs this script has already signed the same user in elsewhere (another
// device). The script signs in here, finds both sessions listed (this browser marked, the
// other with its device and network), ends the other with the page's button, and sees the
// list shrink to this browser alone, still signed in.
//
// Environment:
//   VESTIBULE_URL          Vestibule's public URL (required)
//   E2E_USER               login name at the provider (default: alice)
//   E2E_OTHER_DEVICE       how the other session's device is described (required)
//   CHROMIUM_PATH          the browser (default: /usr/bin/chromium)
//
// Exit code 0: every check passed; 1: a check failed (the message says which).

import {
  BASE, STEP_TIMEOUT_MS, check, followProviderUntilBackAtApp, launch, log, nextNavigation, run,
  until,
} from './lib.mjs';

const OTHER_DEVICE = process.env.E2E_OTHER_DEVICE || '';

/** The sessions the page lists: [{id, current, text}]. */
function listed(page) {
  return page.evaluate(() => Array.from(document.querySelectorAll('#session-list li[data-session]'))
    .map((item) => ({
      id: item.getAttribute('data-session'),
      current: item.hasAttribute('data-current'),
      text: item.textContent,
    })));
}

async function main() {
  check(OTHER_DEVICE !== '', 'E2E_OTHER_DEVICE is required');
  const { page } = await launch();
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));

  log(`open ${BASE}/ and log in`);
  await page.goto(`${BASE}/`, { waitUntil: 'load' });
  const toProvider = nextNavigation(page, 'clicking #login');
  await page.locator('#login').click({ timeout: STEP_TIMEOUT_MS });
  await toProvider;
  await followProviderUntilBackAtApp(page, 'login');

  const both = await until('#session-list to show two sessions', async () => {
    const sessions = await listed(page);
    return [sessions.length === 2, sessions];
  });
  log(`listed: ${both.map((s) => `${s.current ? '*' : ' '} ${s.text}`).join(' | ')}`);
  const current = both.filter((s) => s.current);
  check(current.length === 1, `exactly one session is this browser: ${JSON.stringify(both)}`);
  check(current[0].text.includes('this browser'), `the current session is not labelled: ${current[0].text}`);
  const other = both.find((s) => !s.current);
  check(other.text.includes(OTHER_DEVICE), `the other session does not name its device "${OTHER_DEVICE}": ${other.text}`);
  check(/127\.0\.0\.0\/24/.test(other.text), `the other session does not show its network: ${other.text}`);
  check(!other.text.includes('127.0.0.1'), `a full client address is shown: ${other.text}`);
  check(
    (await page.locator(`#session-list li[data-current] button`).count()) === 0,
    'the current session offers an End button',
  );

  log('click #end-others');
  await page.locator('#end-others').click({ timeout: STEP_TIMEOUT_MS });
  const note = await until('#sessions-note to confirm', async () => {
    const text = (await page.locator('#sessions-note').textContent()) ?? '';
    return [text.includes('Ended 1 other session'), text];
  });
  log(`#sessions-note: "${note}"`);
  const left = await until('#session-list to show this browser alone', async () => {
    const sessions = await listed(page);
    return [sessions.length === 1 && sessions[0].current, sessions];
  });
  check(left[0].id === current[0].id, 'the remaining session is this browser\'s');
  check(await page.locator('#end-others').isDisabled(), '#end-others is enabled with no other session');
  const status = (await page.locator('#status').textContent()) ?? '';
  check(status.includes('Logged in as'), `this browser was logged out: "${status}"`);
  check(pageErrors.length === 0, `the page threw: ${pageErrors.join(' | ')}`);
  log('the other session is gone, this one stays');
}

await run(main);
