//! The engagement workflow end to end against both emulators on 127.0.0.1: the right values
//! reach the right Accounts, a repeat writes nothing, a 1% change writes 1%, ambiguous and
//! free-mail accounts are never written, hostile e-mails stay harmless, refused records are kept
//! and replayed, and work over budget is deferred to the next run.

use std::collections::HashMap;
use std::sync::Arc;

use emulator::pendo::generate::{AccountProfile, account_profile, sf_account_id};
use engine::store::{Action, FailureFilter, FailureSelector, FailureStatus, OutcomeFilter};
use serde_json::{Value, json};

use crate::support::{Emulators, World};

const CONFIG: &str = r#"
store: "{store}"
budget: { daily_share: {share} }
workflows:
  engagement:
    template: engagement-scores
    schedule: "0 6 * * *"
    window_days: 30
    max_latency: 1m
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    score:
      active_visitors: { weight: 0.5, target: 10 }
      active_days: { weight: 0.5, target: 20 }
    fields:
      active_visitors: Pendo_Active_Visitors__c
      active_days: Pendo_Active_Days__c
      events: Pendo_Events__c
      minutes: Pendo_Minutes__c
      feature_adoption: Pendo_Feature_Adoption__c
      guide_completion: Pendo_Guide_Completion__c
      last_active: Pendo_Last_Active__c
      score: Pendo_Engagement_Score__c
      updated_at: Pendo_Engagement_Updated__c
"#;

async fn world(accounts: usize, share: f64) -> World {
    world_with_store(accounts, share, None).await
}

/// A world whose state store is `store` (an opened store) or a fresh SQLite file.
async fn world_with_store(accounts: usize, share: f64, store: Option<Arc<dyn engine::store::Store>>) -> World {
    world_full(accounts, share, store, "").await
}

/// A world whose config has the top-level keys `extra` too.
async fn world_full(accounts: usize, share: f64, store: Option<Arc<dyn engine::store::Store>>, extra: &str) -> World {
    let text =
        CONFIG.replace("{share}", &share.to_string()).replacen("workflows:\n", &format!("{extra}workflows:\n"), 1);
    Emulators::start(7, accounts, 30).await.world_on(&text, store).await
}

impl World {
    /// Every Account as the emulator holds it, by Id.
    async fn accounts(&self) -> HashMap<String, Value> {
        let url = format!("{}/__emulator/records/Account", self.sf.base_url);
        let rows: Vec<Value> = self.http.get(url).send().await.unwrap().json().await.unwrap();
        rows.into_iter().map(|r| (r["Id"].as_str().unwrap().to_owned(), r)).collect()
    }

    fn profiles(&self) -> Vec<AccountProfile> {
        (0..self.gc.accounts).map(|i| account_profile(&self.gc, i)).collect()
    }
}

