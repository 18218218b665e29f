// SPDX-License-Identifier: Apache-2.0
// The control service's dashboard in a real headless Chromium (Debian's,
// driven by playwright-core; no browser download), as an operator uses it:
// sign in with a token, see the regions, see a lock made through the API
// appear without a reload (badge and ticking countdown), see a viewer's
// action refused with the API's 403 text, lock a region from the page
// (dry run first, then Confirm), meet the two-person rule (202 pending with
// the request id), unlock with a pin (its preview is the server's dry run,
// with the devices the lock holds back), preview unlock-all as an admin,
// open a region's detail, and save a screenshot. Run by
// tests/integration/test_dashboard_browser.py, which starts
// fleetgate-control and passes:
//   FG_DASHBOARD_URL   http://127.0.0.1:PORT/
//   FG_TOKEN_VIEWER, FG_TOKEN_OPERATOR, FG_TOKEN_ADMIN   tokens of those roles
//   FG_SCREENSHOT      where to save the PNG
//   FG_SCREENSHOT_DOCS optional second PNG (the README's picture)
//   FG_CHROMIUM        the browser (default /usr/bin/chromium)
// Prints "ok <step>" per step, and "dry-run <action> <request id> <devices>"
// for each unlock preview (the driver finds their audit records); exits 1
// with the reason on the first failure.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';

function need(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run through test_dashboard_browser.py)`);
  return v;
}

const url = need('FG_DASHBOARD_URL');
const origin = new URL(url).origin;
const viewer = need('FG_TOKEN_VIEWER');
const operator = need('FG_TOKEN_OPERATOR');
const admin = need('FG_TOKEN_ADMIN');
const shot = need('FG_SCREENSHOT');
const docsShot = process.env.FG_SCREENSHOT_DOCS || '';
const executablePath = process.env.FG_CHROMIUM || '/usr/bin/chromium';
const t0 = Date.now();

function step(what) {
  console.log(`ok ${what} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
}

