// The official Salesforce CLI (sf, unmodified) against the usagesync Salesforce emulator over https.
//
// Started by run.sh, which sets SF_EMULATOR_URL (https://127.0.0.1:PORT), SF_CLI_BIN (the CLI's
// bin/run.js), SF_JWT_KEY, SF_WORK (a scratch folder) and a private HOME, config, data and cache
// for the CLI, with NODE_EXTRA_CA_CERTS trusting the emulator's self-signed certificate.
//
// Every check reads the data back from the emulator (its admin API or the REST API) and compares
// it with what the CLI was asked to do or what it printed; an exit code alone proves nothing.
// The tests run in order and share one org: the logins come first, later tests use their aliases.

import { test as nodeTest } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';

const BASE = (process.env.SF_EMULATOR_URL || '').replace(/\/+$/, '');
const CLI = process.env.SF_CLI_BIN;
const JWT_KEY = process.env.SF_JWT_KEY;
const WORK = process.env.SF_WORK;
const CLIENT_ID = 'usagesync-emulator';
const CLIENT_SECRET = 'emulator-secret';
const USERNAME = 'integration@usagesync.test';
const PASSWORD = 'emulator-password';
const ORG_ID = '00D8d0000000001EAA';

if (!/^https:\/\/(127\.0\.0\.1|localhost):\d+$/.test(BASE)) {
  throw new Error(`SF_EMULATOR_URL must be a loopback https URL (got '${BASE}'): run through run.sh`);
}
for (const [name, v] of Object.entries({ SF_CLI_BIN: CLI, SF_JWT_KEY: JWT_KEY, SF_WORK: WORK })) {
  if (!v) throw new Error(`${name} is not set: run through run.sh`);
}

const TEST_TIMEOUT_MS = 180_000;
const test = (name, fn) => nodeTest(name, { timeout: TEST_TIMEOUT_MS }, fn);

// ---------------------------------------------------------------------------------------------
// Running the CLI, and reading the emulator directly.
// ---------------------------------------------------------------------------------------------

/** Runs `sf ARGS --json` and returns its parsed JSON (status, result, ...). */
function sf(args, { json = true, cwd = WORK, env = {} } = {}) {
  const full = json ? [...args, '--json'] : args;
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [CLI, ...full],
      { cwd, env: { ...process.env, ...env }, timeout: 150_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (!json) {
          resolve({ code: err ? (err.code ?? 1) : 0, stdout, stderr });
          return;
        }
        let out;
        try {
          out = JSON.parse(stdout);
        } catch {
          out = { status: -1, unparsed: stdout, stderr };
        }
        resolve(out);
      },
    );
  });
}

/** `sf ... --json` that must succeed; returns `result`. */
async function ok(args, opts) {
  const out = await sf(args, opts);
  assert.equal(out.status, 0, `sf ${args.join(' ')} failed: ${JSON.stringify(out).slice(0, 2000)}`);
  return out.result;
}

