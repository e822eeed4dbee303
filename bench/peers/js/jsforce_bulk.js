// Peer: the Node script a capable admin would write with jsforce (pinned in package.json). The
// same job as bench/peers/common.py's scripts: the same Pendo aggregations, the same score
// formula, the same match, the same nine Account fields. Its approach is the strongest of the
// Python two put together: one Bulk API 2.0 query reads every Account with its current Pendo
// fields, the figures are compared, and only the changed Accounts go out, in one Bulk API 2.0
// update job (none when nothing changed). Failed rows are read only when the job reports some.
//
//   node jsforce_bulk.js SALESFORCE_URL PENDO_URL      (bench/peers.sh runs it)
//
// Loopback only: both URLs and the token's instance URL must be 127.0.0.1, and jsforce's
// proxy-from-environment is switched off by clearing those variables before it loads.
'use strict';

for (const k of ['http_proxy', 'https_proxy', 'HTTP_PROXY', 'HTTPS_PROXY', 'all_proxy', 'ALL_PROXY']) {
  delete process.env[k];
}
const jsforce = require('jsforce');

const PENDO_KEY = process.env.PENDO_INTEGRATION_KEY || 'emulator-integration-key';
const CLIENT_ID = 'usagesync-emulator';
const CLIENT_SECRET = process.env.SF_CLIENT_SECRET || 'emulator-secret';
const WINDOW_DAYS = 30;
const VERSION = '60.0';

// Field → [score weight, target], as common.py (the demo's engagement workflow).
const SCORE = {
  active_visitors: [0.3, 25],
  active_days: [0.3, 20],
  minutes: [0.1, 600],
  feature_adoption: [0.2, 1.0],
  guide_completion: [0.1, 1.0],
};
const FIELDS = {
  active_visitors: 'Pendo_Active_Visitors__c',
  active_days: 'Pendo_Active_Days__c',
  events: 'Pendo_Events__c',
  minutes: 'Pendo_Minutes__c',
  feature_adoption: 'Pendo_Feature_Adoption__c',
  guide_completion: 'Pendo_Guide_Completion__c',
  last_active: 'Pendo_Last_Active__c',
  score: 'Pendo_Engagement_Score__c',
};
const UPDATED = 'Pendo_Engagement_Updated__c';

function loopback(url) {
  // The emulator speaks plain http; a token naming https://127.0.0.1 is spoken to over http,
  // as common.py's LoopbackSession does. Anything not on 127.0.0.1 is refused.
  const u = url.replace(/\/+$/, '').replace(/^https:\/\/127\.0\.0\.1/, 'http://127.0.0.1');
  if (!/^http:\/\/127\.0\.0\.1(:\d+)?$/.test(u)) throw new Error(`not a loopback URL: ${url}`);
  return u;
}

async function post(url, headers, body) {
  const res = await fetch(url, { method: 'POST', headers, body, signal: AbortSignal.timeout(600_000) });
  const text = await res.text();
  if (!res.ok) throw new Error(`POST ${url}: ${res.status} ${text.slice(0, 300)}`);
  return JSON.parse(text);
}

async function salesforce(loginUrl) {
  const token = await post(
    `${loginUrl}/services/oauth2/token`,
    { 'content-type': 'application/x-www-form-urlencoded' },
    new URLSearchParams({ grant_type: 'client_credentials', client_id: CLIENT_ID, client_secret: CLIENT_SECRET }),
  );
  const conn = new jsforce.Connection({
    instanceUrl: loopback(token.instance_url),
    accessToken: token.access_token,
    version: VERSION,
  });
  // jsforce's defaults poll every second for at most 30 s; a large job can take longer.
  conn.bulk2.pollTimeout = 600_000;
  return conn;
}

async function aggregate(pendoUrl, pipeline) {
  const body = { response: { mimeType: 'application/json' }, request: { pipeline } };
  const out = await post(
    `${pendoUrl}/api/v1/aggregation`,
    { 'x-pendo-integration-key': PENDO_KEY, 'content-type': 'application/json' },
    JSON.stringify(body),
  );
  return out.results;
}

