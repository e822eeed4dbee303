// jsforce (unmodified) against the usagesync Salesforce emulator over plain http.
//
// Started by ../run.sh, which sets SF_EMULATOR_HTTP_URL (http://127.0.0.1:PORT) and SF_JWT_KEY.
// Every assertion is about what the real client does with what the emulator answers; a failure
// here is an emulator bug. Only loopback traffic: the base URL is checked before anything runs.
'use strict';

const { test: nodeTest, describe, before, beforeEach } = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const jsforce = require('jsforce');

const BASE = (process.env.SF_EMULATOR_HTTP_URL || '').replace(/\/+$/, '');
const JWT_KEY = process.env.SF_JWT_KEY;
const CLIENT_ID = 'usagesync-emulator';
const CLIENT_SECRET = 'emulator-secret';
const USERNAME = 'integration@usagesync.test';
const PASSWORD = 'emulator-password';
const VERSION = '60.0';

// Every test gets its own time limit, so one request to a hung emulator fails that test (and the
// hang detection below fails the rest at once) instead of stalling the whole file.
const TEST_TIMEOUT_MS = 60_000;
function test(name, options, fn) {
  if (typeof options === 'function') {
    return nodeTest(name, { timeout: TEST_TIMEOUT_MS }, options);
  }
  return nodeTest(name, { timeout: TEST_TIMEOUT_MS, ...options }, fn);
}

if (!/^http:\/\/(127\.0\.0\.1|localhost|\[::1\]):\d+$/.test(BASE)) {
  throw new Error(`SF_EMULATOR_HTTP_URL must be a loopback http URL (got '${BASE}'): run through run.sh`);
}

// ---------------------------------------------------------------------------------------------
// The emulator's admin API (never counted as API usage).
// ---------------------------------------------------------------------------------------------

// Set once an admin call times out: the emulator has stopped answering (a deadlock, say), and
// every later test fails at once in beforeEach instead of waiting out its own timeout.
let emulatorHung = null;

