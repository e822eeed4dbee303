// Browser tests of the daemon's web console, in Debian's headless Chromium driven by
// playwright-core (no browser download). They run the real binary: `usagesync emulate` with a
// generated world, a real `usagesync sync` run, and `usagesync run` serving the console; then
// they use the console as an operator would, and save a screenshot of each page into
// docs/screenshots/.
//
//   node console.test.mjs /path/to/usagesync
//
// Environment: CHROMIUM (default /usr/bin/chromium), SCREENSHOTS (default docs/screenshots of
// the repository).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, writeFileSync, readFileSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import assert from 'node:assert/strict';
import { chromium } from 'playwright-core';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../../../..');
const bin = resolve(process.argv[2] || process.env.USAGESYNC_BIN || join(repo, 'target/debug/usagesync'));
const chromiumPath = process.env.CHROMIUM || '/usr/bin/chromium';
const shots = resolve(process.env.SCREENSHOTS || join(repo, 'docs/screenshots'));
const TIMEOUT = 60_000;

const TOKEN = 'console-t0ken-' + Math.random().toString(36).slice(2);
const SECRETS = ['emulator-secret', 'emulator-integration-key', TOKEN];
const env = {
  ...process.env,
  SF_CLIENT_SECRET: 'emulator-secret',
  PENDO_INTEGRATION_KEY: 'emulator-integration-key',
  CONSOLE_TOKEN: TOKEN,
  USAGESYNC_LOG: 'info',
  USAGESYNC_LOG_FORMAT: 'json',
};
delete env.USAGESYNC_CONFIG;

const children = [];
const work = mkdtempSync(join(tmpdir(), 'usagesync-browser-'));
let daemonLogs = '';