fn written(account: &Value) -> bool {
    !account["Pendo_Engagement_Updated__c"].is_null()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_run_writes_the_right_accounts_and_a_second_run_writes_nothing() {
    let w = world(300, 1.0).await;
    let first = w.run("engagement").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    // The first Account page priced the run (its answer carries the org's usage): no /limits.
    let usage: Value =
        w.http.get(format!("{}/__emulator/usage", w.sf.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(usage["byKind"]["limits"].as_u64().unwrap_or(0), 0, "{usage}");
    assert!(usage["byKind"]["query"].as_u64().unwrap_or(0) >= 1, "{usage}");
    assert!(first.ambiguous > 0 && first.unmatched > 0, "the world holds hard cases: {first:?}");
    assert_eq!(first.written, first.matched, "every matched account is new, so every one is written");
    assert_eq!(first.write_calls(), first.written.div_ceil(200) as u64, "Collections: 200 records a call");

    let accounts = w.accounts().await;
    let usage = engine::extract::Extractor::new(&w.ctx.pendo)
        .engagement(&engine::extract::Window::days(chrono::Utc::now(), 30), &engine::extract::CoreFeatures::MarkedCore)
        .await
        .unwrap();
    let usage: HashMap<&str, &engine::extract::AccountUsage> =
        usage.iter().map(|u| (u.account_id.as_str(), u)).collect();
    let mut checked = 0;
    for p in w.profiles() {
        let id = sf_account_id(p.index);
        let by_id_rule = p.in_salesforce && (p.has_sfdc_id_in_pendo || p.has_pendo_id_in_sf);
        if by_id_rule {
            // Matched by an id: the values are this account's own.
            let a = &accounts[&id];
            let u = usage.get(p.id.as_str());
            let events = u.map_or(0, |u| u.events);
            assert_eq!(a["Pendo_Events__c"].as_f64(), Some(events as f64), "{} → {id}", p.id);
            assert_eq!(a["Pendo_Active_Visitors__c"].as_f64(), Some(u.map_or(0, |u| u.active_visitors) as f64));
            checked += 1;
        } else if p.in_salesforce && p.sf_duplicate {
            // Only the website could match, and two Accounts share it: neither is written.
            assert!(!written(&accounts[&id]), "ambiguous {} was written", p.id);
        } else if !p.in_salesforce {
            continue;
        }
    }
    assert!(checked > 50, "checked {checked}");
    // Nothing was written onto an Account that no Pendo account claims.
    let claimed = accounts.values().filter(|a| written(a)).count();
    assert_eq!(claimed, first.written);

    let usage_before = w.accounts().await;
    let sent_before = w.ctx.salesforce.requests_sent();
    let second = w.run("engagement").await;
    assert_eq!((second.written, second.changed, second.write_calls()), (0, 0, 0), "{second:?}");
    // Cached matches and no change: no Account read, no describe, and no /limits read either
    // (nothing needed the budget): not one Salesforce call.
    assert!(second.api_calls.values().all(|n| *n == 0), "{:?}", second.api_calls);
    assert_eq!(w.ctx.salesforce.requests_sent(), sent_before, "no request reached Salesforce");
    assert_eq!(w.accounts().await, usage_before);
    // Nor are Pendo's matching facts read again (account metadata and the visitor e-mail scan):
    // with every match cached and fresh, the run asks Pendo only for its usage.
    assert_eq!(second.pendo_calls + 2, first.pendo_calls, "first {} second {}", first.pendo_calls, second.pendo_calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_one_percent_change_writes_one_percent() {
    let w = world(400, 1.0).await;
    let first = w.run("engagement").await;
    assert_eq!(first.failed, 0);
    // New events for 4 accounts matched by id (1%).
    // Yesterday: the window is whole days and leaves out the day in progress.
    let now = chrono::Utc::now().timestamp_millis() - 25 * 3_600_000;
    let movers: Vec<AccountProfile> = w
        .profiles()
        .into_iter()
        .filter(|p| p.in_salesforce && p.has_pendo_id_in_sf && !p.visitors.is_empty())
        .take(4)
        .collect();
    let page = w.ctx.pendo.pages(&[]).await.unwrap().into_iter().next().unwrap().id;
    let events: Vec<Value> = movers
        .iter()
        .map(|p| {
            json!({"kind": "page", "id": page, "visitorId": p.visitors[0].id, "accountId": p.id,
                   "time": now, "numEvents": 1234, "numMinutes": 56})
        })
        .collect();
    w.pendo_seed(json!({"events": events})).await;
    let second = w.run("engagement").await;
    assert_eq!(second.written, 4, "{second:?}");
    assert_eq!(second.write_calls(), 1);
    let accounts = w.accounts().await;
    for p in &movers {
        assert!(accounts[&sf_account_id(p.index)]["Pendo_Events__c"].as_f64().unwrap() >= 1234.0);
    }
    assert!(second.fields_changed.contains_key("Pendo_Events__c"));
    // The run's history shows each change as before → after.
    let id = sf_account_id(movers[0].index);
    let filter = engine::store::OutcomeFilter { search: Some(id.clone()), action: None, limit: 10, offset: 0 };
    let outcomes = w.ctx.store.run_outcomes(second.run_id.unwrap(), &filter).await.unwrap();
    let events = outcomes[0].changes.iter().find(|c| c.field == "Pendo_Events__c").unwrap();
    let (before, after) = (events.before.as_ref().unwrap().as_f64().unwrap(), events.after.as_f64().unwrap());
    assert_eq!(after, before + 1234.0, "{events:?}");
    assert!(!second.fields_changed.contains_key("Pendo_Guide_Completion__c"), "unchanged fields are not sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_emails_neither_break_nor_widen_matching() {
    let w = world(60, 1.0).await;
    // Yesterday: the window is whole days and leaves out the day in progress.
    let now = chrono::Utc::now().timestamp_millis() - 25 * 3_600_000;
    let victim = w.profiles().into_iter().find(|p| p.in_salesforce && !p.sf_duplicate).unwrap();
    let hostile = [
        format!("x@{}' OR Name != '", victim.domain),
        format!("a\\@{}", victim.domain),
        "'; DELETE FROM Account; --@evil.example".to_owned(),
        "robert@example.com) OR (Id != null".to_owned(),
        "SELECT Id FROM Account@select.from".to_owned(),
        "\"quoted\"@\\\\.example".to_owned(),
    ];
    let visitors: Vec<Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, e)| json!({"visitorId": format!("hostile-{i}"), "metadata": {"agent": {"email": e}}, "accountIds": ["hostile-co"]}))
        .collect();
    let page = w.ctx.pendo.pages(&[]).await.unwrap().into_iter().next().unwrap().id;
    let events: Vec<Value> = (0..hostile.len())
        .map(|i| json!({"kind": "page", "id": page, "visitorId": format!("hostile-{i}"), "accountId": "hostile-co", "time": now, "numEvents": 3, "numMinutes": 1}))
        .collect();
    // An account id full of quotes, backslashes and SOQL that an Account carries as its
    // external ID: it must reach exactly that Account, intact.
    let odd = "q'uote\"back\\slash' OR Name != 'x";
    let mut events = events;
    events.push(json!({"kind": "page", "id": page, "visitorId": "hostile-0", "accountId": odd, "time": now, "numEvents": 41, "numMinutes": 2}));
    w.pendo_seed(json!({
        "accounts": [
            {"accountId": "hostile-co", "metadata": {"custom": {"sfdcaccountid": "' OR Id != null OR Id = '"}}},
            {"accountId": odd, "metadata": {}},
        ],
        "visitors": visitors,
        "events": events,
    }))
    .await;
    let odd_sf = emulator::pendo::generate::sf_id("001", 999_999);
    w.sf_admin(
        reqwest::Method::POST,
        "records/Account",
        json!([{"Id": odd_sf, "Name": "Odd Co", "Pendo_Account_Id__c": odd}]),
    )
    .await;
    let before = w.accounts().await;
    let report = w.run("engagement").await;
    assert_eq!(report.failed, 0);
    let after = w.accounts().await;
    assert_eq!(after.len(), before.len());
    assert_eq!(after[&odd_sf]["Pendo_Events__c"].as_f64(), Some(41.0), "{:?}", after[&odd_sf]);
    let changed: Vec<&String> = after.keys().filter(|k| after[*k] != before[*k]).collect();
    assert_eq!(changed.len(), report.written, "only the matched Accounts changed");
    let entry =
        w.ctx.store.id_map("engagement").await.unwrap().into_iter().find(|e| e.pendo_id == "hostile-co").unwrap();
    assert_eq!(entry.salesforce_id, None, "hostile-co must not match anything: {entry:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_plans_and_changes_nothing() {
    let w = world(120, 1.0).await;
    let before = w.accounts().await;
    let plan = w.dry_run("engagement").await;
    assert!(plan.changed > 0 && plan.plan.write_calls >= 1);
    assert_eq!(plan.written, 0);
    assert_eq!(w.accounts().await, before);
    assert!(w.ctx.store.list_runs(None, 10).await.unwrap().is_empty());
    let kept =
        || async { w.ctx.store.kept_state("engagement", "engagement").await.unwrap().map(|(version, _)| version) };
    assert_eq!(kept().await, None, "a dry run keeps no engagement read");
    let real = w.run("engagement").await;
    assert_eq!(real.written, plan.changed, "the plan said what the run then did");
    assert_eq!(real.write_calls(), plan.plan.write_calls);
    let version = kept().await;
    assert!(version.is_some(), "a real run keeps its engagement read");
    w.dry_run("engagement").await;
    assert_eq!(kept().await, version, "a dry run leaves the kept read as it was");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_records_are_kept_and_replay_sends_them() {
    let w = world(150, 1.0).await;
    // Refuse any score above 30: a cause a person can fix.
    w.sf_admin(
        reqwest::Method::POST,
        "validation-rules/Account",
        json!({"name": "Score_Cap", "errorMessage": "Score too high", "errorField": "Pendo_Engagement_Score__c",
               "condition": {"field": "Pendo_Engagement_Score__c", "operator": "greaterThan", "value": 30}}),
    )
    .await;
    let first = w.run("engagement").await;
    assert!(first.failed > 0 && first.written > 0, "{first:?}");
    let open = w
        .ctx
        .store
        .list_failures(&FailureFilter {
            workflow: None,
            status: Some(FailureStatus::Open),
            error_code: None,
            limit: 1000,
        })
        .await
        .unwrap();
    assert_eq!(open.len(), first.failed);
    assert!(open.iter().all(|f| f.error_code == "FIELD_CUSTOM_VALIDATION_EXCEPTION" && f.message == "Score too high"));

    w.sf_admin(reqwest::Method::DELETE, "validation-rules/Account", json!({})).await;
    let replay =
        engine::workflow::replay::replay(&w.ctx, &FailureSelector::All { workflow: None }, 1000).await.unwrap();
    assert_eq!((replay.resolved, replay.failed_again), (first.failed, 0));
    let accounts = w.accounts().await;
    for f in &open {
        assert!(written(&accounts[f.salesforce_id.as_ref().unwrap()]));
    }
    let next = w.run("engagement").await;
    assert_eq!((next.written, next.write_calls()), (0, 0), "replayed values are remembered: {next:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_run_that_writes_a_failed_record_settles_its_failure() {
    let w = world(80, 1.0).await;
    w.sf_admin(
        reqwest::Method::POST,
        "validation-rules/Account",
        json!({"name": "No_Events", "errorMessage": "Events are read-only", "errorField": "Pendo_Events__c",
               "condition": {"field": "Pendo_Events__c", "operator": "notNull"}}),
    )
    .await;
    let first = w.run("engagement").await;
    assert_eq!((first.written, first.failed), (0, first.matched), "{first:?}");
    w.sf_admin(reqwest::Method::DELETE, "validation-rules/Account", json!({})).await;
    let second = w.run("engagement").await;
    assert_eq!(second.written, first.failed, "nothing was remembered as written, so all go again");
    let open = w
        .ctx
        .store
        .list_failures(&FailureFilter { workflow: None, status: Some(FailureStatus::Open), error_code: None, limit: 0 })
        .await
        .unwrap();
    assert!(open.is_empty(), "{} failures still open", open.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_over_budget_is_deferred_to_the_next_run() {
    let w = world(500, 1.0).await;
    // 3 calls a day: after the Account read (whose answer prices the run, so no /limits read)
    // with preflight's describe of Account in the same Composite call, room for two
    // Collections calls only.
    w.sf_admin(reqwest::Method::PUT, "limits", json!({"DailyApiRequests": {"Max": 3, "Remaining": 3}})).await;
    let first = w.run("engagement").await;
    assert!(first.deferred > 0 && first.written > 0, "{first:?}");
    assert_eq!(first.failed, 0);
    assert_eq!((first.written, first.total_api_calls()), (400, 3), "{first:?}");
    assert_eq!(first.api_calls.get("preflight"), None, "the describe came with the read: {first:?}");
    w.sf_admin(reqwest::Method::PUT, "limits", json!({"DailyApiRequests": {"Max": 100000, "Remaining": 100000}})).await;
    let second = w.run("engagement").await;
    assert_eq!(second.written, first.deferred, "the deferred records go next, none is lost");
    let third = w.run("engagement").await;
    assert_eq!(third.written, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_workflow_runs_the_same_on_postgres() {
    if std::env::var("USAGESYNC_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("USAGESYNC_SKIP_POSTGRES=1: skipped");
        return;
    }
    let url = std::env::var("USAGESYNC_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("usagesync_e2e_{}", uuid_suffix());
    let store = engine::store::open_postgres_schema(&url, &schema)
        .await
        .unwrap_or_else(|e| panic!("PostgreSQL unavailable (USAGESYNC_SKIP_POSTGRES=1 skips): {e}"));
    let w = world_with_store(150, 1.0, Some(store)).await;
    let first = w.run("engagement").await;
    let second = w.run("engagement").await;
    let runs = w.ctx.store.list_runs(Some("engagement"), 10).await.unwrap();
    engine::store::drop_postgres_schema(&url, &schema).await.unwrap();
    assert!(first.written > 100 && first.failed == 0, "{first:?}");
    assert_eq!((second.written, second.write_calls()), (0, 0));
    assert_eq!(runs.len(), 2);
}

fn uuid_suffix() -> String {
    format!("{:x}{:x}", std::process::id(), chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_ambiguous_account_is_written_by_the_next_run() {
    let w = world(300, 1.0).await;
    let first = w.run("engagement").await;
    let sample = first.ambiguous_samples.iter().find(|a| a.candidates.len() == 2).unwrap().clone();
    let chosen = sample.candidates[1].clone();
    assert!(!written(&w.accounts().await[&chosen]), "ambiguous: not written yet");
    w.ctx.store.pin_match("engagement", &sample.pendo_account, &chosen).await.unwrap();
    let second = w.run("engagement").await;
    assert_eq!((second.written, second.ambiguous), (1, first.ambiguous - 1), "{second:?}");
    assert!(written(&w.accounts().await[&chosen]));
    assert!(!written(&w.accounts().await[&sample.candidates[0]]), "the other candidate stays untouched");
    assert_eq!(w.run("engagement").await.written, 0);
}

/// Records whose values a workflow field update changed in the same save are read back and
/// reported as drift, by field, value and modifier, for one query; nothing is reported when
/// nothing changed, and nothing is written back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_changed_after_writing_are_read_back_and_reported_as_drift() {
    let w = world(150, 1.0).await;
    let first = w.run("engagement").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(first.written > 0 && first.written <= 200, "{first:?}");
    let v = &first.verify;
    assert_eq!((v.checked, v.sampled_from, v.values_changed), (first.written, first.written, 0), "{v:?}");
    assert!(v.drift.is_empty() && v.note.is_none(), "{v:?}");
    assert_eq!(first.api_calls.get("verify"), Some(&1), "one query for up to 200: {:?}", first.api_calls);
    assert_eq!(first.write_calls(), 1, "the read-back is not a write");
    let drifted = OutcomeFilter { action: Some(Action::Drifted), limit: 1000, ..Default::default() };
    assert!(w.ctx.store.run_outcomes(first.run_id.unwrap(), &drifted).await.unwrap().is_empty());

    // An admin adds a workflow rule: minutes are cleared on every save that sets them.
    let rule = json!({"name": "ClearMinutes", "when": {"field": "Pendo_Minutes__c", "operator": "greaterThan", "value": 0},
                      "field": "Pendo_Minutes__c", "value": 0});
    w.sf_admin(reqwest::Method::POST, "field-updates/Account", rule).await;
    let quiet = w.run("engagement").await;
    assert_eq!((quiet.written, quiet.verify.checked), (0, 0), "nothing written, nothing read back: {quiet:?}");
    assert_eq!(quiet.api_calls.get("verify"), None);

    // Four accounts get new usage, so their minutes are written, and the rule clears them.
    let now = chrono::Utc::now().timestamp_millis() - 25 * 3_600_000;
    let movers: Vec<AccountProfile> = w
        .profiles()
        .into_iter()
        .filter(|p| p.in_salesforce && p.has_pendo_id_in_sf && !p.visitors.is_empty())
        .take(4)
        .collect();
    let page = w.ctx.pendo.pages(&[]).await.unwrap().into_iter().next().unwrap().id;
    let events: Vec<Value> = movers
        .iter()
        .map(|p| {
            json!({"kind": "page", "id": page, "visitorId": p.visitors[0].id, "accountId": p.id,
                   "time": now, "numEvents": 10, "numMinutes": 56})
        })
        .collect();
    w.pendo_seed(json!({"events": events})).await;
    let third = w.run("engagement").await;
    assert_eq!((third.written, third.failed), (4, 0), "{third:?}");
    assert_eq!(third.state, "succeeded", "drift does not fail the run");
    assert_eq!(third.api_calls.get("verify"), Some(&1), "{:?}", third.api_calls);
    let v = &third.verify;
    assert_eq!((v.checked, v.sampled_from, v.values_changed, v.records_gone), (4, 4, 4, 0), "{v:?}");
    let own = v.own_user.clone().expect("the integration user is known from the token");
    assert_eq!(own, emulator::salesforce::store::INTEGRATION_USER_ID);
    assert_eq!(v.changed_by.get(&own), Some(&4), "a rule runs in the writer's save: {v:?}");
    let run = third.run_id.unwrap();
    let updated = OutcomeFilter { action: Some(Action::Updated), limit: 1000, ..Default::default() };
    let sent: HashMap<String, Value> = w
        .ctx
        .store
        .run_outcomes(run, &updated)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|o| {
            let minutes = o.changes.iter().find(|c| c.field == "Pendo_Minutes__c")?.after.clone();
            Some((o.salesforce_id?, minutes))
        })
        .collect();
    let ids: Vec<String> = movers.iter().map(|p| sf_account_id(p.index)).collect();
    for d in &v.drift {
        assert!(ids.contains(&d.salesforce_id), "{d:?}");
        assert_eq!((d.object.as_str(), d.field.as_str()), ("Account", "Pendo_Minutes__c"));
        assert_eq!(d.sent, sent[&d.salesforce_id], "the value sent, as history has it");
        assert!(d.sent.as_f64().unwrap() >= 56.0, "{d:?}");
        assert_eq!(d.now.as_f64(), Some(0.0));
        assert_eq!(d.last_modified_by.as_deref(), Some(own.as_str()));
        assert!(d.last_modified_at.is_some());
    }
    let rows = w.ctx.store.run_outcomes(run, &drifted).await.unwrap();
    assert_eq!(rows.len(), 4, "every drifted record is in history: {rows:?}");
    for r in &rows {
        assert_eq!(r.error_code.as_deref(), Some("DRIFT"));
        assert_eq!(r.changes.len(), 1);
        assert_eq!(r.changes[0].before.as_ref(), sent.get(r.salesforce_id.as_deref().unwrap()));
        assert_eq!(r.changes[0].after.as_f64(), Some(0.0));
    }
    // Nothing is written back over the rule: the next run sends nothing.
    let after = w.run("engagement").await;
    assert_eq!((after.written, after.verify.values_changed), (0, 0), "{after:?}");
    let accounts = w.accounts().await;
    for id in &ids {
        assert_eq!(accounts[id]["Pendo_Minutes__c"].as_f64(), Some(0.0));
    }
}

/// `verify: {sample: 0}` reads nothing back; the default reads one query's worth of a larger
/// run; `all: true` reads everything, one query per 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_read_back_costs_what_the_setting_says() {
    let off = world_full(150, 1.0, None, "verify: { sample: 0 }\n").await;
    let r = off.run("engagement").await;
    assert!(r.written > 0);
    assert_eq!(r.api_calls.get("verify"), None, "{:?}", r.api_calls);
    assert_eq!((r.verify.checked, r.verify.sampled_from), (0, r.written));

    let default = world(700, 1.0).await;
    let r = default.run("engagement").await;
    assert!(r.written > 200, "{r:?}");
    assert_eq!(r.api_calls.get("verify"), Some(&1), "{:?}", r.api_calls);
    assert_eq!((r.verify.checked, r.verify.sampled_from, r.verify.values_changed), (200, r.written, 0));

    // Reading every Account a page of 2,000 at a time is cheaper than a query per 200 written.
    let all = world_full(700, 1.0, None, "verify: { all: true }\n").await;
    let r = all.run("engagement").await;
    assert!(r.written.div_ceil(200) >= 3, "{r:?}");
    let accounts = all.accounts().await.values().filter(|a| a["IsDeleted"] != json!(true)).count();
    assert!(accounts <= 2000);
    assert_eq!(r.api_calls.get("verify"), Some(&1), "one page holds them all: {:?}", r.api_calls);
    assert_eq!((r.verify.checked, r.verify.values_changed, r.verify.records_gone), (r.written, 0, 0));

    // In a larger org the pages would cost more than the Id queries: the first page's rows are
    // used and the scan goes no further (the emulator pages in insertion order, so the matched
    // Accounts seeded first are all on it).
    let big = world_full(700, 1.0, None, "verify: { all: true }\n").await;
    let others: Vec<Value> = (0..10_000).map(|i| json!({"Name": format!("Unrelated {i}")})).collect();
    big.sf_admin(reqwest::Method::POST, "records/Account", Value::Array(others)).await;
    let r = big.run("engagement").await;
    assert_eq!(r.api_calls.get("verify"), Some(&1), "{:?}", r.api_calls);
    assert_eq!((r.verify.checked, r.verify.values_changed, r.verify.records_gone), (r.written, 0, 0));
}

/// The org's allocation spent between the write and the read-back: the run keeps what it
/// wrote, says it could not verify, and does not fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_allocation_skips_the_read_back_with_a_note() {
    let w = world(150, 1.0).await;
    // The Account read (which prices the run) with preflight's describe, one Composite call,
    // and the one Collections call go through; other integrations take the rest of the day
    // before the read-back.
    w.sf_admin(reqwest::Method::PUT, "limits", json!({"DailyApiRequests": {"SpentAfter": 2}})).await;
    let r = w.run("engagement").await;
    assert_eq!((r.failed, r.deferred), (0, 0), "{r:?}");
    assert!(r.written > 0);
    assert_eq!(r.state, "succeeded", "{r:?}");
    assert_eq!((r.verify.checked, r.verify.sampled_from), (0, r.written));
    let note = r.verify.note.as_deref().unwrap_or_default();
    assert!(note.contains("allocation is spent") && note.contains("REQUEST_LIMIT_EXCEEDED"), "{note}");
}

/// `window: 24h` with the current hour: an event from this hour reaches Salesforce at the next
/// run (a daily window leaves today out), a re-run writes nothing, and the events field holds
/// exactly the last 24 hours' events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_hourly_window_counts_this_hour_and_a_rerun_writes_nothing() {
    let hourly = CONFIG
        .replace("{share}", "1.0")
        .replace("    window_days: 30\n", "    window: 24h\n    window_includes_current: true\n")
        .replace("      active_days: { weight: 0.5, target: 20 }\n", "      events: { weight: 0.5, target: 100 }\n")
        .replace("      active_days: Pendo_Active_Days__c\n", "");
    let mut w = Emulators::start(7, 120, 30).await.world(&hourly).await;
    // Twenty minutes into the hour, whenever the test runs: its runs never straddle an hour.
    let wall = chrono::Utc::now().timestamp_millis();
    let start = wall - wall.rem_euclid(3_600_000) + 20 * 60_000;
    w.ctx.clock = engine::clock::Clock::starting_at(chrono::DateTime::from_timestamp_millis(start).unwrap());
    let first = w.run("engagement").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(first.written > 0, "{first:?}");
    let again = w.run("engagement").await;
    assert_eq!((again.written, again.failed), (0, 0), "a re-run writes nothing: {again:?}");

    // This hour, for one account matched by id.
    let mover = w.profiles().into_iter().find(|p| p.in_salesforce && p.has_pendo_id_in_sf && !p.visitors.is_empty());
    let mover = mover.unwrap();
    let id = sf_account_id(mover.index);
    let before = w.accounts().await[&id]["Pendo_Events__c"].as_f64().unwrap_or(0.0);
    let page = w.ctx.pendo.pages(&[]).await.unwrap().into_iter().next().unwrap().id;
    w.pendo_seed(json!({"events": [{"kind": "page", "id": page, "visitorId": mover.visitors[0].id,
        "accountId": mover.id, "time": start, "numEvents": 4321, "numMinutes": 5}]}))
        .await;
    let third = w.run("engagement").await;
    assert!(third.written >= 1, "{third:?}");
    let after = w.accounts().await[&id]["Pendo_Events__c"].as_f64().unwrap();
    assert_eq!(after, before + 4321.0, "this hour's events count at once");

    // The field holds the window's events, whole hours and this one, as Pendo counts them.
    let window = w.ctx.config.workflows["engagement"].window(w.ctx.clock.now());
    let usage = engine::extract::Extractor::new(&w.ctx.pendo)
        .engagement(&window, &engine::extract::CoreFeatures::MarkedCore)
        .await
        .unwrap();
    let mine = usage.iter().find(|u| u.account_id == mover.id).unwrap();
    assert_eq!(mine.events as f64, after);
    assert_eq!(mine.active_days, 0, "hourly windows hold no day count");
}
