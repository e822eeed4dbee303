// jsforce 3.10.26 `bulk2` (unmodified) against the emulator's Bulk API 2.0 over plain http.
// Started like jsforce.test.js (SF_EMULATOR_HTTP_URL); a failure here is an emulator bug.
'use strict';

const { test, describe, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const jsforce = require('jsforce');

const BASE = (process.env.SF_EMULATOR_HTTP_URL || '').replace(/\/+$/, '');
const VERSION = '60.0';

if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\]):\d+$/.test(BASE)) {
  throw new Error(`SF_EMULATOR_HTTP_URL must be a loopback http URL (got '${BASE}'): run through run.sh`);
}

async function admin(method, path, body) {
  const res = await fetch(`${BASE}/__emulator/${path}`, {
    method,
    headers: body === undefined ? {} : { 'content-type': 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  if (res.status >= 300) throw new Error(`admin ${method} ${path} failed: ${res.status} ${text.slice(0, 500)}`);
  return text ? JSON.parse(text) : null;
}

async function connect() {
  const conn = new jsforce.Connection({
    oauth2: { clientId: 'usagesync-emulator', clientSecret: 'emulator-secret', loginUrl: BASE },
    version: VERSION,
  });
  await conn.login('integration@usagesync.test', 'emulator-password');
  conn.bulk2.pollInterval = 20;
  conn.bulk2.pollTimeout = 30_000;
  return conn;
}

describe('bulk2', () => {
  beforeEach(() => admin('POST', 'reset'));

  test('loadAndWaitForResults: upsert with successful, failed and unprocessed results', async () => {
    await admin('POST', 'records/Account', [{ Name: 'Old', Pendo_Account_Id__c: 'js-1' }]);
    const conn = await connect();
    const res = await conn.bulk2.loadAndWaitForResults({
      object: 'Account',
      operation: 'upsert',
      externalIdFieldName: 'Pendo_Account_Id__c',
      input: [
        { Pendo_Account_Id__c: 'js-1', Name: 'Renamed', Pendo_Events__c: 2 },
        { Pendo_Account_Id__c: 'js-2', Name: 'Comma, "quote"', Pendo_Events__c: null },
        { Pendo_Account_Id__c: 'js-3', Name: 'x'.repeat(300), Pendo_Events__c: 1 },
      ],
      pollInterval: 20,
      pollTimeout: 30_000,
    });
    assert.equal(res.successfulResults.length, 2);
    assert.equal(res.failedResults.length, 1);
    assert.equal(res.unprocessedRecords.length, 0);
    const created = Object.fromEntries(res.successfulResults.map((r) => [r.Pendo_Account_Id__c, r.sf__Created]));
    assert.deepEqual(created, { 'js-1': 'false', 'js-2': 'true' });
    assert.match(res.successfulResults[0].sf__Id, /^001/);
    assert.equal(res.failedResults[0].Pendo_Account_Id__c, 'js-3');
    assert.match(res.failedResults[0].sf__Error, /^STRING_TOO_LONG:/);
    const stored = await admin('GET', 'records/Account');
    const js2 = stored.find((r) => r.Pendo_Account_Id__c === 'js-2');
    assert.equal(js2.Name, 'Comma, "quote"');
    assert.equal(js2.Pendo_Events__c, null);
  });

  test('loadAndWaitForResults: insert then delete', async () => {
    const conn = await connect();
    const ins = await conn.bulk2.loadAndWaitForResults({
      object: 'Contact',
      operation: 'insert',
      input: [{ LastName: 'A' }, { LastName: 'B' }],
      pollInterval: 20,
      pollTimeout: 30_000,
    });
    assert.equal(ins.successfulResults.length, 2);
    const del = await conn.bulk2.loadAndWaitForResults({
      object: 'Contact',
      operation: 'delete',
      input: ins.successfulResults.map((r) => ({ Id: r.sf__Id })),
      pollInterval: 20,
      pollTimeout: 30_000,
    });
    assert.equal(del.successfulResults.length, 2);
    assert.equal(del.failedResults.length, 0);
  });

  test('a job that fails as a whole rejects with its errorMessage', async () => {
    const conn = await connect();
    await assert.rejects(
      conn.bulk2.loadAndWaitForResults({
        object: 'Account',
        operation: 'insert',
        input: [{ Name: 'A', Nope__c: 'x' }],
        pollInterval: 20,
        pollTimeout: 30_000,
      }),
      /Field name not found : Nope__c/,
    );
  });

  // jsforce sends no maxRecords, so the results come in one page whose Sforce-Locator is the
  // literal 'null' that ends its loop (an absent header would make it loop forever).
  test('query reads results until Sforce-Locator is the literal null', async () => {
    const accounts = Array.from({ length: 25 }, (_, i) => ({ Name: `Q${String(i).padStart(2, '0')}` }));
    await admin('POST', 'records/Account', accounts);
    const conn = await connect();
    const recordStream = await conn.bulk2.query('SELECT Id, Name FROM Account ORDER BY Name', {
      pollInterval: 20,
      pollTimeout: 30_000,
    });
    const rows = await recordStream.toArray();
    assert.equal(rows.length, 25);
    assert.deepEqual(
      rows.map((r) => r.Name),
      accounts.map((a) => a.Name),
    );
    assert.match(rows[0].Id, /^001/);
  });

  test('queryAll includes deleted rows', async () => {
    const seeded = await admin('POST', 'records/Account', [{ Name: 'Gone' }]);
    const conn = await connect();
    await conn.sobject('Account').destroy(seeded.ids[0]);
    const stream = await conn.bulk2.query('SELECT Id, IsDeleted FROM Account', {
      scanAll: true,
      pollInterval: 20,
      pollTimeout: 30_000,
    });
    const rows = await stream.toArray();
    assert.deepEqual(rows.map((r) => [r.Id, r.IsDeleted]), [[seeded.ids[0], 'true']]);
  });
});
