// Browser test (Chromium from the OS, driven by playwright-core) of client.js's
// vestibule.onExpiring against the real Vestibule, run with a short idle and absolute timeout
// (E2E_IDLE_SECS, E2E_ABSOLUTE_SECS). The page's clock is an hour fast (its Date is shifted;
// its timers are not), so the helper has to correct it with the server's Date header.
//
// The page subscribes with E2E_WARN_SECS; on each idle warning it keeps the session alive
// (the second time through a plain vestibule.fetch instead of keepAlive), until the warning
// is for the absolute end. Checked, on this machine's clock (the server's):
//   - each warning comes before its end, E2E_WARN_SECS before it (give or take the Date
//     header's second), and says how long is left;
//   - keepAlive moves the server's idle deadline; a vestibule.fetch re-arms the warning;
//   - the absolute end is warned as 'absolute', once; keepAlive does not move it, and the
//     session indeed ends then.
//
// Environment: VESTIBULE_URL (required), E2E_IDLE_SECS, E2E_ABSOLUTE_SECS, E2E_WARN_SECS,
// E2E_USER, CHROMIUM_PATH, E2E_TIMEOUT_SECS.

import { check, fetchUser, launch, log, run, until } from './lib.mjs';
import { logInToClientPage, serveClientPage } from './client-page.mjs';

const IDLE = Number(process.env.E2E_IDLE_SECS || 10);
const ABSOLUTE = Number(process.env.E2E_ABSOLUTE_SECS || 30);
const WARN = Number(process.env.E2E_WARN_SECS || 4);
const CLOCK_SHIFT_MS = 3600 * 1000;
// The server's Date header has whole seconds; the helper takes its middle.
const SLACK = 1.5;
// What a whole-second deadline can lose to flooring: `expiresAt` in a warning, and the server's
// idle deadline (the touch's time in whole seconds, taken before the command was sent).
const FLOOR = 1;

const now = () => Date.now() / 1000;

