// Shared pieces of the browser end-to-end scripts: logging, checks, waiting for conditions,
// launching Debian's Chromium, and driving the provider's pages as a user does.

import * as fs from 'node:fs';
import { chromium } from 'playwright-core';

export const BASE = (process.env.VESTIBULE_URL || '').replace(/\/+$/, '');
export const USER = process.env.E2E_USER || 'alice';
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const TOTAL_TIMEOUT_MS = 1000 * Number(process.env.E2E_TIMEOUT_SECS || 90);
export const STEP_TIMEOUT_MS = 15_000;

const started = Date.now();
export function log(message) {
  const seconds = ((Date.now() - started) / 1000).toFixed(1).padStart(5);
  process.stderr.write(`[e2e ${seconds}s] ${message}\n`);
}

export class CheckFailed extends Error {}
export function fail(message) {
  throw new CheckFailed(message);
}
export function check(condition, message) {
  if (!condition) fail(message);
}
export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Polls `probe` (async, returns [ok, seen]) until ok; fails with what was last seen. */
export async function until(what, probe, timeoutMs = STEP_TIMEOUT_MS) {
  const deadline = Date.now() + timeoutMs;
  let seen;
  for (;;) {
    try {
      let ok;
      [ok, seen] = await probe();
      if (ok) return seen;
    } catch (error) {
      // A navigation may destroy the context mid-probe; try again.
      seen = `(error: ${error.message.split('\n')[0]})`;
    }
    if (Date.now() > deadline) {
      fail(`timed out after ${timeoutMs / 1000} s waiting for ${what}; last seen: ${JSON.stringify(seen)}`);
    }
    await sleep(100);
  }
}

const ORIGIN = BASE ? new URL(BASE).origin : '';

let browser;
const watchdog = setTimeout(() => {
  log(`FAILED: the whole run took longer than ${TOTAL_TIMEOUT_MS / 1000} s`);
  browser?.close().catch(() => {});
  process.exit(1);
}, TOTAL_TIMEOUT_MS);
watchdog.unref();

/** The page's visible text (shortened), for failure messages. */
export async function pageSummary(page) {
  const text = await page.locator('body').innerText({ timeout: 2000 }).catch(() => '(no body)');
  return `${page.url()} — "${text.replace(/\s+/g, ' ').trim().slice(0, 300)}"`;
}

/** Resolves on the next committed main-frame navigation (redirects commit only at the end). */
export function nextNavigation(page, what) {
  return page
    .waitForEvent('framenavigated', { predicate: (frame) => frame === page.mainFrame(), timeout: STEP_TIMEOUT_MS })
    .catch(() => fail(`${what} did not navigate within ${STEP_TIMEOUT_MS / 1000} s (at ${page.url()})`));
}

export function isBackAtApp(page) {
  const url = new URL(page.url());
  return url.origin === ORIGIN && !url.pathname.startsWith('/api/auth/');
}

/**
 * Drives the provider's pages: fills the login form, submits consent, logout confirmation or
 * any other form (each provider page has exactly one), until the browser is back on the app.
 */
export async function followProviderUntilBackAtApp(page, what) {
  for (let step = 1; step <= 6; step += 1) {
    await page.waitForLoadState('load', { timeout: STEP_TIMEOUT_MS });
    if (isBackAtApp(page)) {
      log(`${what}: back at ${page.url()}`);
      return;
    }
    const form = page.locator('form').first();
    if ((await page.locator('form').count()) === 0) {
      // An auto-redirecting or auto-submitting page, or an error page.
      const stuckAt = page.url();
      log(`${what}: no form at ${stuckAt}; waiting for the page to move on`);
      const moved = await page
        .waitForEvent('framenavigated', { predicate: (f) => f === page.mainFrame(), timeout: 5000 })
        .then(() => true, () => page.url() !== stuckAt);
      if (!moved) fail(`${what}: stuck on a page without a form: ${await pageSummary(page)}`);
      continue;
    }
    // What the form holds, read in one go (locator reads would wait for missing elements).
    const shape = await form.evaluate((f) => {
      const submitter = f.querySelector('button[type="submit"], input[type="submit"], button:not([type])');
      const fieldNames = new Set(Array.from(f.elements).filter((e) => e !== submitter && e.name).map((e) => e.name));
      return {
        login: !!f.querySelector('input[name="login"]'),
        password: !!f.querySelector('input[name="password"]'),
        prompt: f.querySelector('input[name="prompt"]')?.value ?? null,
        submitter: !!submitter,
        // A named submit button duplicating another field: clicking it sends that field twice.
        duplicate: submitter && submitter.name && fieldNames.has(submitter.name) ? submitter.name : null,
      };
    });
    const where = new URL(page.url()).pathname;
    if (shape.login) {
      log(`${what}: provider login form at ${where}; signing in as ${USER}`);
      await form.locator('input[name="login"]').fill(USER);
      if (shape.password) await form.locator('input[name="password"]').fill('any-password');
    } else {
      log(`${what}: submitting the provider's ${shape.prompt ? `${shape.prompt} ` : ''}form at ${where}`);
    }
    // A user clicks the button; a button that repeats another field would make that click fail.
    check(!shape.duplicate, `${what}: the submit button repeats the field "${shape.duplicate}"`);
    const navigated = nextNavigation(page, `${what}: submitting the form at ${page.url()}`);
    if (shape.submitter) {
      await form
        .locator('button[type="submit"], input[type="submit"], button:not([type])')
        .first()
        .click({ timeout: STEP_TIMEOUT_MS, noWaitAfter: true });
    } else {
      await form.evaluate((f) => f.requestSubmit());
    }
    await navigated;
  }
  await page.waitForLoadState('load', { timeout: STEP_TIMEOUT_MS });
  check(isBackAtApp(page), `${what}: not back at ${ORIGIN} after 6 provider pages: ${await pageSummary(page)}`);
}


/** Launches Debian's Chromium headless (never a downloaded browser) with one page. */
export async function launch() {
  check(BASE, 'VESTIBULE_URL is not set (e.g. http://127.0.0.1:8080)');
  check(fs.existsSync(CHROMIUM), `no browser at ${CHROMIUM}: apt-get install -y chromium chromium-driver (or set CHROMIUM_PATH)`);
  log(`launching ${CHROMIUM} (headless) for ${BASE} as ${USER}`);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
      '--no-first-run', '--disable-sync', '--disable-quic',
    ],
  });
  log(`browser: Chromium ${browser.version()}`);
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  context.setDefaultTimeout(STEP_TIMEOUT_MS);
  context.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  const page = await context.newPage();
  return { context, page };
}

/** Runs `main`, prints PASSED or FAILED with the reason, sets the exit code, closes the browser. */
export async function run(main) {
  try {
    await main();
    log(`PASSED in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    process.exitCode = 0;
  } catch (error) {
    log(`FAILED: ${error instanceof CheckFailed ? error.message : error.stack || error}`);
    process.exitCode = 1;
  } finally {
    await browser?.close().catch(() => {});
    clearTimeout(watchdog);
  }
}

/** GET /api/auth/user from the page, as the SPA does. */
export function fetchUser(page) {
  return page.evaluate(async () => {
    const response = await fetch('/api/auth/user', { headers: { 'X-CSRF': '1' } });
    return { status: response.status, body: await response.json().catch(() => null) };
  });
}