async function admin(method, p, body) {
  const res = await fetch(`${BASE}/__emulator/${p}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  assert.ok(res.ok, `admin ${method} ${p}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

/** Every record of an object as the emulator holds it (deleted ones with IsDeleted true). */
const records = (sobject) => admin('GET', `records/${sobject}`);
const live = async (sobject) => (await records(sobject)).filter((r) => !r.IsDeleted);

let token;
async function rest(p) {
  if (!token) {
    const res = await fetch(`${BASE}/services/oauth2/token`, {
      method: 'POST',
      body: new URLSearchParams({ grant_type: 'password', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, username: USERNAME, password: PASSWORD }),
    });
    token = (await res.json()).access_token;
  }
  const res = await fetch(`${BASE}/services/data/v60.0/${p}`, { headers: { authorization: `Bearer ${token}` } });
  return res.json();
}

const file = (name, text) => {
  const p = path.join(WORK, name);
  fs.writeFileSync(p, text);
  return p;
};

// ---------------------------------------------------------------------------------------------
// Logins that can reach a local server.
// ---------------------------------------------------------------------------------------------

test('login with an access token, then org display shows the emulated org', async () => {
  const res = await fetch(`${BASE}/services/oauth2/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'password', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, username: USERNAME, password: PASSWORD }),
  });
  const { access_token: accessToken } = await res.json();
  // The CLI keeps this instance URL with a trailing slash and then calls //services/...
  const login = await ok(['org', 'login', 'access-token', '--instance-url', `${BASE}/`, '--no-prompt', '--alias', 'tok'], {
    env: { SF_ACCESS_TOKEN: accessToken },
  });
  assert.equal(login.orgId, ORG_ID);
  const [org] = await live('Organization');
  assert.equal(login.name, org.Name);
  assert.equal(login.instanceName, org.InstanceName);
  assert.equal(login.isSandbox, org.IsSandbox);
  const shown = await ok(['org', 'display', '--target-org', 'tok']);
  assert.equal(shown.id, ORG_ID);
  assert.equal(shown.username, USERNAME);
  assert.equal(shown.connectedStatus, 'Connected');
});

test('login with the JWT bearer flow', async () => {
  const login = await ok([
    'org', 'login', 'jwt', '--username', USERNAME, '--jwt-key-file', JWT_KEY, '--client-id', CLIENT_ID,
    '--instance-url', BASE, '--alias', 'jwt',
  ]);
  assert.equal(login.orgId, ORG_ID);
  const shown = await ok(['org', 'display', '--target-org', 'jwt']);
  assert.equal(shown.connectedStatus, 'Connected');
  assert.equal(shown.username, USERNAME);
});

test('login with a refresh token (sfdx URL) refreshes an expired session by itself', async () => {
  const res = await fetch(`${BASE}/services/oauth2/token`, {
    method: 'POST',
    body: new URLSearchParams({ grant_type: 'password', client_id: CLIENT_ID, client_secret: CLIENT_SECRET, username: USERNAME, password: PASSWORD }),
  });
  const { refresh_token: refresh } = await res.json();
  const host = BASE.replace(/^https:\/\//, '');
  const urlFile = file('sfdx-url.txt', `force://${CLIENT_ID}:${CLIENT_SECRET}:${refresh}@${host}\n`);
  const login = await ok(['org', 'login', 'sfdx-url', '--sfdx-url-file', urlFile, '--alias', 'rt']);
  assert.equal(login.orgId, ORG_ID);
  await admin('POST', 'sessions/expire', {});
  const q = await ok(['data', 'query', '--query', 'SELECT Id, Name FROM Organization', '--target-org', 'rt']);
  assert.equal(q.records[0].Id, ORG_ID);
});

// ---------------------------------------------------------------------------------------------
// Limits and metadata.
// ---------------------------------------------------------------------------------------------

test('org list limits shows the org allocation the emulator was given', async () => {
  await admin('PUT', 'limits', { DailyApiRequests: { Max: 15000, Remaining: 12345 } });
  const limits = await ok(['org', 'list', 'limits', '--target-org', 'jwt']);
  const daily = limits.find((l) => l.name === 'DailyApiRequests');
  assert.equal(daily.max, 15000);
  // The CLI's own calls count; nothing else spends the allocation.
  assert.ok(daily.remaining <= 12345 && daily.remaining > 12300, JSON.stringify(daily));
  await admin('PUT', 'limits', { DailyApiRequests: { Max: 100000, Remaining: 100000 } });
});

test('sobject list and describe show the schema, custom fields and child relationships included', async () => {
  await admin('POST', 'fields/Account', { name: 'Cli_Tier__c', type: 'picklist', picklistValues: ['Gold', 'Silver'] });
  const list = await ok(['sobject', 'list', '--target-org', 'jwt']);
  for (const name of ['Account', 'Contact', 'Opportunity', 'Organization']) assert.ok(list.includes(name), name);
  const d = await ok(['sobject', 'describe', '--sobject', 'Account', '--target-org', 'jwt']);
  const tier = d.fields.find((f) => f.name === 'Cli_Tier__c');
  assert.deepEqual(tier.picklistValues.map((p) => p.value), ['Gold', 'Silver']);
  assert.ok(d.childRelationships.some((c) => c.relationshipName === 'Contacts' && c.childSObject === 'Contact'));
});

// ---------------------------------------------------------------------------------------------
// Single records.
// ---------------------------------------------------------------------------------------------

test('data create, get, update and delete record', async () => {
  const created = await ok(['data', 'create', 'record', '--sobject', 'Account', '--values', "Name='Acme Rockets' Industry=Technology Cli_Tier__c=Gold", '--target-org', 'jwt']);
  let rec = (await records('Account')).find((r) => r.Id === created.id);
  assert.equal(rec.Name, 'Acme Rockets');
  assert.equal(rec.Cli_Tier__c, 'Gold');
  const got = await ok(['data', 'get', 'record', '--sobject', 'Account', '--record-id', created.id, '--target-org', 'jwt']);
  assert.equal(got.Name, rec.Name);
  assert.equal(got.Industry, rec.Industry);
  assert.equal(got.CreatedDate, rec.CreatedDate);
  await ok(['data', 'update', 'record', '--sobject', 'Account', '--record-id', created.id, '--values', "Phone='555 0100' Cli_Tier__c=Silver", '--target-org', 'jwt']);
  rec = (await records('Account')).find((r) => r.Id === created.id);
  assert.equal(rec.Phone, '555 0100');
  assert.equal(rec.Cli_Tier__c, 'Silver');
  const doomed = await ok(['data', 'create', 'record', '--sobject', 'Account', '--values', "Name='Short Lived'", '--target-org', 'jwt']);
  await ok(['data', 'delete', 'record', '--sobject', 'Account', '--record-id', doomed.id, '--target-org', 'jwt']);
  rec = (await records('Account')).find((r) => r.Id === doomed.id);
  assert.equal(rec.IsDeleted, true);
});

// ---------------------------------------------------------------------------------------------
// Queries.
// ---------------------------------------------------------------------------------------------

test('data query: plain, quoted strings, parent fields and subqueries, as JSON and as tables', async () => {
  await admin('POST', 'records/Account', [
    { Name: 'Query One', NumberOfEmployees: 10 },
    { Name: "O'Neil & Sons", NumberOfEmployees: 20 },
    { Name: 'Query Three', NumberOfEmployees: 30 },
  ]);
  const oneil = (await live('Account')).find((r) => r.Name === "O'Neil & Sons");
  await admin('POST', 'records/Contact', [
    { LastName: 'Zed', AccountId: oneil.Id },
    { LastName: 'Amy', AccountId: oneil.Id, Email: 'amy@oneil.example' },
  ]);

  const plain = await ok(['data', 'query', '--query', "SELECT Name, NumberOfEmployees FROM Account WHERE Name LIKE 'Query%' ORDER BY Name", '--target-org', 'jwt']);
  assert.deepEqual(plain.records.map((r) => [r.Name, r.NumberOfEmployees]), [['Query One', 10], ['Query Three', 30]]);

  const quoted = await ok(['data', 'query', '--query', "SELECT Id, Name FROM Account WHERE Name = 'O\\'Neil & Sons'", '--target-org', 'jwt']);
  assert.deepEqual(quoted.records.map((r) => r.Id), [oneil.Id]);

  const parents = await ok(['data', 'query', '--query', `SELECT LastName, Account.Name FROM Contact WHERE AccountId = '${oneil.Id}' ORDER BY LastName`, '--target-org', 'jwt']);
  assert.deepEqual(parents.records.map((r) => [r.LastName, r.Account.Name]), [['Amy', "O'Neil & Sons"], ['Zed', "O'Neil & Sons"]]);

  const nested = await ok(['data', 'query', '--query', `SELECT Name, (SELECT LastName, Email FROM Contacts ORDER BY LastName) FROM Account WHERE Id = '${oneil.Id}'`, '--target-org', 'jwt']);
  const kids = nested.records[0].Contacts;
  assert.equal(kids.totalSize, 2);
  assert.deepEqual(kids.records.map((c) => c.LastName), ['Amy', 'Zed']);
  assert.equal(kids.records[0].Email, 'amy@oneil.example');

  // Tables and CSV are laid out from the query's column metadata (columns=true).
  const csv = await sf(['data', 'query', '--query', `SELECT LastName, Account.Name FROM Contact WHERE AccountId = '${oneil.Id}' ORDER BY LastName`, '--result-format', 'csv', '--target-org', 'jwt'], { json: false });
  assert.equal(csv.code, 0, csv.stderr);
  const lines = csv.stdout.trim().split('\n');
  assert.equal(lines[0], 'LastName,Account.Name');
  assert.equal(lines[1], "Amy,O'Neil & Sons");
  const human = await sf(['data', 'query', '--query', `SELECT Name, (SELECT LastName FROM Contacts) FROM Account WHERE Id = '${oneil.Id}'`, '--target-org', 'jwt'], { json: false });
  assert.equal(human.code, 0, human.stderr);
  assert.match(human.stdout, /Zed/);
  assert.match(human.stdout, /Total number of records retrieved: 1/);
});

test('data search (SOSL) finds what the emulator holds', async () => {
  const found = await ok(['data', 'search', '--query', 'FIND {Rockets} RETURNING Account(Id, Name)', '--target-org', 'jwt']);
  const acme = (await live('Account')).filter((r) => /\bRockets\b/.test(r.Name));
  assert.deepEqual(found.searchRecords.map((r) => r.Id).sort(), acme.map((r) => r.Id).sort());
  assert.equal(found.searchRecords[0].Name, 'Acme Rockets');
  const emails = await ok(['data', 'search', '--query', 'FIND {oneil} IN EMAIL FIELDS RETURNING Contact(LastName)', '--target-org', 'jwt']);
  assert.deepEqual(emails.searchRecords.map((r) => r.LastName), ['Amy']);
});

// ---------------------------------------------------------------------------------------------
// Trees (sObject Tree) with children.
// ---------------------------------------------------------------------------------------------

test('data export tree and import tree, with children, as files and as a plan', async () => {
  await admin('POST', 'records/Account', [{ Name: 'Tree Parent', Industry: 'Energy' }]);
  const parent = (await live('Account')).find((r) => r.Name === 'Tree Parent');
  await admin('POST', 'records/Contact', [
    { LastName: 'Leaf One', AccountId: parent.Id },
    { LastName: 'Leaf Two', AccountId: parent.Id },
  ]);
  const query = "SELECT Name, Industry, (SELECT LastName FROM Contacts ORDER BY LastName) FROM Account WHERE Name = 'Tree Parent'";
  await ok(['data', 'export', 'tree', '--query', query, '--output-dir', path.join(WORK, 'tree'), '--target-org', 'jwt']);
  const exported = JSON.parse(fs.readFileSync(path.join(WORK, 'tree', 'Account-Contact.json'), 'utf8'));
  assert.equal(exported.records[0].Name, 'Tree Parent');
  assert.deepEqual(exported.records[0].Contacts.records.map((c) => c.LastName), ['Leaf One', 'Leaf Two']);

  const imported = await ok(['data', 'import', 'tree', '--files', path.join(WORK, 'tree', 'Account-Contact.json'), '--target-org', 'jwt']);
  const newAccount = imported.find((r) => r.type === 'Account').id;
  assert.notEqual(newAccount, parent.Id);
  const copy = (await records('Account')).find((r) => r.Id === newAccount);
  assert.equal(copy.Name, 'Tree Parent');
  assert.equal(copy.Industry, 'Energy');
  const copied = (await live('Contact')).filter((c) => c.AccountId === newAccount).map((c) => c.LastName).sort();
  assert.deepEqual(copied, ['Leaf One', 'Leaf Two']);

  await ok(['data', 'export', 'tree', '--query', query, '--plan', '--output-dir', path.join(WORK, 'plan'), '--target-org', 'jwt']);
  const planFile = fs.readdirSync(path.join(WORK, 'plan')).find((f) => f.endsWith('plan.json'));
  const viaPlan = await ok(['data', 'import', 'tree', '--plan', path.join(WORK, 'plan', planFile), '--target-org', 'jwt']);
  const planAccount = viaPlan.find((r) => r.type === 'Account').id;
  const planKids = (await live('Contact')).filter((c) => c.AccountId === planAccount).map((c) => c.LastName).sort();
  assert.deepEqual(planKids, ['Leaf One', 'Leaf Two']);
});

// ---------------------------------------------------------------------------------------------
// Bulk API 2.0, a few hundred records.
// ---------------------------------------------------------------------------------------------

const BULK = 300;

test('data upsert, import, update, delete and export bulk', async () => {
  const rows = Array.from({ length: BULK }, (_, i) => `bulk-${String(i).padStart(4, '0')},Bulk ${i}`);
  const upsertFile = file('upsert.csv', `Pendo_Account_Id__c,Name\n${rows.join('\n')}\n`);
  const upserted = await ok(['data', 'upsert', 'bulk', '--sobject', 'Account', '--file', upsertFile, '--external-id', 'Pendo_Account_Id__c', '--wait', '5', '--target-org', 'jwt']);
  // upsert and delete answer the job and its per-record results; import and update, counts.
  assert.equal(upserted.jobInfo.numberRecordsProcessed, BULK);
  assert.equal(upserted.records.successfulResults.length, BULK);
  assert.ok(upserted.records.successfulResults.every((r) => r.sf__Created === 'true'));
  let bulk = (await live('Account')).filter((r) => (r.Pendo_Account_Id__c || '').startsWith('bulk-'));
  assert.equal(bulk.length, BULK);
  assert.equal(bulk.find((r) => r.Pendo_Account_Id__c === 'bulk-0007').Name, 'Bulk 7');

  // Upserting again with new names updates, never duplicates.
  fs.writeFileSync(upsertFile, `Pendo_Account_Id__c,Name\n${rows.map((r) => r.replace(',Bulk ', ',Renamed ')).join('\n')}\n`);
  const again = await ok(['data', 'upsert', 'bulk', '--sobject', 'Account', '--file', upsertFile, '--external-id', 'Pendo_Account_Id__c', '--wait', '5', '--target-org', 'jwt']);
  assert.ok(again.records.successfulResults.every((r) => r.sf__Created === 'false'));
  bulk = (await live('Account')).filter((r) => (r.Pendo_Account_Id__c || '').startsWith('bulk-'));
  assert.equal(bulk.length, BULK);
  assert.ok(bulk.every((r) => r.Name.startsWith('Renamed ')));

  const contacts = bulk.slice(0, 100).map((a, i) => `${a.Id},Person ${i}`);
  const importFile = file('contacts.csv', `AccountId,LastName\n${contacts.join('\n')}\n`);
  const imported = await ok(['data', 'import', 'bulk', '--sobject', 'Contact', '--file', importFile, '--wait', '5', '--target-org', 'jwt']);
  assert.equal(imported.successfulRecords, 100);
  const people = (await live('Contact')).filter((c) => c.LastName.startsWith('Person '));
  assert.equal(people.length, 100);

  const updateFile = file('update.csv', `Id,Phone\n${bulk.map((a, i) => `${a.Id},555-${String(i).padStart(4, '0')}`).join('\n')}\n`);
  const updated = await ok(['data', 'update', 'bulk', '--sobject', 'Account', '--file', updateFile, '--wait', '5', '--target-org', 'jwt']);
  assert.equal(updated.successfulRecords, BULK);
  const phones = new Map((await live('Account')).map((r) => [r.Id, r.Phone]));
  assert.ok(bulk.every((a, i) => phones.get(a.Id) === `555-${String(i).padStart(4, '0')}`));

  const exportFile = path.join(WORK, 'export.csv');
  const exported = await ok(['data', 'export', 'bulk', '--query', "SELECT Id, Pendo_Account_Id__c, Phone FROM Account WHERE Pendo_Account_Id__c LIKE 'bulk-%'", '--output-file', exportFile, '--result-format', 'csv', '--wait', '5', '--target-org', 'jwt']);
  assert.equal(exported.totalSize, BULK);
  const lines = fs.readFileSync(exportFile, 'utf8').trim().split(/\r?\n/);
  assert.equal(lines.length, BULK + 1);
  assert.ok(lines.slice(1).every((l) => phones.get(l.split(',')[0].replace(/"/g, '')) !== undefined));

  const deleteFile = file('delete.csv', `Id\n${bulk.slice(0, 120).map((a) => a.Id).join('\n')}\n`);
  const deleted = await ok(['data', 'delete', 'bulk', '--sobject', 'Account', '--file', deleteFile, '--wait', '5', '--target-org', 'jwt']);
  assert.equal(deleted.records.successfulResults.length, 120);
  assert.equal(deleted.records.failedResults.length, 0);
  const left = (await live('Account')).filter((r) => (r.Pendo_Account_Id__c || '').startsWith('bulk-'));
  assert.equal(left.length, BULK - 120);
});

// ---------------------------------------------------------------------------------------------
// Raw REST.
// ---------------------------------------------------------------------------------------------

test('api request rest reads and writes through the REST API', async () => {
  const [acme] = (await live('Account')).filter((r) => r.Name === 'Acme Rockets');
  const got = await sf(['api', 'request', 'rest', `/services/data/v60.0/sobjects/Account/${acme.Id}`, '--target-org', 'jwt'], { json: false });
  assert.equal(got.code, 0, got.stderr);
  assert.equal(JSON.parse(got.stdout).Name, 'Acme Rockets');
  const patched = await sf(['api', 'request', 'rest', `/services/data/v60.0/sobjects/Account/${acme.Id}`, '--method', 'PATCH', '--body', '{"Description":"set by sf api request"}', '--target-org', 'jwt'], { json: false });
  assert.equal(patched.code, 0, patched.stderr);
  const after = await rest(`sobjects/Account/${acme.Id}`);
  assert.equal(after.Description, 'set by sf api request');
});