async function main() {
  const { page } = await launch();
  const pageErrors = [];
  page.on('pageerror', (error) => pageErrors.push(error.message));
  // The test page's clock runs an hour fast; setTimeout is untouched.
  await page.addInitScript((shift) => {
    if (location.pathname !== '/client-test') return;
    const RealDate = Date;
    class FastDate extends RealDate {
      constructor(...args) {
        if (args.length === 0) super(RealDate.now() + shift); else super(...args);
      }
      static now() { return RealDate.now() + shift; }
    }
    window.Date = FastDate;
  }, CLOCK_SHIFT_MS);
  await serveClientPage(page);
  await logInToClientPage(page);
  const skew = await page.evaluate(() => Date.now() - (performance.timeOrigin + performance.now()));
  check(skew > 3500 * 1000, `the page's clock is not fast (${skew} ms)`);

  log(`onExpiring(${WARN}) with idle ${IDLE} s, absolute ${ABSOLUTE} s`);
  await page.evaluate((warnSecs) => {
    const realNow = () => (performance.timeOrigin + performance.now()) / 1000;
    window.warnings = [];
    window.onExpiringStop = vestibule.onExpiring(warnSecs, (warning) => {
      const entry = {
        reason: warning.reason, expiresAt: warning.expiresAt, secondsLeft: warning.secondsLeft, firedAt: realNow(),
      };
      window.warnings.push(entry);
      const idleWarnings = window.warnings.filter((w) => w.reason === 'idle').length;
      if (warning.reason === 'idle' && idleWarnings === 2) {
        entry.action = 'fetch';
        entry.sentAt = realNow();
        vestibule.fetch('/api/orders/hello').then((response) => { entry.status = response.status; });
      } else {
        entry.action = 'keepAlive';
        warning.keepAlive().then((user) => { entry.after = user ? user.session : null; });
      }
    });
  }, WARN);

  const warnings = await until('a warning of the absolute end, kept alive', async () => {
    const seen = await page.evaluate(() => window.warnings);
    const last = seen[seen.length - 1];
    return [last !== undefined && last.reason === 'absolute' && last.after !== undefined, seen];
  }, (ABSOLUTE + 20) * 1000);
  for (const w of warnings) {
    log(`warning: ${w.reason}, ends ${w.expiresAt} (in ${(w.expiresAt - w.firedAt).toFixed(1)} s), secondsLeft ${w.secondsLeft}, then ${w.action}`);
  }

  const idle = warnings.filter((w) => w.reason === 'idle');
  check(warnings[0].reason === 'idle', `the first warning is for the idle end: ${JSON.stringify(warnings[0])}`);
  check(idle.length >= 2, `at least two idle warnings before the absolute end: ${JSON.stringify(warnings)}`);
  check(warnings.filter((w) => w.reason === 'absolute').length === 1, 'the absolute end is warned once');
  for (const w of warnings) {
    const left = w.expiresAt - w.firedAt;
    check(left > 0, `a warning came after its end: ${JSON.stringify(w)}`);
    // `expiresAt` is the end floored to whole seconds, so `left` may read up to 1 s short.
    check(left <= WARN + SLACK && left >= WARN - SLACK - FLOOR, `a warning came ${left.toFixed(1)} s before its end, not ${WARN}: ${JSON.stringify(w)}`);
    check(Math.abs(w.secondsLeft - left) <= SLACK + FLOOR, `secondsLeft ${w.secondsLeft} is not the ${left.toFixed(1)} s left (the page's clock was not corrected)`);
  }
  for (const w of warnings.filter((x) => x.action === 'keepAlive' && x.reason === 'idle')) {
    check(w.after && w.after.idle_expires_at > w.expiresAt, `keepAlive did not move the server's idle deadline: ${JSON.stringify(w)}`);
    check(w.after.idle_expires_at >= Math.min(w.firedAt + IDLE - SLACK, w.after.expires_at), `the idle deadline after keepAlive is not a full idle timeout away: ${JSON.stringify(w)}`);
  }
  // After the fetch, the next warning is for the idle end that call set (less the interval
  // at which Vestibule may defer pushing it back: a tenth of the idle timeout, at least 1 s).
  const fetched = warnings.findIndex((w) => w.action === 'fetch');
  const next = warnings[fetched + 1];
  check(warnings[fetched].status === 200, `the fetch failed: ${JSON.stringify(warnings[fetched])}`);
  const deferred = Math.min(60, Math.max(1, IDLE / 10));
  const expected = Math.min(warnings[fetched].sentAt + IDLE - deferred, next.reason === 'absolute' ? next.expiresAt : Infinity);
  // Up to FLOOR earlier for the touch time in whole seconds, FLOOR more for `expiresAt`.
  check(next.expiresAt - expected <= SLACK && expected - next.expiresAt <= SLACK + 2 * FLOOR, `after a fetch the warning is not re-armed for its idle end (${expected.toFixed(1)}): ${JSON.stringify(next)}`);

  const absolute = warnings[warnings.length - 1];
  check(absolute.after.expires_at === absolute.expiresAt, `the absolute warning's end is not the session's: ${JSON.stringify(absolute)}`);
  log(`waiting for the absolute end at ${absolute.expiresAt}`);
  await until('the session to end at its absolute end', async () => {
    const user = await fetchUser(page);
    return [user.status === 401, { status: user.status, at: now() }];
  }, (absolute.expiresAt - now() + 5) * 1000);
  check(now() >= absolute.expiresAt - SLACK, `the session ended before the warned end ${absolute.expiresAt}`);
  const after = await page.evaluate(() => window.warnings.length);
  check(after === warnings.length, `warnings came after the absolute one: ${after - warnings.length}`);
  check(pageErrors.length === 0, `the page threw: ${pageErrors.join(' | ')}`);
}

await run(main);