/** Starts the binary and resolves with the first `lines` lines of its stdout. */
function start(args, lines, onStderr) {
  const child = spawn(bin, args, { env, stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  child.stderr.on('data', (d) => onStderr && onStderr(d.toString()));
  const out = [];
  return new Promise((resolveLines, reject) => {
    const rl = createInterface({ input: child.stdout });
    rl.on('line', (l) => {
      out.push(l);
      if (out.length === lines) resolveLines(out);
    });
    child.on('exit', (code) => reject(new Error(`${args[0]} exited with ${code} before it was ready`)));
  });
}

/** Runs a command to completion; exit codes 3 and 4 (some records refused or deferred) are results. */
function usagesync(...args) {
  try {
    return execFileSync(bin, ['--config', join(work, 'usagesync.yaml'), ...args], { env, encoding: 'utf8' });
  } catch (e) {
    if (e.status === 3 || e.status === 4) return e.stdout;
    throw e;
  }
}

async function sfAdmin(sf, method, path, body) {
  const r = await fetch(`${sf}/__emulator/${path}`, {
    method,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body ?? {}),
  });
  assert.ok(r.ok, `emulator admin ${method} ${path}: ${r.status}`);
}

const seen = [];
async function snap(page, name, height = 900) {
  seen.push(await page.content());
  // The top of the page: long pages (a run's records) would make huge images.
  await page.screenshot({ path: join(shots, `${name}.png`), fullPage: true, clip: { x: 0, y: 0, width: 1280, height } });
  console.log(`  screenshot docs/screenshots/${name}.png`);
}

async function main() {
  mkdirSync(shots, { recursive: true });
  const [sfLine, pendoLine] = await start(['emulate', '--seed-salesforce', '--days', '30', '--accounts', '60', '--daily-api-requests', '120'], 2);
  const sf = sfLine.replace(/^salesforce /, '');
  const pendo = pendoLine.replace(/^pendo /, '');
  const config = readFileSync(join(repo, 'examples/usagesync.yaml'), 'utf8')
    .replace('http://127.0.0.1:8443', sf)
    .replace('http://127.0.0.1:8444', pendo)
    .replace('sqlite://usagesync.db', `sqlite://${join(work, 'state.db')}`)
    // A small org (see --daily-api-requests): no floor kept for other integrations.
    .replace('min_remaining: 5000', 'min_remaining: 0')
    + '\nconsole:\n  token: { env: CONSOLE_TOKEN }\n';
  writeFileSync(join(work, 'usagesync.yaml'), config);

  // A cause a person can fix: Salesforce refuses any engagement score above 30.
  await sfAdmin(sf, 'POST', 'validation-rules/Account', {
    name: 'Score_Cap', errorMessage: 'Score too high', errorField: 'Pendo_Engagement_Score__c',
    condition: { field: 'Pendo_Engagement_Score__c', operator: 'greaterThan', value: 50 },
  });
  const first = JSON.parse(usagesync('--json', 'sync', 'engagement'));
  assert.ok(first.written > 0 && first.failed > 0, `the first run writes some and fails some: ${first.written}/${first.failed}`);
  assert.ok(first.ambiguous_samples.length > 0, 'the generated world has an ambiguous account');
  console.log(`real run: ${first.written} written, ${first.failed} refused, ${first.ambiguous} ambiguous`);

  const [daemonLine] = await start(['--config', join(work, 'usagesync.yaml'), 'run', '--listen', '127.0.0.1:0'], 1,
    (d) => { daemonLogs += d; });
  const base = daemonLine.split(/\s+/).find((w) => w.startsWith('http://'));
  assert.ok(base, daemonLine);

  // Without the token: refused, to a script and to a browser.
  for (const path of ['/console/', '/console/failures', '/console/config', `/console/runs/${first.run_id}`]) {
    const r = await fetch(base + path, { redirect: 'manual' });
    assert.equal(r.status, 401, `${path} without a token`);
    const wrong = await fetch(base + path, { headers: { authorization: 'Bearer nope' } });
    assert.equal(wrong.status, 401, `${path} with a wrong token`);
  }
  const bearer = await fetch(base + '/console/', { headers: { authorization: `Bearer ${TOKEN}` } });
  assert.equal(bearer.status, 200, 'the Bearer token opens the console');

  // A fresh profile directory each time (playwright passes it as --user-data-dir).
  const context = await chromium.launchPersistentContext(join(work, 'chromium-profile'), {
    executablePath: chromiumPath,
    headless: true,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    viewport: { width: 1280, height: 900 },
    timeout: TIMEOUT,
  });
  try {
    context.setDefaultTimeout(TIMEOUT);
    const page = await context.newPage();

    console.log('scenario: login');
    const denied = await page.goto(base + '/console/');
    assert.equal(denied.status(), 401);
    await page.waitForSelector('input#token');
    await page.fill('input#token', 'not-the-token');
    await page.click('button[type=submit]');
    await page.waitForSelector('text=That is not the console token.');
    await snap(page, 'login');
    await page.fill('input#token', TOKEN);
    await page.click('button[type=submit]');
    await page.waitForSelector('table[data-test=workflows]');
    const cookies = await context.cookies();
    const session = cookies.find((c) => c.name === 'usagesync_console');
    assert.ok(session && session.httpOnly && session.sameSite === 'Strict', JSON.stringify(cookies));

    console.log('scenario: overview shows the real run');
    const overview = await page.textContent('table[data-test=workflows]');
    assert.match(overview, /engagement/);
    assert.match(overview, /partial/);
    assert.match(overview, new RegExp(String(first.written)));
    await snap(page, 'overview');

    console.log("scenario: a run's records, before → after, searchable");
    await page.click(`a[href="/console/runs/${first.run_id}"] >> nth=0`);
    await page.waitForSelector('table[data-test=records] tbody tr');
    const rows = await page.locator('table[data-test=records] tbody tr').count();
    assert.ok(rows >= first.written, `${rows} records shown`);
    assert.match(await page.textContent('table[data-test=steps]'), /deliver/);
    assert.match(await page.textContent('table[data-test=api-calls]'), /\d/);
    const sample = first.samples[0];
    assert.match(await page.textContent('table[data-test=records]'), /→/);
    await snap(page, 'run', 1400);
    await page.fill('form[data-test=search] input[name=q]', sample.salesforce_id);
    await page.click('form[data-test=search] button');
    await page.waitForURL(/q=/);
    await page.waitForSelector('table[data-test=records] tbody tr');
    assert.equal(await page.locator('table[data-test=records] tbody tr').count(), 1);
    // The Id opens the record in Salesforce (here the emulator: the token's instance URL).
    const href = await page.getAttribute('table[data-test=records] a[data-test=record-link]', 'href');
    assert.equal(href, `${sf.replace(/\/$/, '')}/${sample.salesforce_id}`);
    assert.match(await page.textContent('table[data-test=records]'), new RegExp(sample.pendo_account.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')));
    await page.fill('form[data-test=search] input[name=q]', 'no-such-account-anywhere');
    await page.click('form[data-test=search] button');
    await page.waitForSelector('[data-test=no-records]');

    console.log('scenario: a request without the CSRF token, or from another origin, is refused');
    const noCsrf = await context.request.post(base + '/console/failures/replay', {
      form: { scope: 'all' }, headers: { origin: base }, maxRedirects: 0,
    });
    assert.equal(noCsrf.status(), 403);
    await page.goto(base + '/console/failures');
    const csrf = await page.getAttribute('input[name=csrf] >> nth=0', 'value');
    const crossSite = await context.request.post(base + '/console/failures/replay', {
      form: { scope: 'all', csrf }, headers: { origin: 'http://evil.example' }, maxRedirects: 0,
    });
    assert.equal(crossSite.status(), 403);
    const noSession = await fetch(base + '/console/failures/replay', {
      method: 'POST', headers: { origin: base, 'content-type': 'application/x-www-form-urlencoded' },
      body: `scope=all&csrf=${csrf}`, redirect: 'manual',
    });
    assert.equal(noSession.status, 401);
    assert.match(usagesync('failures'), /FIELD_CUSTOM_VALIDATION_EXCEPTION/, 'nothing was replayed by the refused requests');

    console.log('scenario: fix the cause, replay a failure, watch it succeed');
    await page.goto(base + '/console/failures');
    await page.waitForSelector('table[data-test=groups]');
    assert.match(await page.textContent('table[data-test=groups]'), /FIELD_CUSTOM_VALIDATION_EXCEPTION[\s\S]*Score too high[\s\S]*validation rule/);
    const open = await page.locator('table[data-test=failures] tbody tr').count();
    assert.equal(open, first.failed);
    await snap(page, 'failures');
    await sfAdmin(sf, 'DELETE', 'validation-rules/Account');
    // Replaying one failure runs its workflow from the current config: every record the fix
    // unblocked is written, and every failure it settles is resolved, not only the one clicked.
    await page.click('table[data-test=failures] tbody tr >> nth=0 >> button[data-test^="replay-"]');
    await page.waitForURL(/\/console\/runs\//);
    await page.waitForSelector('[data-test=card-written]');
    assert.equal((await page.textContent('[data-test=card-written] b')).trim(), String(first.failed));
    assert.match(await page.textContent('body'), /trigger\s*replay/);
    await snap(page, 'replay');
    await page.goto(base + '/console/failures');
    await page.waitForSelector('[data-test=no-failures]');

    console.log('scenario: pin an ambiguous match; the next run writes it');
    const ambiguous = first.ambiguous_samples[0];
    const candidate = ambiguous.candidates[0];
    await page.goto(base + '/console/matching');
    await page.waitForSelector('table[data-test=ambiguous]');
    await snap(page, 'matching');
    await page.click(`button[data-test="pin-${ambiguous.pendo_account}-${candidate}"]`);
    await page.waitForSelector('[data-test=notice]');
    assert.match(await page.textContent('[data-test=notice]'), /the next run writes it/);
    assert.match(await page.textContent('table[data-test=pinned]'), new RegExp(candidate));
    const next = JSON.parse(usagesync('--json', 'sync', 'engagement'));
    assert.ok(next.written >= 1, `the next run writes the pinned account: ${JSON.stringify(next.written)}`);
    await page.goto(`${base}/console/runs/${next.run_id}?q=${encodeURIComponent(ambiguous.pendo_account)}`);
    await page.waitForSelector('table[data-test=records] tbody tr');
    const pinnedRow = await page.textContent('table[data-test=records] tbody tr');
    assert.match(pinnedRow, new RegExp(candidate));
    assert.match(pinnedRow, /updated|created/);

    console.log('scenario: API budget and config');
    await page.goto(base + '/console/budget');
    await page.waitForSelector('svg[data-test=budget-chart] rect[data-test=bar]');
    assert.ok(await page.locator('svg[data-test=budget-chart] line[data-test=cap]').count() === 1);
    await snap(page, 'budget');
    await page.goto(base + '/console/config');
    await page.waitForSelector('[data-test=config] details');
    const shown = await page.textContent('[data-test=config]');
    assert.match(shown, /CONSOLE_TOKEN/);
    assert.match(shown, /SF_CLIENT_SECRET/);
    await snap(page, 'config');
    await page.goto(base + '/console/');
    await page.waitForSelector('table[data-test=runs]');
    await snap(page, 'overview');

    console.log('scenario: log out');
    await page.click('header button');
    await page.waitForSelector('input#token');
    const after = await page.goto(base + '/console/');
    assert.equal(after.status(), 401);
  } finally {
    await context.close();
  }

  for (const html of seen) {
    for (const s of SECRETS) assert.ok(!html.includes(s), 'a page showed a secret');
  }
  for (const s of SECRETS) assert.ok(!daemonLogs.includes(s), 'the daemon logged a secret');
  assert.match(daemonLogs, /Console: match pinned/);
}

let failed = false;
try {
  await main();
  console.log('browser tests: all scenarios passed');
} catch (e) {
  failed = true;
  console.error('browser tests FAILED:', e);
  if (daemonLogs) console.error('daemon log tail:\n' + daemonLogs.split('\n').slice(-20).join('\n'));
} finally {
  for (const c of children) c.kill('SIGTERM');
  rmSync(work, { recursive: true, force: true });
}
process.exit(failed ? 1 : 0);