const windowSpec = () => ({ period: 'dayRange', first: 'now()', count: -WINDOW_DAYS });
const eventsSource = () => ({ source: { events: { appId: 'expandAppIds("*")' }, timeSeries: windowSpec() } });

// Python's round(x, 1): to nearest, ties to even, on the double's exact decimal value (which
// toFixed(60) spells out for the magnitudes of a score).
function round1(x) {
  const [int, frac] = Math.abs(x).toFixed(60).split('.');
  let tenths = BigInt(int) * 10n + BigInt(frac[0]);
  const rest = frac.slice(1);
  const tie = /^50*$/.test(rest);
  if ((rest[0] >= '5' && !tie) || (tie && tenths % 2n === 1n)) tenths += 1n;
  return (Math.sign(x) || 1) * (Number(tenths) / 10);
}

// {pendo account id: {field: value}} and {pendo account id: sfdcaccountid or null}.
async function pendoUsage(pendoUrl) {
  const usage = new Map();
  const sfdc = new Map();
  for (const a of await aggregate(pendoUrl, [
    { source: { accounts: null } },
    { select: { accountId: 'accountId', lastvisit: 'metadata.auto.lastvisit', sfdc: 'metadata.custom.sfdcaccountid' } },
  ])) {
    if (!a.accountId) continue;
    if (!usage.has(a.accountId)) {
      usage.set(a.accountId, { visitors: 0, days: 0, events: 0, minutes: 0, core: 0, seen: 0, done: 0 });
    }
    usage.get(a.accountId).last = a.lastvisit || null;
    sfdc.set(a.accountId, a.sfdc || null);
  }
  for (const row of await aggregate(pendoUrl, [
    eventsSource(),
    { group: { group: ['accountId', 'day'], fields: { events: { sum: 'numEvents' }, minutes: { sum: 'numMinutes' } } } },
    {
      group: {
        group: ['accountId'],
        fields: { days: { count: 'day' }, events: { sum: 'events' }, minutes: { sum: 'minutes' } },
      },
    },
  ])) {
    const u = usage.get(row.accountId);
    if (u) Object.assign(u, { days: row.days, events: row.events, minutes: row.minutes });
  }
  for (const row of await aggregate(pendoUrl, [
    eventsSource(),
    { identified: 'visitorId' },
    { group: { group: ['accountId', 'visitorId'], fields: {} } },
    { group: { group: ['accountId'], fields: { visitors: { count: 'visitorId' } } } },
  ])) {
    const u = usage.get(row.accountId);
    if (u) u.visitors = row.visitors;
  }
  const core = (
    await aggregate(pendoUrl, [{ source: { features: { appId: 'expandAppIds("*")' } } }, { filter: 'isCoreEvent == true' }])
  ).map((f) => f.id);
  if (core.length) {
    const isCore = core.map((c) => `featureId == "${c}"`).join(' || ');
    for (const row of await aggregate(pendoUrl, [
      { source: { featureEvents: { appId: 'expandAppIds("*")' }, timeSeries: windowSpec() } },
      { filter: isCore },
      { group: { group: ['accountId', 'featureId'], fields: {} } },
      { group: { group: ['accountId'], fields: { features: { count: 'featureId' } } } },
    ])) {
      const u = usage.get(row.accountId);
      if (u) u.core = row.features;
    }
  }
  // A guide's last step: the highest rank, the later one on a tie (as common.py's max()).
  const lastSteps = [];
  for (const g of await aggregate(pendoUrl, [{ source: { guides: { appId: 'expandAppIds("*")' } } }])) {
    const steps = g.steps || [];
    if (!steps.length) continue;
    let best = 0;
    steps.forEach((s, i) => {
      const r = s.rank ?? -Infinity;
      const b = steps[best].rank ?? -Infinity;
      if (r >= b) best = i;
    });
    lastSteps.push(steps[best].id);
  }
  let relevant = 'type == "guideSeen"';
  if (lastSteps.length) {
    relevant += ' || (type == "guideAdvanced" && (' + lastSteps.map((s) => `guideStepId == "${s}"`).join(' || ') + '))';
  }
  for (const row of await aggregate(pendoUrl, [
    { source: { guideEvents: { appId: 'expandAppIds("*")' }, timeSeries: windowSpec() } },
    { identified: 'visitorId' },
    { filter: relevant },
    { group: { group: ['accountId', 'visitorId', 'guideId', 'type'], fields: {} } },
    { eval: { one: '1' } },
    { group: { group: ['accountId', 'type'], fields: { pairs: { sum: 'one' } } } },
  ])) {
    const u = usage.get(row.accountId);
    if (u && row.type === 'guideSeen') u.seen = row.pairs;
    else if (u && row.type === 'guideAdvanced') u.done = row.pairs;
  }
  const ratio = (n, d) => (d === 0 ? 0 : Math.max(0, Math.min(1, n / d)));
  const weights = Object.values(SCORE).reduce((s, [w]) => s + w, 0);
  const values = new Map();
  for (const [aid, u] of usage) {
    const figures = {
      active_visitors: u.visitors,
      active_days: u.days,
      events: u.events,
      minutes: u.minutes,
      feature_adoption: ratio(Math.min(u.core, core.length), core.length),
      guide_completion: ratio(u.done, u.seen),
    };
    let total = 0;
    for (const [m, [w, t]] of Object.entries(SCORE)) total += w * Math.max(0, Math.min(1, figures[m] / t));
    figures.score = round1((100 * total) / weights);
    figures.last_active = u.last ? new Date(u.last).toISOString() : null;
    const v = {};
    for (const [k, x] of Object.entries(figures)) v[FIELDS[k]] = x;
    values.set(aid, v);
  }
  return { values, sfdc };
}