async function admin(method, path, body) {
  if (emulatorHung) {
    throw new Error(`the emulator stopped answering earlier (${emulatorHung}); not running this test`);
  }
  let res;
  try {
    res = await fetch(`${BASE}/__emulator/${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(30_000),
    });
  } catch (err) {
    if (err.name === 'TimeoutError') {
      emulatorHung = `${method} /__emulator/${path} timed out after 30 s`;
    }
    throw err;
  }
  const text = await res.text();
  if (res.status >= 300) {
    throw new Error(`admin ${method} ${path} failed: ${res.status} ${text.slice(0, 500)}`);
  }
  return text ? JSON.parse(text) : null;
}
const reset = () => admin('POST', 'reset');
const seed = (sobject, records) => admin('POST', `records/${sobject}`, records);
const dump = (sobject) => admin('GET', `records/${sobject}`);
const usage = () => admin('GET', 'usage');
const expireSessions = () => admin('POST', 'sessions/expire');
const setLimits = (limits) => admin('PUT', 'limits', limits);
const setClock = (change) => admin('PUT', 'clock', change);
const setFaults = (faults) => admin('PUT', 'faults', faults);

function newConnection() {
  return new jsforce.Connection({
    oauth2: { clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, loginUrl: BASE },
    version: VERSION,
  });
}

async function loggedIn() {
  if (emulatorHung) {
    throw new Error(`the emulator stopped answering earlier (${emulatorHung}); not logging in`);
  }
  const conn = newConnection();
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => {
      emulatorHung = 'login timed out after 30 s';
      reject(new Error(emulatorHung));
    }, 30_000);
  });
  try {
    await Promise.race([conn.login(USERNAME, PASSWORD), timeout]);
  } finally {
    clearTimeout(timer);
  }
  return conn;
}

function uniq(prefix) {
  return `${prefix}-${crypto.randomBytes(6).toString('hex')}`;
}

async function rejects(promise) {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  assert.fail('expected the call to be rejected');
}

function b64url(input) {
  return Buffer.from(input).toString('base64url');
}

function signJwt(claims) {
  const header = b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }));
  const payload = b64url(JSON.stringify(claims));
  const signature = crypto.sign('RSA-SHA256', Buffer.from(`${header}.${payload}`), fs.readFileSync(JWT_KEY));
  return `${header}.${payload}.${signature.toString('base64url')}`;
}

beforeEach(async () => {
  await reset();
}, { timeout: TEST_TIMEOUT_MS });

// ---------------------------------------------------------------------------------------------
// OAuth
// ---------------------------------------------------------------------------------------------

describe('oauth', () => {
  test('login() uses the username-password flow and fills userInfo from the id URL', async () => {
    const conn = newConnection();
    const info = await conn.login(USERNAME, PASSWORD);
    assert.equal(conn.instanceUrl, BASE);
    assert.match(conn.accessToken, /^00D\w{12}!/);
    assert.match(info.id, /^005\w{15}$/);
    assert.match(info.organizationId, /^00D\w{15}$/);
    assert.equal(info.url, `${BASE}/id/${info.organizationId}/${info.id}`);
    const u = await usage();
    assert.equal(u.byKind.auth, 1);
  });

  test('login() with a wrong password rejects with invalid_grant', async () => {
    const err = await rejects(newConnection().login(USERNAME, 'wrong'));
    assert.equal(err.name, 'invalid_grant');
  });

  test('authorize() with client_credentials', async () => {
    const conn = newConnection();
    const info = await conn.authorize({ grant_type: 'client_credentials' });
    assert.match(info.id, /^005/);
    assert.equal(conn.refreshToken, undefined);
    const limits = await conn.limits();
    assert.ok(limits.DailyApiRequests.Max > 0);
  });

  test('authorize() with a JWT bearer assertion signed by node:crypto', async () => {
    const conn = newConnection();
    const assertion = signJwt({
      iss: CLIENT_ID,
      sub: USERNAME,
      aud: 'https://login.salesforce.com',
      exp: Math.floor(Date.now() / 1000) + 180,
    });
    const info = await conn.authorize({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion });
    assert.match(info.organizationId, /^00D/);
    const g = await conn.describeGlobal();
    assert.ok(g.sobjects.length > 0);
  });

  test('a JWT for another audience is refused', async () => {
    const assertion = signJwt({ iss: CLIENT_ID, sub: USERNAME, aud: 'https://example.com', exp: Math.floor(Date.now() / 1000) + 180 });
    const err = await rejects(newConnection().authorize({ grant_type: 'urn:ietf:params:oauth:grant-type:jwt-bearer', assertion }));
    assert.equal(err.name, 'invalid_grant');
  });

  test('after the session expires, login() connections log in again transparently', async () => {
    const conn = await loggedIn();
    const before = conn.accessToken;
    await expireSessions();
    const d = await conn.describe('Account');
    assert.equal(d.name, 'Account');
    assert.notEqual(conn.accessToken, before);
    assert.equal((await usage()).byKind.auth, 2);
  });

  test('after the session expires, a password-grant connection refreshes with its refresh_token', async () => {
    const conn = newConnection();
    await conn.authorize({ grant_type: 'password', username: USERNAME, password: PASSWORD });
    assert.ok(conn.refreshToken, 'the password flow hands out a refresh token');
    const before = conn.accessToken;
    const refreshed = new Promise((resolve) => conn.once('refresh', (token, res) => resolve({ token, res })));
    await expireSessions();
    const d = await conn.describeGlobal();
    assert.ok(d.sobjects.length > 0);
    const { token, res } = await refreshed;
    assert.notEqual(token, before);
    assert.equal(conn.accessToken, token);
    assert.equal(res.access_token, token);
    assert.equal(res.instance_url, BASE);
  });

  test('identity() reads the identity URL from the token response', async () => {
    const conn = await loggedIn();
    const id = await conn.identity();
    assert.equal(id.user_id, conn.userInfo.id);
    assert.equal(id.organization_id, conn.userInfo.organizationId);
    assert.equal(id.username, USERNAME);
  });

  test('a 401 on an expired token without any way to refresh maps to INVALID_SESSION_ID', async () => {
    const first = await loggedIn();
    const conn = new jsforce.Connection({ instanceUrl: BASE, accessToken: first.accessToken, version: VERSION });
    await expireSessions();
    const err = await rejects(conn.describeGlobal());
    assert.equal(err.errorCode, 'INVALID_SESSION_ID');
    assert.equal(err.name, 'INVALID_SESSION_ID');
  });
});

// ---------------------------------------------------------------------------------------------
// Describe, CRUD, upsert
// ---------------------------------------------------------------------------------------------

describe('sobjects', () => {
  let conn;
  before(async () => {
    conn = await loggedIn();
  }, { timeout: TEST_TIMEOUT_MS });

  test('describeGlobal and describe', async () => {
    const g = await conn.describeGlobal();
    const names = g.sobjects.map((o) => o.name);
    for (const n of ['Account', 'Contact', 'Lead', 'User', 'Task', 'Case', 'Opportunity']) {
      assert.ok(names.includes(n), n);
    }
    const d = await conn.sobject('Contact').describe();
    assert.equal(d.name, 'Contact');
    const ext = d.fields.find((f) => f.name === 'Pendo_Visitor_Id__c');
    assert.equal(ext.externalId, true);
    const accountId = d.fields.find((f) => f.name === 'AccountId');
    assert.equal(accountId.type, 'reference');
    assert.deepEqual(accountId.referenceTo, ['Account']);
    assert.equal(accountId.relationshipName, 'Account');
  });

  test('single create / retrieve / update / destroy', async () => {
    const Account = conn.sobject('Account');
    const created = await Account.create({ Name: 'Node Single' });
    assert.equal(created.success, true);
    assert.deepEqual(created.errors, []);
    assert.match(created.id, /^001\w{15}$/);

    const rec = await Account.retrieve(created.id);
    assert.equal(rec.Id, created.id);
    assert.equal(rec.Name, 'Node Single');
    assert.equal(rec.attributes.type, 'Account');

    const onlyName = await Account.retrieve(created.id, { fields: ['Name'] });
    assert.deepEqual(Object.keys(onlyName).sort(), ['Name', 'attributes']);

    const upd = await Account.update({ Id: created.id, Name: 'Node Updated' });
    assert.deepEqual(upd, { id: created.id, success: true, errors: [] });
    assert.equal((await Account.retrieve(created.id)).Name, 'Node Updated');

    const del = await Account.destroy(created.id);
    assert.deepEqual(del, { id: created.id, success: true, errors: [] });
    const err = await rejects(Account.retrieve(created.id));
    assert.equal(err.errorCode, 'NOT_FOUND');
  });

  test('multiple create / retrieve / update / destroy go through sObject Collections', async () => {
    const Account = conn.sobject('Account');
    const before = await usage();
    const created = await Account.create(Array.from({ length: 200 }, (_, i) => ({ Name: `Node Many ${i}` })));
    assert.equal(created.length, 200);
    assert.ok(created.every((r) => r.success && /^001/.test(r.id)));
    const ids = created.map((r) => r.id);

    // retrieve([ids]) asks describe for the field list, then POSTs composite/sobjects/Account.
    const recs = await Account.retrieve(ids.slice(0, 3));
    assert.deepEqual(recs.map((r) => r.Name), ['Node Many 0', 'Node Many 1', 'Node Many 2']);

    const updated = await Account.update(ids.map((Id) => ({ Id, Name: 'Node Many updated' })));
    assert.ok(updated.every((r) => r.success));
    const destroyed = await Account.destroy(ids);
    assert.ok(destroyed.every((r) => r.success));
    assert.deepEqual(destroyed.map((r) => r.id), ids);

    const after = await usage();
    const delta = (k) => (after.byKind[k] || 0) - (before.byKind[k] || 0);
    assert.equal(delta('collections'), 4);
    assert.equal(delta('rest'), 1); // the describe behind retrieve([ids])
  });

  test('more than 200 records are refused by jsforce itself unless allowRecursive', async () => {
    const Account = conn.sobject('Account');
    const many = Array.from({ length: 250 }, (_, i) => ({ Name: `Rec ${i}` }));
    const err = await rejects(Account.create(many));
    assert.equal(err.errorCode, 'EXCEEDED_ID_LIMIT');
    const ok = await Account.create(many, { allowRecursive: true });
    assert.equal(ok.length, 250);
    assert.ok(ok.every((r) => r.success));
  });

  test('collections with allOrNone=false report per-record statusCode errors', async () => {
    const Account = conn.sobject('Account');
    const res = await Account.create([{ Name: 'Good' }, { Website: 'https://no-name.example' }, { Name: 'Bad', Nope__c: 1 }]);
    assert.equal(res[0].success, true);
    assert.equal(res[1].success, false);
    assert.equal(res[1].errors[0].statusCode, 'REQUIRED_FIELD_MISSING');
    assert.deepEqual(res[1].errors[0].fields, ['Name']);
    assert.equal(res[1].id, undefined);
    assert.equal(res[2].errors[0].statusCode, 'INVALID_FIELD');

    const upd = await Account.update([
      { Id: res[0].id, Name: 'Good 2' },
      { Id: '001xx000003DGb2999', Name: 'Bad id' },
    ]);
    assert.equal(upd[0].success, true);
    assert.equal(upd[1].success, false);
    assert.equal(upd[1].errors[0].statusCode, 'MALFORMED_ID');

    const del = await Account.destroy([res[0].id, 'garbage-id']);
    assert.equal(del[0].success, true);
    assert.equal(del[1].success, false);
    assert.equal(del[1].errors[0].statusCode, 'MALFORMED_ID');
  });

  test('collections with allOrNone=true roll everything back', async () => {
    const Account = conn.sobject('Account');
    const tag = uniq('aon');
    const res = await Account.create([{ Name: tag }, { Name: 'x'.repeat(300) }], { allOrNone: true });
    assert.equal(res[0].success, false);
    assert.equal(res[0].errors[0].statusCode, 'ALL_OR_NONE_OPERATION_ROLLED_BACK');
    assert.equal(res[1].errors[0].statusCode, 'STRING_TOO_LONG');
    assert.equal((await dump('Account')).filter((r) => r.Name === tag).length, 0);

    const keep = await Account.create({ Name: 'keep me' });
    const del = await Account.destroy([keep.id, '001000000000000AAA'], { allOrNone: true });
    assert.ok(del.every((r) => r.success === false));
    assert.equal((await Account.retrieve(keep.id)).Name, 'keep me');
  });

  test('single upsert: created true, then created false', async () => {
    const Account = conn.sobject('Account');
    const key = uniq('up');
    const first = await Account.upsert({ Name: 'Upsert 1', Pendo_Account_Id__c: key }, 'Pendo_Account_Id__c');
    assert.equal(first.success, true);
    assert.equal(first.created, true);
    const second = await Account.upsert({ Name: 'Upsert 2', Pendo_Account_Id__c: key }, 'Pendo_Account_Id__c');
    assert.equal(second.success, true);
    assert.equal(second.created, false);
    assert.equal(second.id, first.id);
    assert.equal((await Account.retrieve(first.id)).Name, 'Upsert 2');
  });

  test('multiple upsert through collections', async () => {
    const Contact = conn.sobject('Contact');
    const key = uniq('mv');
    await Contact.upsert({ LastName: 'Existing', Pendo_Visitor_Id__c: `${key}-0` }, 'Pendo_Visitor_Id__c');
    const res = await Contact.upsert(
      [0, 1, 2].map((i) => ({ LastName: `V${i}`, Pendo_Visitor_Id__c: `${key}-${i}` })),
      'Pendo_Visitor_Id__c',
    );
    assert.deepEqual(res.map((r) => r.created), [false, true, true]);
    assert.ok(res.every((r) => r.success && /^003/.test(r.id)));
  });

  test('upsert with more than one match rejects with MULTIPLE_CHOICES', async () => {
    await admin('POST', 'fields/Account', { name: 'Legacy_Key__c', type: 'string', length: 80, externalId: true, unique: false });
    await seed('Account', [{ Name: 'Dup A', Legacy_Key__c: 'same' }, { Name: 'Dup B', Legacy_Key__c: 'same' }]);
    const err = await rejects(conn.sobject('Account').upsert({ Name: 'which?', Legacy_Key__c: 'same' }, 'Legacy_Key__c'));
    assert.equal(err.name, 'MULTIPLE_CHOICES');
    assert.equal(err.errorCode, 'MULTIPLE_CHOICES');
    assert.equal(err.data.length, 2);
    assert.equal(typeof err.data[0], 'string');
    assert.match(err.data[0], new RegExp(`^/services/data/v${VERSION}/sobjects/Account/001`));
  });

  test('updated() and deleted() over a window of whole minutes', async () => {
    const now = new Date(Math.floor(Date.now() / 1000) * 1000);
    await setClock({ now: now.toISOString() });
    const Account = conn.sobject('Account');
    const kept = await Account.create({ Name: 'Replicated' });
    const gone = await Account.create({ Name: 'Deleted' });
    await Account.destroy(gone.id);
    await setClock({ advanceSeconds: 120 });
    const start = new Date(now.getTime() - 3600_000);
    const end = new Date(now.getTime() + 300_000);
    const updated = await Account.updated(start, end);
    assert.ok(updated.ids.includes(kept.id));
    assert.ok(!updated.ids.includes(gone.id));
    const deleted = await Account.deleted(start, end);
    assert.deepEqual(deleted.deletedRecords.map((d) => d.id), [gone.id]);
    assert.match(deleted.latestDateCovered, /:00\.000\+0000$/);
  });

  test('updating a deleted record is ENTITY_IS_DELETED', async () => {
    const Account = conn.sobject('Account');
    const rec = await Account.create({ Name: 'Soon gone' });
    await Account.destroy(rec.id);
    const err = await rejects(Account.update({ Id: rec.id, Name: 'late' }));
    assert.equal(err.errorCode, 'ENTITY_IS_DELETED');
  });

  test('errors carry the errorCode as their name', async () => {
    const Account = conn.sobject('Account');
    const cases = [
      [() => Account.create({ Name: 'x', Nope__c: 1 }), 'INVALID_FIELD'],
      [() => Account.create({ Website: 'https://x.example' }), 'REQUIRED_FIELD_MISSING'],
      [() => conn.sobject('Contact').create({ LastName: 'x', AccountId: 'bogus' }), 'MALFORMED_ID'],
      [() => Account.create({ Name: 'y'.repeat(256) }), 'STRING_TOO_LONG'],
      [() => Account.retrieve('001000000000000AAA'), 'NOT_FOUND'],
      [() => conn.sobject('Nope__c').create({ Name: 'x' }), 'NOT_FOUND'],
    ];
    for (const [call, code] of cases) {
      const err = await rejects(call());
      assert.equal(err.errorCode, code, `${err.message}`);
      assert.equal(err.name, code);
    }
    const key = uniq('dv');
    await Account.create({ Name: 'a', Pendo_Account_Id__c: key });
    const dup = await rejects(Account.create({ Name: 'b', Pendo_Account_Id__c: key }));
    assert.equal(dup.errorCode, 'DUPLICATE_VALUE');
  });
});

// ---------------------------------------------------------------------------------------------
// Query
// ---------------------------------------------------------------------------------------------

describe('query', () => {
  let conn;
  before(async () => {
    conn = await loggedIn();
  }, { timeout: TEST_TIMEOUT_MS });

  async function seedAccounts(n, tag) {
    await seed('Account', Array.from({ length: n }, (_, i) => ({ Name: `${tag} ${String(i).padStart(5, '0')}` })));
  }

  test('one page is 2,000 rows; queryMore fetches the rest', async () => {
    await seedAccounts(2500, 'NodeQ');
    const first = await conn.query("SELECT Id, Name FROM Account WHERE Name LIKE 'NodeQ%'");
    assert.equal(first.totalSize, 2500);
    assert.equal(first.done, false);
    assert.equal(first.records.length, 2000);
    assert.match(first.nextRecordsUrl, new RegExp(`/services/data/v${VERSION}/query/`));
    const rest = await conn.queryMore(first.nextRecordsUrl);
    assert.equal(rest.done, true);
    assert.equal(rest.records.length, 500);
    const ids = new Set([...first.records, ...rest.records].map((r) => r.Id));
    assert.equal(ids.size, 2500);
  });

  test('autoFetch walks every page', async () => {
    await seedAccounts(4100, 'Auto');
    const fetched = [];
    const res = await conn
      .query("SELECT Id, Name FROM Account WHERE Name LIKE 'Auto%' ORDER BY Name")
      .on('record', (r) => fetched.push(r))
      .autoFetch(true)
      .maxFetch(10000)
      .execute();
    assert.equal(res.totalSize, 4100);
    assert.equal(res.records.length, 4100);
    assert.equal(fetched.length, 4100);
    const names = res.records.map((r) => r.Name);
    assert.deepEqual(names, [...names].sort());
    const before = (await usage()).byKind.query;
    assert.equal(before, 3);
  });

  test('scanAll (queryAll) pages through /query/<locator> and includes deleted rows', async () => {
    await seedAccounts(2050, 'Scan');
    const victim = await conn.query("SELECT Id FROM Account WHERE Name = 'Scan 00007'");
    await conn.sobject('Account').destroy(victim.records[0].Id);
    const live = await conn.query("SELECT Id FROM Account WHERE Name LIKE 'Scan%'").autoFetch(true).execute();
    assert.equal(live.records.length, 2049);
    const all = await conn.query("SELECT Id, IsDeleted FROM Account WHERE Name LIKE 'Scan%'").scanAll(true).autoFetch(true).execute();
    assert.equal(all.records.length, 2050);
    assert.equal(all.records.filter((r) => r.IsDeleted).length, 1);
  });

  test('find() with conditions and relationship fields', async () => {
    const acc = await conn.sobject('Account').create({ Name: 'Rel Parent' });
    await conn.sobject('Contact').create({ LastName: 'Rel Child', AccountId: acc.id, Email: 'child@example.com' });
    const rows = await conn.sobject('Contact').find({ AccountId: acc.id }, ['Id', 'Email', 'Account.Name']);
    assert.equal(rows.length, 1);
    assert.equal(rows[0].Account.Name, 'Rel Parent');
    assert.equal(rows[0].Email, 'child@example.com');
    const n = await conn.sobject('Contact').count({ AccountId: acc.id });
    assert.equal(n, 1);
  });

  test('SOQL built by jsforce: $like, $in, $gte with a date literal, sort, limit, skip', async () => {
    const Account = conn.sobject('Account');
    const made = await Account.create(['Alpha', 'Beta', 'Gamma', 'Delta'].map((n, i) => ({ Name: `Builder ${n}`, Pendo_Active_Days__c: i })));
    const ids = made.map((r) => r.id);
    const rows = await Account.find(
      { Name: { $like: 'Builder %' }, CreatedDate: { $gte: jsforce.SfDate.LAST_N_DAYS(3) }, Pendo_Active_Days__c: { $gt: 0 } },
      ['Id', 'Name'],
    )
      .sort('-Name')
      .limit(2)
      .skip(1)
      .execute();
    assert.deepEqual(rows.map((r) => r.Name), ['Builder Delta', 'Builder Beta']);
    const byIds = await Account.find({ Id: { $in: ids.slice(0, 2) } }, 'Id').execute();
    assert.equal(byIds.length, 2);
    const nested = await Account.find({ $or: [{ Name: 'Builder Alpha' }, { $and: [{ Name: { $like: '%amma' } }, { Pendo_Active_Days__c: 2 }] }] }, ['Name']).sort('Name');
    assert.deepEqual(nested.map((r) => r.Name), ['Builder Alpha', 'Builder Gamma']);
    const none = await Account.find({ Name: null, Pendo_Active_Days__c: { $ne: null } }, 'Id');
    assert.deepEqual(none, []);
  });

  test('query errors map to errorCode names', async () => {
    assert.equal((await rejects(conn.query('SELECT Nope__c FROM Account'))).errorCode, 'INVALID_FIELD');
    assert.equal((await rejects(conn.query('SELECT Id FROM Nope__c'))).errorCode, 'INVALID_TYPE');
    assert.equal((await rejects(conn.query('SELECT FROM'))).errorCode, 'MALFORMED_QUERY');
  });
});

// ---------------------------------------------------------------------------------------------
// Composite, limits, accounting
// ---------------------------------------------------------------------------------------------

describe('composite and limits', () => {
  let conn;
  before(async () => {
    conn = await loggedIn();
  }, { timeout: TEST_TIMEOUT_MS });

  test('requestPost composite with references', async () => {
    const v = `/services/data/v${VERSION}`;
    const res = await conn.requestPost('/composite', {
      allOrNone: true,
      compositeRequest: [
        { method: 'POST', url: `${v}/sobjects/Account`, referenceId: 'acct', body: { Name: 'Node Composite' } },
        { method: 'POST', url: `${v}/sobjects/Contact`, referenceId: 'ct', body: { LastName: 'C', AccountId: '@{acct.id}' } },
        { method: 'GET', url: `${v}/sobjects/Contact/@{ct.id}?fields=AccountId`, referenceId: 'read' },
      ],
    });
    const subs = res.compositeResponse;
    assert.deepEqual(subs.map((s) => s.httpStatusCode), [201, 201, 200]);
    assert.equal(subs[2].body.AccountId, subs[0].body.id);
  });

  test('composite allOrNone=false skips only dependents of a failure', async () => {
    const v = `/services/data/v${VERSION}`;
    const res = await conn.requestPost('/composite', {
      allOrNone: false,
      compositeRequest: [
        { method: 'POST', url: `${v}/sobjects/Account`, referenceId: 'bad', body: {} },
        { method: 'POST', url: `${v}/sobjects/Contact`, referenceId: 'dep', body: { LastName: 'D', AccountId: '@{bad.id}' } },
        { method: 'POST', url: `${v}/sobjects/Account`, referenceId: 'indep', body: { Name: 'Independent' } },
      ],
    });
    const subs = res.compositeResponse;
    assert.equal(subs[0].httpStatusCode, 400);
    assert.equal(subs[0].body[0].errorCode, 'REQUIRED_FIELD_MISSING');
    assert.equal(subs[1].httpStatusCode, 400);
    assert.equal(subs[1].body[0].errorCode, 'PROCESSING_HALTED');
    assert.equal(subs[2].httpStatusCode, 201);
  });

  test('limits() and limitInfo from Sforce-Limit-Info', async () => {
    const limits = await conn.limits();
    assert.ok(limits.DailyApiRequests.Max > 0);
    const u = await usage();
    assert.equal(limits.DailyApiRequests.Max, u.dailyApiRequests.Max);
    assert.equal(conn.limitInfo.apiUsage.limit, u.dailyApiRequests.Max);
    assert.equal(conn.limitInfo.apiUsage.used, u.dailyApiRequests.Used);
    await conn.sobject('Account').create({ Name: 'one more' });
    assert.equal(conn.limitInfo.apiUsage.used, u.dailyApiRequests.Used + 1);
  });

  test('a spent daily allocation answers 403 REQUEST_LIMIT_EXCEEDED', async () => {
    await setLimits({ DailyApiRequests: { Max: 100, Remaining: 0 } });
    try {
      const err = await rejects(conn.describeGlobal());
      assert.equal(err.errorCode, 'REQUEST_LIMIT_EXCEEDED');
      assert.equal(err.name, 'REQUEST_LIMIT_EXCEEDED');
    } finally {
      await setLimits({ DailyApiRequests: { Max: 100000, Remaining: 100000 } });
    }
    const g = await conn.describeGlobal();
    assert.ok(g.sobjects.length > 0);
  });
});

// ---------------------------------------------------------------------------------------------
// Fault injection as jsforce sees it (reset clears faults before every test)
// ---------------------------------------------------------------------------------------------

describe('faults', () => {
  let conn;
  before(async () => {
    conn = await loggedIn();
  }, { timeout: TEST_TIMEOUT_MS });

  test('a 503 on a POST is not retried and surfaces as SERVER_UNAVAILABLE', async () => {
    await setFaults({ serverUnavailable: 1.0 });
    const err = await rejects(conn.sobject('Account').create({ Name: 'x' }));
    assert.equal(err.errorCode, 'SERVER_UNAVAILABLE');
  });

  test('jsforce retries a GET through intermittent 503s', async () => {
    // Deterministic from the seed: some attempts fail, jsforce's own retry (500 ms, 1 s, ...) gets through.
    await setFaults({ seed: 3, serverUnavailable: 0.4 });
    for (let i = 0; i < 3; i++) {
      const d = await conn.describe('Account');
      assert.equal(d.name, 'Account');
    }
  });

  test('a dropped connection surfaces as a network error', async () => {
    // The emulator closes the socket without a response; undici reports "other side closed",
    // which jsforce does not retry (it retries ECONNRESET and the like).
    await setFaults({ dropConnection: 1.0 });
    const err = await rejects(conn.describe('Account'));
    assert.equal(err.cause?.code, 'UND_ERR_SOCKET');
  });

  test('UNABLE_TO_LOCK_ROW per record in collections', async () => {
    await setFaults({ unableToLockRow: 1.0 });
    const res = await conn.sobject('Account').create([{ Name: 'a' }, { Name: 'b' }]);
    assert.deepEqual(res.map((r) => r.errors[0].statusCode), ['UNABLE_TO_LOCK_ROW', 'UNABLE_TO_LOCK_ROW']);
  });
});