// One API call from outside the page (as another operator would).
async function call(method, p, token, body) {
  const res = await fetch(origin + p, {
    method,
    headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: await res.json() };
}

async function signIn(page, token) {
  await page.locator('#login').waitFor({ state: 'visible' });
  await page.fill('#token', token);
  await page.click('#login button[type=submit]');
  await page.locator('#rows tr[data-region="CU"]').waitFor({ timeout: 10000 });
}

const row = (page, code) => page.locator(`#rows tr[data-region="${code}"]`);

// Fills the open action dialog's fields by name.
async function fill(page, fields) {
  for (const [name, value] of Object.entries(fields)) {
    const input = page.locator(`#f-${name}`);
    if (await input.evaluate((e) => e.tagName === 'SELECT')) await input.selectOption(value);
    else await input.fill(String(value));
  }
}

const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fg-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath,
    headless: true,
    viewport: { width: 1440, height: 800 },
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = context.pages()[0] || await context.newPage();
  page.setDefaultTimeout(10000);
  const foreign = [];
  const consoleErrors = [];
  page.on('request', (r) => {
    if (!r.url().startsWith(origin + '/')) foreign.push(r.url());
  });
  page.on('console', (m) => {
    // A refused API call (the 403 we provoke) is logged by the browser as a
    // failed load; everything else (CSP refusals, script errors) is ours.
    if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) consoleErrors.push(m.text());
  });
  page.on('pageerror', (e) => consoleErrors.push(String(e)));

  // --- the page loads from the binary, without a token ---
  const res = await page.goto(url);
  assert.equal(res.status(), 200);
  assert.match(res.headers()['content-security-policy'] || '', /default-src 'self'/);
  await signIn(page, viewer);
  await page.evaluate(() => { window.fgNoReload = 'same page'; });
  const codes = await page.locator('#rows tr').evaluateAll((trs) => trs.map((t) => t.dataset.region));
  assert.ok(codes.length >= 5 && codes.includes('US') && codes.includes('SY'), `rows: ${codes}`);
  assert.equal(await row(page, 'SY').getAttribute('data-state'), 'locked');
  assert.equal(await row(page, 'IR').getAttribute('data-state'), 'shadow');
  await page.locator('#conn[data-state="live"]').waitFor({ timeout: 10000 });
  step('signed in as a viewer: table filled, stream live');

  // --- a lock made through the API shows up without a reload ---
  assert.equal(await row(page, 'US').getAttribute('data-state'), 'unlocked');
  const made = await call('POST', '/v1/regions/US/lock', operator,
    { ttl_s: 900, scope: 'grey', reason: 'carrier import batch under review', message: 'Paused for review.' });
  assert.equal(made.status, 200, JSON.stringify(made.body));
  await page.locator('#rows tr[data-region="US"][data-state="locked"]').waitFor({ timeout: 10000 });
  const us = row(page, 'US');
  assert.equal((await us.locator('.badge').textContent()).trim(), 'locked');
  assert.match(await us.locator('td.reason').textContent(), /carrier import batch under review/);
  const cd1 = (await us.locator('td.countdown').textContent()).trim();
  assert.match(cd1, /^1[45]m \d\ds$/, `countdown "${cd1}"`);
  await page.waitForTimeout(2100);
  const cd2 = (await us.locator('td.countdown').textContent()).trim();
  assert.match(cd2, /^1[45]m \d\ds$/);
  assert.notEqual(cd2, cd1, 'the countdown does not tick');
  assert.equal(await page.evaluate(() => window.fgNoReload), 'same page', 'the page reloaded');
  step(`API lock of US shown live (countdown ${cd1} -> ${cd2})`);

  // --- a viewer's action: the API's 403 text ---
  await row(page, 'CU').locator('button[data-action="lock"]').click();
  await fill(page, { reason: 'viewer tries' });
  await page.click('#action-dry');
  await page.locator('#action-error').filter({ hasText: '403 forbidden' }).waitFor();
  assert.match(await page.textContent('#action-error'), /needs role operator; vic has viewer/);
  assert.ok(await page.locator('#action-confirm').isDisabled());
  await page.click('#action-cancel');
  step('viewer lock refused with the 403 text');

  // --- as an operator: lock CU from the page, dry run first ---
  await page.click('#signout');
  await signIn(page, operator);
  await page.locator('#conn[data-state="live"]').waitFor();
  await row(page, 'CU').locator('button[data-action="lock"]').click();
  await fill(page, { ttl_s: 300, scope: 'grey', reason: 'grey import wave (OPS-1423)', message: 'Service is paused in your region.' });
  assert.ok(await page.locator('#action-confirm').isDisabled(), 'Confirm before a dry run');
  await page.click('#action-dry');
  const preview = page.locator('#action-preview');
  await preview.filter({ hasText: 'Dry run: nothing written' }).waitFor();
  const pv = await preview.textContent();
  assert.match(pv, /estimated devices\s*190/, pv);
  assert.match(pv, /regions affected\s*1: CU/, pv);
  const still = await call('GET', '/v1/regions/CU', viewer);
  assert.equal(still.body.state, 'unlocked', 'the dry run locked CU');
  // An edit after the preview needs a new one.
  await fill(page, { ttl_s: 301 });
  assert.ok(await page.locator('#action-confirm').isDisabled(), 'Confirm after an edit');
  await fill(page, { ttl_s: 300 });
  await page.click('#action-dry');
  await preview.filter({ hasText: 'Dry run' }).waitFor();
  await page.click('#action-confirm');
  await preview.filter({ hasText: 'Locked CU' }).waitFor();
  await page.click('#action-cancel');
  await page.locator('#rows tr[data-region="CU"][data-state="locked"]').waitFor();
  assert.match(await row(page, 'CU').locator('td.countdown').textContent(), /^[45]m \d\ds$/);
  const cu = await call('GET', '/v1/regions/CU', viewer);
  assert.equal(cu.body.state, 'locked');
  assert.equal(cu.body.reason, 'grey import wave (OPS-1423)');
  assert.equal(cu.body.message, 'Service is paused in your region.');
  assert.equal(cu.body.actor, 'alice');
  assert.equal(cu.body.until - cu.body.since, 300000);
  step('operator locked CU: dry run, Confirm, record as typed');

  // --- the two-person rule: 202 with the request id ---
  await row(page, 'US').locator('button[data-action="lock"]').click();
  await fill(page, { scope: 'all', reason: 'nationwide check' });
  await page.click('#action-dry');
  await preview.filter({ hasText: 'another admin must approve' }).waitFor();
  await page.click('#action-confirm');
  await preview.filter({ hasText: 'Waiting for a second admin' }).waitFor();
  assert.match(await preview.textContent(), /request\s*req-[0-9a-f]{16}/);
  await page.click('#action-cancel');
  step('lock over the threshold: pending request id shown');

  // --- unlock US with a pin: the preview is the server's dry run ---
  const usNow = (await call('GET', '/v1/regions/US', viewer)).body;
  assert.equal(usNow.state, 'locked');
  assert.equal(usNow.scope, 'grey');
  await row(page, 'US').locator('button[data-action="unlock"]').click();
  await fill(page, { reason: 'checked: legitimate retail stock', pin_s: 120 });
  await page.click('#action-dry');
  await preview.filter({ hasText: 'Dry run: nothing written' }).waitFor();
  const upv = await preview.textContent();
  assert.match(upv, /regions affected\s*1: US/, upv);
  // A grey lock holds back the region's grey devices.
  assert.match(upv, new RegExp(`estimated devices\\s*${usNow.grey.toLocaleString('en-US')}(?!\\d)`), upv);
  assert.match(upv, /would write\s*unlocked, pinned 2m 00s/, upv);
  const urid = (upv.match(/request\s*(req-[0-9a-f]{16})/) || [])[1];
  assert.ok(urid, `no request id in the preview: ${upv}`);
  console.log(`dry-run unlock ${urid} ${usNow.grey}`);
  assert.equal((await call('GET', '/v1/regions/US', viewer)).body.state, 'locked', 'the dry run unlocked US');
  assert.ok(!(await page.locator('#action-confirm').isDisabled()), 'Confirm after the dry run');
  await page.click('#action-confirm');
  await preview.filter({ hasText: 'Unlocked US' }).waitFor();
  await page.click('#action-cancel');
  await page.locator('#rows tr[data-region="US"][data-state="unlocked"]').waitFor();
  assert.match(await row(page, 'US').locator('td.countdown').textContent(), /^pinned [12]m/);
  step('operator unlocked US with a pin');

  // --- unlock-all previewed by an admin (another tab: its own session) ---
  const locked = (await call('GET', '/v1/regions?state=locked', viewer)).body.regions;
  const held = locked.reduce((n, r) => n + (r.scope === 'all' ? r.devices : r.grey), 0);
  const codesLocked = locked.map((r) => r.region).join(', ');
  assert.ok(locked.length >= 2, `locked: ${codesLocked}`);
  const adminPage = await context.newPage();
  adminPage.on('pageerror', (e) => consoleErrors.push(String(e)));
  await adminPage.goto(url);
  await signIn(adminPage, admin);
  await adminPage.click('#unlock-all');
  await fill(adminPage, { reason: 'rollback?' });
  await adminPage.click('#action-dry');
  const apv = adminPage.locator('#action-preview');
  await apv.filter({ hasText: 'Dry run: nothing written' }).waitFor();
  const allText = await apv.textContent();
  assert.match(allText, new RegExp(`regions affected\\s*${locked.length}: ${codesLocked}`), allText);
  assert.match(allText, new RegExp(`estimated devices\\s*${held.toLocaleString('en-US')}(?!\\d)`), allText);
  const arid = (allText.match(/request\s*(req-[0-9a-f]{16})/) || [])[1];
  assert.ok(arid, `no request id in the preview: ${allText}`);
  console.log(`dry-run unlock_all ${arid} ${held}`);
  await adminPage.click('#action-cancel');
  await adminPage.close();
  const stillLocked = (await call('GET', '/v1/regions?state=locked', viewer)).body.regions;
  assert.equal(stillLocked.length, locked.length, 'the unlock-all preview unlocked something');
  step(`admin previewed unlock-all: ${locked.length} regions, ${held} devices held back`);

  // --- sorting and the region detail ---
  await page.click('#regions th[data-key="share"]');
  await page.locator('#regions th[data-key="share"][aria-sort="descending"]').waitFor();
  const byShare = await page.locator('#rows tr').evaluateAll((trs) => trs.map((t) => t.dataset.region));
  assert.equal(byShare[0], 'CU', `sorted by share: ${byShare}`);
  await row(page, 'CU').locator('td.code').click();
  const detail = page.locator('#detail');
  await detail.locator('h2').filter({ hasText: 'CU' }).waitFor();
  await detail.locator('.spark, .history-state:not(:text("loading"))').first().waitFor();
  const hasChart = await detail.locator('.spark polyline').count();
  assert.match(await detail.textContent(), /grey import wave \(OPS-1423\)/);
  step(`detail of CU (${hasChart ? 'history chart' : 'no history'})`);

  assert.deepEqual(foreign, [], 'requests left the origin');
  assert.deepEqual(consoleErrors, [], 'console errors');
  await page.waitForFunction(() => !document.querySelector('tr.flash'));
  fs.mkdirSync(path.dirname(shot), { recursive: true });
  await page.screenshot({ path: shot });
  console.log(`screenshot ${shot}`);
  if (docsShot) {
    fs.mkdirSync(path.dirname(docsShot), { recursive: true });
    await page.screenshot({ path: docsShot });
    console.log(`screenshot ${docsShot}`);
  }
  step('done');
} finally {
  if (context) await context.close();
  fs.rmSync(userDataDir, { recursive: true, force: true });
}