// A Bulk query cell (a string, empty for null) against the value the script would write.
function same(current, wanted) {
  if (wanted === null || wanted === undefined) return current === '' || current === null || current === undefined;
  if (current === '' || current === null || current === undefined) return false;
  if (typeof wanted === 'string') {
    const a = Date.parse(current);
    const b = Date.parse(wanted);
    return Number.isNaN(a) || Number.isNaN(b) ? current === wanted : a === b;
  }
  return Math.abs(Number(current) - wanted) < 1e-9;
}

async function main(loginUrl, pendoUrl) {
  const started = process.hrtime.bigint();
  const conn = await salesforce(loopback(loginUrl));
  const { values, sfdc } = await pendoUsage(loopback(pendoUrl));
  const fields = Object.values(FIELDS).join(', ');
  const accounts = await (await conn.bulk2.query(`SELECT Id, Pendo_Account_Id__c, ${fields} FROM Account`)).toArray();
  // The match of common.py: the Id kept in Pendo when that Account exists, else the Account
  // that keeps the Pendo id.
  const byId = new Map(accounts.map((a) => [a.Id, a]));
  const byPendo = new Map(accounts.filter((a) => a.Pendo_Account_Id__c).map((a) => [a.Pendo_Account_Id__c, a]));
  const stamp = new Date().toISOString();
  const changed = new Map();
  for (const [aid, v] of values) {
    const a = byId.get(sfdc.get(aid) || '') || byPendo.get(aid);
    if (!a || Object.entries(v).every(([k, x]) => same(a[k], x))) continue;
    changed.set(a.Id, { Id: a.Id, [UPDATED]: stamp, ...v });
  }
  let written = 0;
  if (changed.size) {
    const job = conn.bulk2.createJob({ object: 'Account', operation: 'update' });
    await job.open();
    await job.uploadData([...changed.values()]);
    await job.close();
    await job.poll();
    const info = job.getInfo();
    if (Number(info.numberRecordsFailed) > 0) {
      const failed = await job.getFailedResults();
      throw new Error(`${info.numberRecordsFailed} records failed in job ${info.id}: ${JSON.stringify(failed[0])}`);
    }
    written = Number(info.numberRecordsProcessed);
  }
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  console.log(JSON.stringify({ contender: 'jsforce bulk + diff script', written, seconds: Math.round(seconds * 100) / 100 }));
}

main(...process.argv.slice(2, 4)).catch((err) => {
  console.error(err && err.stack ? err.stack : err);
  process.exit(1);
});
