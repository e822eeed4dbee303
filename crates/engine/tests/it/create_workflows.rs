//! The record-creating workflows end to end against both emulators on 127.0.0.1: the right
//! accounts get one alert each, a re-run creates nothing, an interrupted create (the record made,
//! the local commit lost) is settled without a duplicate, an episode re-arms only after
//! recovery, and the alert goes to the configured CSM when there is one.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::Utc;
use emulator::pendo::generate::{Trend, account_profile, sf_account_id};
use engine::store::{
    Action, CreateState, FailureFilter, FailureSelector, FailureStatus, FingerprintPut, OutcomeFilter,
};
use engine::workflow::drop_alert::{Episode, alert_key, episode_scope};
use engine::workflow::{Context, RunOptions};
use serde_json::{Value, json};

use crate::support::{self, Emulators, World};

const CONFIG: &str = r#"
store: "{store}"
budget: { daily_share: 1.0 }
workflows:
  churn-alerts:
    template: engagement-drop-alert
    schedule: "0 7 * * *"
    window_days: 7
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    score:
      active_visitors: { weight: 0.5, target: 5 }
      active_days: { weight: 0.5, target: 5 }
    alert:
      drop_share: 0.5
      hysteresis: 10
      owner_field: CSM__c
      create_case: {case}
      key_field: {key_field}
"#;

async fn world(accounts: usize, case: bool) -> World {
    world_with(accounts, case, "Usagesync_Key__c").await
}

/// A world whose alerts carry their key in `key_field`.
async fn world_with(accounts: usize, case: bool, key_field: &str) -> World {
    let text = CONFIG.replace("{case}", &case.to_string()).replace("{key_field}", key_field);
    Emulators::start(11, accounts, 30).await.world(&text).await
}

impl World {
    /// Usagesync_Key__c → how many records hold it.
    async fn keys(&self, object: &str) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for r in self.records(object).await {
            if let Some(k) = r["Usagesync_Key__c"].as_str() {
                *out.entry(k.to_owned()).or_default() += 1;
            }
        }
        out
    }

    async fn episodes(&self, pendo_ids: &[String]) -> HashMap<String, Episode> {
        let stored = self.ctx.store.written_values(&episode_scope("churn-alerts"), pendo_ids).await.unwrap();
        stored
            .into_iter()
            .map(|(k, fields)| (k, serde_json::from_value(fields.into_iter().next().unwrap().1).unwrap()))
            .collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_accounts_get_one_high_priority_alert_and_a_rerun_creates_nothing() {
    let w = world(300, false).await;

    let dry = w.dry_run("churn-alerts").await;
    assert!(dry.changed > 0, "the world has dropping accounts: {dry:?}");
    assert!(w.keys("Task").await.is_empty(), "a dry run creates nothing");
    let sample = &dry.samples[0];
    let fields: HashMap<_, _> = sample.fields.iter().cloned().collect();
    assert_eq!(fields["Priority"], json!("High"));
    assert!(fields["Description"].as_str().unwrap().to_lowercase().contains("score fell"), "{fields:?}");

    let first = w.run("churn-alerts").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert_eq!(first.written, dry.changed);
    let tasks = w.records("Task").await;
    assert_eq!(tasks.len(), first.written);
    // The org keeps the key field unique, so creates are inserted 200 to a Collections call
    // (Salesforce refuses a key that exists: nothing is clobbered, nothing looked up first),
    // after one describe per object the workflow names: the Account's came with the first page
    // of the Account read (one Composite call), so preflight describes only the Task.
    assert_eq!(first.api_calls["create"], (first.written as u64).div_ceil(200), "{:?}", first.api_calls);
    assert_eq!(first.api_calls["preflight"], 1, "Task described: {:?}", first.api_calls);
    assert_eq!(first.api_calls["read_accounts"], 2, "{:?}", first.api_calls);
    let accounts: HashMap<String, Value> =
        w.records("Account").await.into_iter().map(|a| (a["Id"].as_str().unwrap().to_owned(), a)).collect();
    for t in &tasks {
        assert_eq!(t["Priority"], "High");
        let account = &accounts[t["WhatId"].as_str().unwrap()];
        assert_eq!(t["OwnerId"], account["OwnerId"], "no CSM set: the account owner gets it");
        assert!(t["Description"].as_str().unwrap().contains("active visitors"), "evidence: {t}");
    }
    // Alerts land on accounts whose usage really fell; steady or growing ones stay quiet.
    let trends: HashMap<String, Trend> =
        (0..w.gc.accounts).map(|i| (sf_account_id(i), account_profile(&w.gc, i).trend)).collect();
    let alerted: Vec<Trend> = tasks.iter().filter_map(|t| trends.get(t["WhatId"].as_str().unwrap()).copied()).collect();
    assert!(alerted.iter().any(|t| matches!(t, Trend::SharpDrop | Trend::Churned)), "{alerted:?}");
    let falling = alerted.iter().filter(|t| matches!(t, Trend::SharpDrop | Trend::Churned | Trend::Declining)).count();
    assert!(falling * 2 > alerted.len(), "most alerts are falling accounts: {alerted:?}");

    let second = w.run("churn-alerts").await;
    assert_eq!(second.written, 0);
    assert_eq!(second.failed, 0);
    assert_eq!(w.records("Task").await.len(), tasks.len(), "a re-run creates nothing new");
    let outcomes = w.ctx.store.run_outcomes(second.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    let still_open = outcomes.iter().filter(|o| o.action == Action::Unchanged).count();
    assert_eq!(still_open, tasks.len(), "each open episode is recorded as a decision");
    assert!(outcomes.iter().all(|o| o.message.as_deref().unwrap_or("").contains("still open")));

    let runs = w.ctx.store.list_runs(Some("churn-alerts"), 0).await.unwrap();
    assert_eq!(runs.len(), 2, "dry runs leave no run behind");

    // A new process (a client that has seen no Salesforce answer yet, as a daily `sync` is) with
    // nothing to make and cached matches needs not even the budget: not one Salesforce call.
    let fresh = Context {
        salesforce: engine::connect::salesforce_client(&w.ctx.config, &super::support::env).unwrap(),
        ..w.ctx.clone()
    };
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let third = engine::workflow::run(&fresh, "churn-alerts", &options).await.unwrap();
    assert_eq!((third.written, third.failed), (0, 0), "{third:?}");
    assert_eq!(fresh.salesforce.requests_sent(), 0, "{:?}", third.api_calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_create_interrupted_before_the_local_commit_is_settled_without_a_duplicate() {
    let w = world(200, true).await;
    let dry = w.dry_run("churn-alerts").await;
    let victim = dry.samples[0].clone();
    // What a crash right after the call leaves: the key pending in the store, the Task in
    // Salesforce with that key.
    let key = alert_key("churn-alerts", &victim.pendo_account, 1, "Task");
    let now = Utc::now();
    assert_eq!(w.ctx.store.begin_create(&key, "churn-alerts", now).await.unwrap(), CreateState::New);
    let mut body: serde_json::Map<String, Value> = victim.fields.iter().cloned().collect();
    body.insert("Subject".into(), json!("made before the crash"));
    let made = w.ctx.salesforce.upsert("Task", "Usagesync_Key__c", &key, &body).await.unwrap();
    assert!(made.created);

    let run = w.run("churn-alerts").await;
    assert_eq!(run.failed, 0, "{:?}", run.failures);
    let keys = w.keys("Task").await;
    assert_eq!(keys.get(&key), Some(&1));
    assert!(keys.values().all(|n| *n == 1));
    assert_eq!(keys.len(), run.written, "one Task per alert");
    assert_eq!(w.keys("Case").await.len(), run.written, "one Case per alert");
    let task = w.records("Task").await.into_iter().find(|t| t["Usagesync_Key__c"] == json!(key)).unwrap();
    assert_eq!(task["Subject"], "made before the crash", "the found record is kept, not overwritten");
    assert_eq!(
        w.ctx.store.begin_create(&key, "churn-alerts", now).await.unwrap(),
        CreateState::Committed { salesforce_id: made.id.unwrap().to_string() }
    );
    let again = w.run("churn-alerts").await;
    assert_eq!(again.written, 0);
    assert_eq!(w.keys("Task").await.len(), keys.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_episode_rearms_after_recovery_and_alerts_go_to_the_csm() {
    let w = world(200, false).await;
    let dry = w.dry_run("churn-alerts").await;
    let (first, second) = (dry.samples[0].clone(), dry.samples[1].clone());
    // A CSM on one account: the alert goes to them.
    let users = w.records("User").await;
    let owner =
        w.records("Account").await.into_iter().find(|a| a["Id"] == json!(first.salesforce_id)).unwrap()["OwnerId"]
            .clone();
    let csm = users.iter().map(|u| u["Id"].clone()).find(|id| *id != owner).unwrap();
    let csm = csm.as_str().unwrap().to_owned();
    let account_id = salesforce::SalesforceId::parse(&first.salesforce_id).unwrap();
    w.ctx.salesforce.update("Account", &account_id, &json!({ "CSM__c": csm })).await.unwrap();

    w.run("churn-alerts").await;
    let tasks = w.records("Task").await;
    let to_csm = tasks.iter().find(|t| t["WhatId"] == json!(first.salesforce_id)).unwrap();
    assert_eq!(to_csm["OwnerId"], json!(csm));

    // The second account recovers: its re-arm level is met at the next run.
    let ids = vec![second.pendo_account.clone()];
    let mut episode = w.episodes(&ids).await.remove(&second.pendo_account).unwrap();
    assert!(episode.open);
    assert_eq!(episode.count, 1);
    episode.rearm_at = 0.0;
    let value = serde_json::to_value(&episode).unwrap();
    w.ctx
        .store
        .put_fingerprints(&[FingerprintPut {
            scope: episode_scope("churn-alerts"),
            key: second.pendo_account.clone(),
            field: "episode".into(),
            fingerprint: 1,
            written_at: Utc::now(),
            value: Some(value),
        }])
        .await
        .unwrap();
    let recovered = w.run("churn-alerts").await;
    assert_eq!(recovered.written, 0);
    let outcomes = w.ctx.store.run_outcomes(recovered.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    assert!(
        outcomes
            .iter()
            .any(|o| o.key == second.pendo_account && o.message.as_deref().unwrap().starts_with("recovered"))
    );
    assert!(!w.episodes(&ids).await[&second.pendo_account].open);

    // Still below its old level, so with the episode closed it alerts again: episode 2.
    let rearmed = w.run("churn-alerts").await;
    assert_eq!(rearmed.written, 1, "{rearmed:?}");
    let keys = w.keys("Task").await;
    assert!(keys.contains_key(&alert_key("churn-alerts", &second.pendo_account, 2, "Task")));
    assert_eq!(keys.len(), tasks.len() + 1);
}

/// Recovery read from Pendo itself, not from an edited episode: fresh usage seeded into the
/// emulator lifts the account's score over its re-arm level, the next run closes the episode
/// without creating anything, and the run after that stays quiet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_usage_recovering_closes_the_episode_without_a_new_alert() {
    let w = world(200, false).await;
    let first = w.run("churn-alerts").await;
    assert!(first.written > 0, "{first:?}");
    let account = first.samples[0].pendo_account.clone();
    let ids = vec![account.clone()];
    assert!(w.episodes(&ids).await[&account].open);
    let tasks = w.records("Task").await.len();

    // Five new visitors of that account, active on each of the last six days.
    let now = Utc::now().timestamp_millis();
    let day = 86_400_000_i64;
    let visitors: Vec<Value> =
        (0..5).map(|v| json!({ "visitorId": format!("{account}-back-{v}"), "accountId": account })).collect();
    let events: Vec<Value> = (0..5)
        .flat_map(|v| {
            let account = account.clone();
            (1..=6).map(move |d| {
                json!({ "kind": "page", "id": "recovery-page", "visitorId": format!("{account}-back-{v}"),
                        "accountId": account, "time": now - d * day, "numEvents": 40, "numMinutes": 20 })
            })
        })
        .collect();
    let body =
        json!({ "pages": [{ "id": "recovery-page", "name": "Recovery" }], "visitors": visitors, "events": events });
    let seeded = w.http.post(format!("{}/__emulator/seed", w.pendo.base_url)).json(&body).send().await.unwrap();
    assert!(seeded.status().is_success(), "{}", seeded.text().await.unwrap());

    let recovered = w.run("churn-alerts").await;
    assert_eq!(recovered.written, 0, "recovery creates nothing: {recovered:?}");
    let outcomes = w.ctx.store.run_outcomes(recovered.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    let decision = outcomes.iter().find(|o| o.key == account).expect("a decision for the recovered account");
    assert!(decision.message.as_deref().unwrap_or("").starts_with("recovered"), "{decision:?}");
    assert!(!w.episodes(&ids).await[&account].open, "the episode is closed");
    let quiet = w.run("churn-alerts").await;
    assert_eq!(quiet.written, 0, "a healthy account is not alerted: {quiet:?}");
    assert_eq!(w.records("Task").await.len(), tasks);
}

const EXPANSION: &str = r#"
store: "{store}"
budget: { daily_share: 1.0 }
workflows:
  expansion:
    template: expansion-opportunity
    schedule: "0 8 * * 1"
    window_days: 30
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    expansion:
      milestones:
        - { name: premium, feature_visitors: { features: [{premium}], min_visitors: 2 } }
        - { name: heavy-use, sustained_usage: { min_daily_events: 40, days: 10 } }
        - { name: seats, seat_share: { seats_field: Contracted_Seats__c, min_share: 0.8 } }
      opportunity:
        name: "{account} - {milestone} expansion"
        type: "Existing Customer - Upgrade"
        stage: Prospecting
        close_in_days: 45
        amount_base: 1000
        amount_per_active_visitor: 50
"#;

async fn expansion_world(accounts: usize) -> World {
    let emulators = Emulators::start(5, accounts, 30).await;
    let features = emulators.pendo_list("feature").await;
    let premium: Vec<String> = features
        .iter()
        .filter(|f| f["group"]["id"] == "grp-premium")
        .map(|f| format!("\"{}\"", f["id"].as_str().unwrap()))
        .collect();
    assert!(!premium.is_empty());
    emulators.world(&EXPANSION.replace("{premium}", &premium.join(", "))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expansion_opportunities_appear_once_per_account_and_milestone_and_respect_peoples_own() {
    let w = expansion_world(200).await;
    let dry = w.dry_run("expansion").await;
    assert!(dry.changed >= 3, "the world has expanding accounts: {dry:?}");
    assert!(w.records("Opportunity").await.iter().all(|o| o["Type"] == "Trial"), "a dry run creates nothing");

    // A seat-heavy account: one contracted seat, so anyone active crosses 80%.
    let seat_account = dry.samples[0].salesforce_id.clone();
    let id = salesforce::SalesforceId::parse(&seat_account).unwrap();
    w.ctx.salesforce.update("Account", &id, &json!({ "Contracted_Seats__c": 1 })).await.unwrap();
    // A person already opened the expansion for the second crossing.
    let taken = dry.samples[1].clone();
    let taken_fields: HashMap<_, _> = taken.fields.iter().cloned().collect();
    let milestone = taken_fields["Expansion_Milestone__c"].clone();
    let by_hand = w
        .ctx
        .salesforce
        .create(
            "Opportunity",
            &json!({
                "Name": "Upsell agreed on the phone",
                "StageName": "Qualification",
                "CloseDate": "2027-01-31",
                "AccountId": taken.salesforce_id,
                "Expansion_Milestone__c": milestone,
            }),
        )
        .await
        .unwrap();

    let first = w.run("expansion").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(first.written > 0);
    let opps: Vec<Value> =
        w.records("Opportunity").await.into_iter().filter(|o| !o["Usagesync_Key__c"].is_null()).collect();
    assert_eq!(opps.len(), first.written);
    let mut per_pair: BTreeMap<(String, String), usize> = BTreeMap::new();
    for o in w.records("Opportunity").await.iter().filter(|o| o["Type"] != "Trial") {
        let pair =
            (o["AccountId"].as_str().unwrap().to_owned(), o["Expansion_Milestone__c"].as_str().unwrap().to_owned());
        *per_pair.entry(pair).or_default() += 1;
    }
    assert!(per_pair.values().all(|n| *n == 1), "one open expansion per account and milestone: {per_pair:?}");
    assert!(per_pair.contains_key(&(seat_account.clone(), "seats".to_owned())), "the seat milestone fired");
    let accounts: HashMap<String, Value> =
        w.records("Account").await.into_iter().map(|a| (a["Id"].as_str().unwrap().to_owned(), a)).collect();
    for o in &opps {
        assert_eq!(o["StageName"], "Prospecting");
        assert_eq!(o["Type"], "Existing Customer - Upgrade");
        assert_eq!(o["OwnerId"], accounts[o["AccountId"].as_str().unwrap()]["OwnerId"]);
        assert!(o["Amount"].as_f64().unwrap() >= 1000.0);
        assert!(o["Name"].as_str().unwrap().ends_with(" expansion"));
    }
    let tasks = w.records("Task").await;
    assert_eq!(tasks.len(), opps.len(), "a Task per Opportunity");
    let opp_ids: std::collections::HashSet<&str> = opps.iter().map(|o| o["Id"].as_str().unwrap()).collect();
    assert!(tasks.iter().all(|t| opp_ids.contains(t["WhatId"].as_str().unwrap())));
    // The Task says which premium features were used, by name.
    let premium: Vec<Value> =
        w.ctx.pendo.features(&[]).await.unwrap().into_iter().map(|f| json!({"id": f.id, "name": f.name})).collect();
    let premium_text: Vec<&str> = tasks
        .iter()
        .filter_map(|t| t["Description"].as_str())
        .filter(|d| d.contains("the premium adoption milestone"))
        .collect();
    assert!(!premium_text.is_empty(), "a premium crossing: {tasks:?}");
    for d in premium_text {
        assert!(premium.iter().any(|f| d.contains(f["name"].as_str().unwrap())), "feature names: {d}");
        assert!(!premium.iter().any(|f| d.contains(f["id"].as_str().unwrap())), "no feature ids: {d}");
    }
    let outcomes = w.ctx.store.run_outcomes(first.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    let respected = outcomes
        .iter()
        .find(|o| o.action == Action::Skipped && o.salesforce_id.as_deref() == Some(by_hand.id.as_str()))
        .expect("the person's Opportunity is recorded as the reason to skip");
    assert!(respected.message.as_deref().unwrap().contains("already exists"));

    let second = w.run("expansion").await;
    assert_eq!(second.written, 0, "{second:?}");
    assert_eq!(second.failed, 0);
    let again: Vec<Value> =
        w.records("Opportunity").await.into_iter().filter(|o| !o["Usagesync_Key__c"].is_null()).collect();
    assert_eq!(again.len(), opps.len(), "a re-run creates nothing");
    assert_eq!(w.records("Task").await.len(), tasks.len());
}

/// Live expansion Opportunities usagesync made, by (Account, milestone): (Id, key), oldest first.
async fn our_expansions(w: &World) -> BTreeMap<(String, String), Vec<(String, String)>> {
    let mut out: BTreeMap<(String, String), Vec<(String, String)>> = BTreeMap::new();
    for o in w.live_records("Opportunity").await {
        let Some(key) = o["Usagesync_Key__c"].as_str() else { continue };
        let pair =
            (o["AccountId"].as_str().unwrap().to_owned(), o["Expansion_Milestone__c"].as_str().unwrap().to_owned());
        out.entry(pair).or_default().push((o["Id"].as_str().unwrap().to_owned(), key.to_owned()));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expansion_rerun_knows_what_exists_from_state_and_reads_only_what_changed() {
    let w = expansion_world(200).await;
    let first = w.run("expansion").await;
    assert!(first.written > 2 && first.failed == 0, "{first:?}");
    let made = our_expansions(&w).await;

    // Nothing changed: what exists comes from the store, plus one query for what changed since.
    let (second, calls) = w.run_fresh("expansion").await;
    let second = second.unwrap();
    assert_eq!((second.written, second.failed, second.deferred), (0, 0, 0), "{second:?}");
    assert!(calls <= 2, "{calls} Salesforce calls: {:?}", second.api_calls);
    assert!(!second.api_calls.contains_key("read_limits"), "nothing to make, no /limits read: {:?}", second.api_calls);
    // The seat milestone reads contracted seats (a Salesforce fact); what exists is one query.
    assert!(second.api_calls.get("read_opportunities").copied().unwrap_or(0) <= 1, "{:?}", second.api_calls);
    assert_eq!(our_expansions(&w).await, made, "a re-run creates nothing");
    let outcomes = w.ctx.store.run_outcomes(second.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    let skipped = outcomes.iter().filter(|o| o.action == Action::Skipped).count();
    assert!(skipped >= made.len(), "every crossing is decided, from state: {outcomes:?}");
    let (third, calls) = w.run_fresh("expansion").await;
    let third = third.unwrap();
    assert_eq!(third.written, 0);
    assert!(calls <= 2, "{calls} Salesforce calls: {:?}", third.api_calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expansion_closed_or_deleted_since_reopens_its_milestone_and_only_that_one() {
    let w = expansion_world(200).await;
    let first = w.run("expansion").await;
    assert!(first.written > 2 && first.failed == 0, "{first:?}");
    let made = our_expansions(&w).await;
    let mut pairs = made.keys();
    let (closed, deleted) = (pairs.next().unwrap().clone(), pairs.next().unwrap().clone());
    let id = |pair: &(String, String)| salesforce::SalesforceId::parse(&made[pair][0].0).unwrap();
    w.later().await;
    w.ctx.salesforce.update("Opportunity", &id(&closed), &json!({ "StageName": "Closed Won" })).await.unwrap();
    w.ctx.salesforce.delete("Opportunity", &id(&deleted)).await.unwrap();

    let second = w.run("expansion").await;
    assert_eq!((second.written, second.failed), (2, 0), "{second:?}");
    let now = our_expansions(&w).await;
    // The closed one stays; the next number is made beside it.
    assert_eq!(now[&closed].len(), 2, "{:?}", now[&closed]);
    assert!(
        now[&closed][1].1.contains(&format!(":{}:2~", closed.1)),
        "the second of the milestone: {:?}",
        now[&closed]
    );
    assert_eq!(now[&deleted].len(), 1);
    assert_ne!(now[&deleted][0].0, made[&deleted][0].0, "the deleted one is made again");
    for (pair, list) in &made {
        if *pair != closed && *pair != deleted {
            assert_eq!(&now[pair], list, "nothing else changes");
        }
    }
    let (third, calls) = w.run_fresh("expansion").await;
    let third = third.unwrap();
    assert_eq!(third.written, 0, "{third:?}");
    // The closed and deleted ones, read again within the overlap, were accounted for.
    assert!(calls <= 2, "{calls}: {:?}", third.api_calls);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expansion_a_person_opened_after_the_first_run_still_prevents_a_duplicate() {
    let w = expansion_world(200).await;
    let dry = w.dry_run("expansion").await;
    let target = dry.samples[0].clone();
    let milestone = target.fields.iter().find(|(f, _)| f == "Expansion_Milestone__c").unwrap().1.clone();
    // Salesforce refuses the first run's Opportunity for one account, so the store knows of none
    // open there.
    let rule = json!({"name": "Not_Yet", "errorMessage": "Not this account yet", "errorField": "AccountId",
                      "condition": {"field": "AccountId", "operator": "equals", "value": target.salesforce_id}});
    let url = format!("{}/__emulator/validation-rules/Opportunity", w.sf.base_url);
    assert!(w.http.post(&url).json(&rule).send().await.unwrap().status().is_success());
    let first = w.run("expansion").await;
    assert!(first.failed >= 1 && first.written > 0, "{first:?}");
    let pair = (target.salesforce_id.clone(), milestone.as_str().unwrap().to_owned());
    assert!(!our_expansions(&w).await.contains_key(&pair));
    assert!(w.http.delete(&url).send().await.unwrap().status().is_success());

    // Meanwhile a person opened it by hand.
    w.later().await;
    let by_hand = w
        .ctx
        .salesforce
        .create(
            "Opportunity",
            &json!({
                "Name": "Expansion agreed by phone",
                "StageName": "Qualification",
                "CloseDate": "2027-01-31",
                "AccountId": target.salesforce_id,
                "Expansion_Milestone__c": milestone,
            }),
        )
        .await
        .unwrap();
    let second = w.run("expansion").await;
    assert_eq!((second.written, second.failed), (0, 0), "{second:?}");
    assert!(!our_expansions(&w).await.contains_key(&pair), "no duplicate of the person's Opportunity");
    let outcomes = w.ctx.store.run_outcomes(second.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    assert!(
        outcomes.iter().any(|o| o.action == Action::Skipped && o.salesforce_id.as_deref() == Some(by_hand.id.as_str())),
        "the person's Opportunity is the reason: {outcomes:?}"
    );
}

/// What exists comes from the mirror of open expansion Opportunities: a re-run makes one call
/// however many Opportunities the integration user itself changed within the overlap, and still
/// follows what people did since: one they opened for a milestone is respected (no second one),
/// one they closed makes room for the next. A dry run leaves the mirror as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expansion_rerun_follows_what_people_opened_and_closed_from_state_in_one_call() {
    let w = expansion_world(200).await;
    // 2,500 Opportunities the integration user loaded just now, meeting no rule (a stand-in for
    // a large write of its own): more than one query page, all within the change query's overlap.
    let many: Vec<Value> = (0..2_500)
        .map(|i| json!({"Name": format!("Renewal {i}"), "StageName": "Prospecting", "CloseDate": "2027-03-01"}))
        .collect();
    w.sf_admin(reqwest::Method::POST, "records/Opportunity", json!(many)).await;
    let first = w.run("expansion").await;
    assert!(first.written > 2 && first.failed == 0, "{first:?}");
    let made = our_expansions(&w).await;
    let (second, calls) = w.run_fresh("expansion").await;
    let second = second.unwrap();
    assert_eq!((second.written, second.failed), (0, 0), "{second:?}");
    // The seat milestone reads contracted seats (a Salesforce fact); what exists is one query.
    let opportunity_reads = |r: &engine::workflow::RunReport| r.api_calls.get("read_opportunities").copied();
    assert_eq!(opportunity_reads(&second), Some(1), "no page of the user's own changes: {:?}", second.api_calls);
    assert!(calls <= 2, "{calls}: {:?}", second.api_calls);

    let mut pairs = made.keys();
    let (replaced, reopened) = (pairs.next().unwrap().clone(), pairs.next().unwrap().clone());
    let id = |pair: &(String, String)| salesforce::SalesforceId::parse(&made[pair][0].0).unwrap();
    // A person closes ours for two milestones, and opens their own for the first of them.
    w.later().await;
    for pair in [&replaced, &reopened] {
        w.ctx.salesforce.update("Opportunity", &id(pair), &json!({ "StageName": "Closed Lost" })).await.unwrap();
    }
    let by_hand = w
        .ctx
        .salesforce
        .create(
            "Opportunity",
            &json!({
                "Name": "Expansion agreed by phone", "StageName": "Qualification", "CloseDate": "2027-01-31",
                "AccountId": replaced.0, "Expansion_Milestone__c": replaced.1,
            }),
        )
        .await
        .unwrap();

    let cursor = || async { w.ctx.store.cursor("expansion", "expansion_opportunities").await.unwrap() };
    let before = cursor().await;
    assert!(before.is_some());
    let dry = w.dry_run("expansion").await;
    assert_eq!(dry.changed, 1, "only the milestone closed and not reopened: {dry:?}");
    assert_eq!(cursor().await, before, "a dry run leaves the mirror as it was");

    let third = w.run("expansion").await;
    assert_eq!((third.written, third.failed), (1, 0), "{third:?}");
    let now = our_expansions(&w).await;
    assert_eq!(now[&replaced], made[&replaced], "the person's own is respected: no second one");
    assert_eq!(now[&reopened].len(), 2, "the next number beside the closed one: {:?}", now[&reopened]);
    let outcomes = w.ctx.store.run_outcomes(third.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    assert!(
        outcomes.iter().any(|o| o.action == Action::Skipped && o.salesforce_id.as_deref() == Some(by_hand.id.as_str())),
        "the person's Opportunity is the reason: {outcomes:?}"
    );
    assert_ne!(cursor().await, before);

    // The person closes their own too: the milestone is free again.
    w.later().await;
    let theirs = salesforce::SalesforceId::parse(by_hand.id.as_str()).unwrap();
    w.ctx.salesforce.update("Opportunity", &theirs, &json!({ "StageName": "Closed Won" })).await.unwrap();
    let fourth = w.run("expansion").await;
    assert_eq!((fourth.written, fourth.failed), (1, 0), "{fourth:?}");
    assert_eq!(our_expansions(&w).await[&replaced].len(), 2);
    let (fifth, calls) = w.run_fresh("expansion").await;
    let fifth = fifth.unwrap();
    assert_eq!(fifth.written, 0);
    assert_eq!(opportunity_reads(&fifth), Some(1), "{:?}", fifth.api_calls);
    assert!(calls <= 2, "{calls}: {:?}", fifth.api_calls);
}

const TRIAL: &str = r#"
store: "{store}"
budget: { daily_share: 1.0 }
workflows:
  trials:
    template: trial-usage
    schedule: "0 * * * *"
    window_days: 30
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    trial:
      select: "Type = 'Trial' OR Is_POC__c = true"
      fields:
        active_users: Trial_Active_Users__c
        features_explored: Trial_Features_Explored__c
        guides_completed: Trial_Guides_Completed__c
        last_active: Trial_Last_Active__c
        drop_off_step: Trial_Drop_Off_Step__c
      onboarding_guide: "{guide}"
      stages:
        - { metric: active_users, at_least: 1, stage: Qualification }
        - { metric: features_explored, at_least: 2, stage: Needs Analysis }
"#;

const ORDER: &[&str] = &["Prospecting", "Qualification", "Needs Analysis", "Value Proposition"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_usage_lands_on_trial_opportunities_and_stages_only_move_forward() {
    let emulators = Emulators::start(3, 300, 30).await;
    let guides = emulators.pendo_list("guide").await;
    let tour = guides.iter().find(|g| g["name"] == "Welcome Tour").unwrap()["id"].as_str().unwrap().to_owned();
    let w = emulators.world(&TRIAL.replace("{guide}", &tour)).await;
    let run = |dry_run: bool| {
        let ctx = w.ctx.clone();
        async move {
            let options = RunOptions { dry_run, trigger: "test".into(), progress: None, ..Default::default() };
            engine::workflow::run(&ctx, "trials", &options).await.unwrap()
        }
    };
    let before: HashMap<String, Value> =
        w.records("Opportunity").await.into_iter().map(|o| (o["Id"].as_str().unwrap().to_owned(), o)).collect();
    assert!(before.len() >= 5, "the world has trials");
    // A proof of concept on a customer account, flagged rather than typed.
    let poc_account = w.records("Account").await.into_iter().find(|a| a["Type"] == "Customer").unwrap();
    let poc = w
        .ctx
        .salesforce
        .create(
            "Opportunity",
            &json!({
                "Name": "POC", "StageName": "Prospecting", "CloseDate": "2027-02-01", "Type": "New Customer",
                "Is_POC__c": true, "AccountId": poc_account["Id"],
            }),
        )
        .await
        .unwrap();

    let first = run(false).await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(first.written > 0);
    let after: HashMap<String, Value> =
        w.records("Opportunity").await.into_iter().map(|o| (o["Id"].as_str().unwrap().to_owned(), o)).collect();
    let mut advanced = None;
    for (id, o) in &after {
        let old = before.get(id).map_or("Prospecting", |b| b["StageName"].as_str().unwrap());
        let new = o["StageName"].as_str().unwrap();
        let pos = |s: &str| ORDER.iter().position(|x| *x == s).unwrap();
        assert!(pos(new) >= pos(old), "{id}: {old} → {new} went backwards");
        if pos(new) > pos(old) {
            assert!(o["Trial_Active_Users__c"].as_f64().unwrap() >= 1.0, "advanced for a reason: {o}");
            advanced = Some(id.clone());
        }
    }
    let written = after.values().filter(|o| !o["Trial_Active_Users__c"].is_null()).count();
    assert_eq!(written, first.written, "every matched trial got its usage");
    assert!(!after[poc.id.as_str()]["Trial_Active_Users__c"].is_null(), "the POC flag selects it too");
    let advanced = advanced.expect("some trial advanced");
    let drop_offs: Vec<&str> = after.values().filter_map(|o| o["Trial_Drop_Off_Step__c"].as_str()).collect();
    assert!(!drop_offs.is_empty(), "some trial visitors left the welcome tour");
    for d in &drop_offs {
        assert!(["step 1 of 4", "step 2 of 4", "step 3 of 4"].contains(d), "{d}");
    }

    // A person moves one back: usagesync leaves it there from now on.
    w.later().await;
    let id = salesforce::SalesforceId::parse(&advanced).unwrap();
    w.ctx.salesforce.update("Opportunity", &id, &json!({ "StageName": "Prospecting" })).await.unwrap();
    let second = run(false).await;
    assert_eq!(second.failed, 0);
    let o = w.records("Opportunity").await.into_iter().find(|o| o["Id"] == json!(advanced)).unwrap();
    assert_eq!(o["StageName"], "Prospecting", "never past a stage a person set");
    let outcomes = w.ctx.store.run_outcomes(second.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    assert!(outcomes.iter().any(|x| x.salesforce_id.as_deref() == Some(advanced.as_str())
        && x.message.as_deref().unwrap_or("").contains("a person moved the stage")));
    assert_eq!(second.written, 0, "nothing else changed: {second:?}");
    let third = run(false).await;
    assert_eq!(third.written, 0);

    // A new process with nothing to write: the trial Opportunities are read (one query) and
    // the budget is never needed, so no /limits read either.
    let fresh = Context {
        salesforce: engine::connect::salesforce_client(&w.ctx.config, &super::support::env).unwrap(),
        ..w.ctx.clone()
    };
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let fourth = engine::workflow::run(&fresh, "trials", &options).await.unwrap();
    assert_eq!((fourth.written, fourth.failed), (0, 0), "{fourth:?}");
    assert_eq!(fresh.salesforce.requests_sent(), 1, "{:?}", fourth.api_calls);
}

/// The open trial Opportunities come from their mirror: a no-change re-run makes one call
/// however many there are, and a trial a person opened, moved or closed since is followed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trial_opportunities_are_followed_from_state_a_rerun_reads_only_what_changed() {
    let emulators = Emulators::start(3, 300, 30).await;
    let guides = emulators.pendo_list("guide").await;
    let tour = guides.iter().find(|g| g["name"] == "Welcome Tour").unwrap()["id"].as_str().unwrap().to_owned();
    let w = emulators.world(&TRIAL.replace("{guide}", &tour)).await;
    // Salesforce's clock stands still half a second into a second, so the 2,500 open trials on
    // no Account (more than a query page) and every write the first run makes share one stamp:
    // a change query must start past that stamp's second, not at it.
    let clock = format!("{}/__emulator/clock", w.sf.base_url);
    let now = Utc::now() + chrono::Duration::hours(1);
    let still = chrono::DateTime::from_timestamp(now.timestamp(), 500_000_000).unwrap();
    let set = |change: Value| {
        let (http, clock) = (w.http.clone(), clock.clone());
        async move { assert!(http.put(clock).json(&change).send().await.unwrap().status().is_success()) }
    };
    set(json!({ "now": still })).await;
    let many: Vec<Value> = (0..2_500)
        .map(|i| json!({"Name": format!("Trial {i}"), "StageName": "Prospecting", "CloseDate": "2027-03-01", "Type": "Trial"}))
        .collect();
    w.sf_admin(reqwest::Method::POST, "records/Opportunity", json!(many)).await;
    let first = w.run("trials").await;
    assert!(first.written > 0 && first.failed == 0, "{first:?}");
    let (second, calls) = w.run_fresh("trials").await;
    let second = second.unwrap();
    assert_eq!((second.written, second.failed), (0, 0), "{second:?}");
    assert_eq!(calls, 1, "one change query, not the trials' pages: {:?}", second.api_calls);

    // A few seconds on, a person closes a trial that was written, and opens one on a matched
    // account.
    set(json!({ "advanceSeconds": 5 })).await;
    let written: Vec<Value> =
        w.live_records("Opportunity").await.into_iter().filter(|o| !o["Trial_Active_Users__c"].is_null()).collect();
    let closed = salesforce::SalesforceId::parse(written[0]["Id"].as_str().unwrap()).unwrap();
    w.ctx.salesforce.update("Opportunity", &closed, &json!({ "StageName": "Closed Lost" })).await.unwrap();
    let account = written[1]["AccountId"].clone();
    let opened = w
        .ctx
        .salesforce
        .create(
            "Opportunity",
            &json!({"Name": "Second trial", "StageName": "Prospecting", "CloseDate": "2027-02-01", "Type": "Trial", "AccountId": account}),
        )
        .await
        .unwrap();
    let third = w.run("trials").await;
    assert_eq!((third.written, third.failed), (1, 0), "only the new trial is written: {third:?}");
    assert_eq!(third.matched, first.matched, "one trial closed, one opened: {third:?}");
    let o = w.live_records("Opportunity").await.into_iter().find(|o| o["Id"] == json!(opened.id.as_str())).unwrap();
    assert!(!o["Trial_Active_Users__c"].is_null(), "{o}");
    let (fourth, calls) = w.run_fresh("trials").await;
    assert_eq!(fourth.unwrap().written, 0);
    assert_eq!(calls, 1);
}

/// Where the org does not keep the key field unique, Salesforce cannot refuse a key that
/// exists, so every key the store has not committed is looked up before anything is made: a
/// lost store adopts what is there, and a Task a person completed stays completed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_field_the_org_does_not_keep_unique_is_looked_up_before_creating() {
    let w = world_with(200, false, "Alert_Key__c").await;
    let field = json!({"name": "Alert_Key__c", "type": "string", "externalId": true, "unique": false, "length": 255});
    let url = format!("{}/__emulator/fields/Task", w.sf.base_url);
    w.http.post(url).json(&field).send().await.unwrap().error_for_status().unwrap();

    let first = w.run("churn-alerts").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(first.written > 0);
    assert_eq!(first.api_calls["create"], 2 * (first.written as u64).div_ceil(200), "{:?}", first.api_calls);
    let made: Vec<Value> = w.records("Task").await.into_iter().filter(|t| t["Alert_Key__c"].is_string()).collect();
    assert_eq!(made.len(), first.written);
    let done = salesforce::SalesforceId::parse(made[0]["Id"].as_str().unwrap()).unwrap();
    w.ctx.salesforce.update("Task", &done, &json!({"Status": "Completed"})).await.unwrap();

    // The store is lost: the next run starts from an empty one.
    let dir = tempfile::tempdir().unwrap();
    let fresh = Context {
        store: engine::store::open(&format!("sqlite://{}", dir.path().join("new.db").display())).await.unwrap(),
        ..w.ctx.clone()
    };
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let again = engine::workflow::run(&fresh, "churn-alerts", &options).await.unwrap();
    // Adopted, not written: the run made nothing and says so.
    assert_eq!((again.written, again.failed), (0, 0), "every alert adopted: {:?}", again.failures);
    let outcomes = fresh.store.run_outcomes(again.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    let adopted = outcomes.iter().filter(|o| o.message.as_deref().is_some_and(|m| m.contains("adopted unchanged")));
    assert_eq!(adopted.count(), first.written, "{outcomes:?}");
    let tasks: Vec<Value> = w.records("Task").await.into_iter().filter(|t| t["Alert_Key__c"].is_string()).collect();
    assert_eq!(tasks.len(), made.len(), "nothing made twice");
    let kept = tasks.iter().find(|t| t["Id"] == made[0]["Id"]).unwrap();
    assert_eq!(kept["Status"], "Completed", "a person's edit stays: {kept}");
}

/// The records a run makes are read back: every field usagesync set on create reads as sent
/// (dates, lookups, the key), except what an admin's field update changed in the same save,
/// which is reported as drift and kept in history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn created_records_are_read_back_and_a_rules_change_is_reported_as_drift() {
    let w = world(200, false).await;
    let rule = json!({"name": "NoHighFromIntegrations", "when": {"field": "Priority", "operator": "equals", "value": "High"},
                      "field": "Priority", "value": "Normal"});
    let url = format!("{}/__emulator/field-updates/Task", w.sf.base_url);
    w.http.post(url).json(&rule).send().await.unwrap().error_for_status().unwrap();

    let first = w.run("churn-alerts").await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(first.written > 0 && first.written <= 200, "{first:?}");
    assert_eq!(first.state, "succeeded", "drift does not fail the run");
    assert_eq!(first.api_calls["verify"], 1, "one query for up to 200 Tasks: {:?}", first.api_calls);
    let v = &first.verify;
    assert_eq!((v.checked, v.sampled_from), (first.written, first.written), "{v:?}");
    assert_eq!(v.values_changed, first.written, "only Priority changed, on every Task: {:?}", v.drift);
    for d in &v.drift {
        assert_eq!((d.object.as_str(), d.field.as_str()), ("Task", "Priority"));
        assert_eq!((&d.sent, &d.now), (&json!("High"), &json!("Normal")));
        assert_eq!(d.last_modified_by.as_deref(), Some(emulator::salesforce::store::INTEGRATION_USER_ID));
    }
    let drifted = OutcomeFilter { action: Some(Action::Drifted), limit: 1000, ..Default::default() };
    let rows = w.ctx.store.run_outcomes(first.run_id.unwrap(), &drifted).await.unwrap();
    assert_eq!(rows.len(), first.written);

    // A re-run makes nothing and so reads nothing back.
    let second = w.run("churn-alerts").await;
    assert_eq!((second.written, second.verify.checked), (0, 0));
    assert_eq!(second.api_calls.get("verify"), None);
}

/// `w`'s context with its config edited by a person (the store and clients stay the same).
fn edited(w: &World, from: &str, to: &str) -> Context {
    let rest = CONFIG.replace("{case}", "false").replace("{key_field}", "Usagesync_Key__c");
    let text = support::config_text(&rest, &w.sf.base_url, &w.pendo.base_url, "sqlite://unused.db").replace(from, to);
    let config = engine::config::load_str(&text, "test.yaml").unwrap();
    Context { config: Arc::new(config), ..w.ctx.clone() }
}

async fn failures(w: &World, status: FailureStatus) -> Vec<engine::store::Failure> {
    let filter = FailureFilter { workflow: Some("churn-alerts".into()), status: Some(status), ..Default::default() };
    w.ctx.store.list_failures(&filter).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_alert_is_kept_and_replay_makes_it_from_the_current_config() {
    let w = world(200, false).await;
    // Salesforce refuses every alert Task: a validation rule a person will remove.
    let rule = json!({"name": "No_High", "errorMessage": "High priority is reserved", "errorField": "Priority",
                      "condition": {"field": "Priority", "operator": "equals", "value": "High"}});
    let url = format!("{}/__emulator/validation-rules/Task", w.sf.base_url);
    assert!(w.http.post(&url).json(&rule).send().await.unwrap().status().is_success());

    let due = |days: i64| (Utc::now() + chrono::Duration::days(days)).date_naive().to_string();
    // The run's own clock decides the date: either side of it, should the run straddle midnight.
    let before = due(3);
    let first = w.run("churn-alerts").await;
    let due_3 = [before, due(3)];
    assert!(first.failed > 2 && first.written == 0, "{first:?}");
    assert!(w.keys("Task").await.is_empty());
    let open = failures(&w, FailureStatus::Open).await;
    assert_eq!(open.len(), first.failed, "one failure per refused record: {open:?}");
    for f in &open {
        assert_eq!((f.object.as_str(), f.error_code.as_str()), ("Task", "FIELD_CUSTOM_VALIDATION_EXCEPTION"));
        assert!(f.message.starts_with("High priority is reserved"), "{f:?}");
        assert!(f.salesforce_id.as_deref().is_some_and(|id| id.starts_with("001")), "the Account: {f:?}");
        assert!(due_3.iter().any(|d| f.payload["ActivityDate"] == json!(d)), "what was sent: {f:?}");
        assert!(f.fields.iter().any(|x| x == "Priority"));
    }

    // The cause still there: the next run updates the same failures rather than adding rows.
    let again = w.run("churn-alerts").await;
    assert_eq!(again.failed, first.failed);
    let still = failures(&w, FailureStatus::Open).await;
    assert_eq!(still.iter().map(|f| f.id).collect::<Vec<_>>(), open.iter().map(|f| f.id).collect::<Vec<_>>());
    assert!(still.iter().all(|f| f.attempts == 2), "{still:?}");

    // A person dismisses one: it is not replayed and no longer counts as open.
    let gone = open[0].id;
    let dismissed = w
        .ctx
        .store
        .dismiss_failures(&FailureSelector::Ids(vec![gone]), "account in legal hold", Utc::now())
        .await
        .unwrap();
    assert_eq!(dismissed, vec![gone]);
    let groups = w.ctx.store.failure_groups(Some("churn-alerts")).await.unwrap();
    assert_eq!(groups.iter().map(|(_, _, n)| n).sum::<u64>(), (open.len() - 1) as u64);
    let none = engine::workflow::replay::replay(&w.ctx, &FailureSelector::Ids(vec![gone]), 1000).await.unwrap();
    assert_eq!((none.claimed, none.runs.len()), (0, 0), "{none:?}");

    // The cause fixed, and the config changed since: alerts are due in 30 days now. Replay
    // derives what it sends from that config, not from the body kept with the failure.
    assert!(w.http.delete(&url).send().await.unwrap().status().is_success());
    let ctx = edited(&w, "key_field: Usagesync_Key__c", "key_field: Usagesync_Key__c\n      due_in_days: 30");
    let before = due(30);
    let replay = engine::workflow::replay::replay(&ctx, &FailureSelector::All { workflow: None }, 1000).await.unwrap();
    let due_30 = [before, due(30)];
    assert_eq!(
        (replay.claimed, replay.resolved, replay.failed_again),
        (open.len() - 1, open.len() - 1, 0),
        "{replay:?}"
    );
    let tasks = w.records("Task").await;
    assert_eq!(tasks.len(), open.len(), "the whole workflow ran, the dismissed account's alert with it");
    assert!(
        tasks.iter().all(|t| due_30.iter().any(|d| t["ActivityDate"] == json!(d))),
        "sent with the new config: {tasks:?}"
    );
    assert!(failures(&w, FailureStatus::Open).await.is_empty());
    let resolved = failures(&w, FailureStatus::Resolved).await;
    assert_eq!(resolved.len(), open.len() - 1);
    let kept = failures(&w, FailureStatus::Dismissed).await;
    assert_eq!((kept.len(), kept[0].reason.as_deref()), (1, Some("account in legal hold")));

    // The replay is a run of its own in history, and the next run has nothing left to make.
    let runs = w.ctx.store.list_runs(Some("churn-alerts"), 0).await.unwrap();
    let replayed = runs.iter().find(|r| r.trigger == "replay").expect("a replay run");
    assert_eq!(Some(replayed.id.to_string()), replay.runs.get("churn-alerts").cloned());
    let next = w.run("churn-alerts").await;
    assert_eq!((next.written, next.failed), (0, 0), "{next:?}");
    assert_eq!(w.records("Task").await.len(), tasks.len());
}

/// Time is an input: a run on a clock set to another day starts, windows and budgets on that
/// day, whatever the wall clock says.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_takes_its_time_from_the_context_clock() {
    let w = world(50, false).await;
    let day = chrono::DateTime::parse_from_rfc3339("2031-03-05T07:00:00Z").unwrap().with_timezone(&Utc);
    let ctx = Context { clock: engine::clock::Clock::starting_at(day), ..w.ctx.clone() };
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let report = engine::workflow::run(&ctx, "churn-alerts", &options).await.unwrap();
    let run = w.ctx.store.get_run(report.run_id.unwrap()).await.unwrap().unwrap();
    assert!(run.started_at >= day && run.started_at - day < chrono::Duration::minutes(1), "{}", run.started_at);
    let ledger = w.ctx.store.budget_day(day.date_naive()).await.unwrap();
    assert!(ledger.spent > 0, "the calls are on 2031-03-05's ledger: {ledger:?}");
    assert_eq!(w.ctx.store.budget_day(Utc::now().date_naive()).await.unwrap().spent, 0, "and not on today's");
}

/// A `when:` condition in CEL instead of the score rules: every matched account it holds for
/// gets one Task titled by the configured subject; a re-run makes nothing; once it no longer
/// holds the episodes close, and when it holds again each account alerts anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_written_as_a_condition_alerts_once_per_episode_through_the_create_stage() {
    let w = world(60, false).await;
    let rules = "      drop_share: 0.5\n      hysteresis: 10\n";
    let holds = edited(&w, rules, "      when: \"events >= 0.0\"\n      subject: \"Signal: {account} at {score}\"\n");
    let never = edited(&w, rules, "      when: \"events < 0.0\"\n");
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let run = |ctx: &Context| {
        let ctx = ctx.clone();
        let options = options.clone();
        async move { engine::workflow::run(&ctx, "churn-alerts", &options).await.unwrap() }
    };

    let first = run(&holds).await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(first.matched > 0);
    assert_eq!(first.written, first.matched, "the condition holds for every matched account: {first:?}");
    let tasks = w.records("Task").await;
    assert_eq!(tasks.len(), first.matched);
    for t in &tasks {
        let subject = t["Subject"].as_str().unwrap();
        assert!(subject.starts_with("Signal: ") && subject.contains(" at "), "{subject}");
        assert!(t["Description"].as_str().unwrap().contains("signal `events >= 0.0` holds"), "{t}");
    }
    assert_eq!(run(&holds).await.written, 0, "one alert per episode");
    assert_eq!(w.records("Task").await.len(), tasks.len());

    let closed = run(&never).await;
    assert_eq!(closed.written, 0);
    let outcomes = w.ctx.store.run_outcomes(closed.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    let recovered = outcomes.iter().filter(|o| o.message.as_deref().unwrap_or("").starts_with("recovered")).count();
    assert_eq!(recovered, tasks.len(), "every episode closed once the condition no longer held");

    let again = run(&holds).await;
    assert_eq!(again.written, tasks.len(), "each account alerts anew in a second episode");
    let keys = w.keys("Task").await;
    assert_eq!(keys.len(), 2 * tasks.len());
    assert!(keys.values().all(|n| *n == 1), "no key twice");
}

/// The alert block of the test config, for the action tests to replace.
const ALERT: &str = "      drop_share: 0.5\n      hysteresis: 10\n      owner_field: CSM__c\n";

/// An alert that opens a renewal-risk Opportunity (the Task pointing at it) for a user named by
/// username, its text filled from the figures and the core features' names: one Opportunity per
/// episode, none on a re-run, the episode closes with the condition, and a second episode makes
/// a second Opportunity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_opens_one_opportunity_per_episode_for_a_user_named_by_username() {
    let w = world(60, false).await;
    let users = w.records("User").await;
    let csm = users.iter().find(|u| u["Username"].as_str().is_some_and(|n| n.ends_with(".sfdc"))).unwrap();
    let (username, user_id) = (csm["Username"].as_str().unwrap(), csm["Id"].as_str().unwrap());
    let holds = edited(
        &w,
        ALERT,
        &format!(
            "      when: \"events >= 0.0\"\n      subject: \"Renewal risk: {{account}}\"\n      \
             description: \"{{account}}: {{metric}} {{from}} -> {{to}}. Core features: {{core_features}}.\"\n      \
             opportunity: {{ stage: Qualification, close_date: \"+45d\", type: \"Existing Customer - Downgrade\", amount: 0 }}\n      \
             owner: {{ username: \"{username}\" }}\n"
        ),
    );
    let never = edited(&w, ALERT, "      when: \"events < 0.0\"\n      opportunity: {}\n");
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let run = |ctx: &Context| {
        let ctx = ctx.clone();
        let options = options.clone();
        async move { engine::workflow::run(&ctx, "churn-alerts", &options).await.unwrap() }
    };

    let first = run(&holds).await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(first.matched > 0);
    let opps: Vec<Value> =
        w.records("Opportunity").await.into_iter().filter(|o| o["Usagesync_Key__c"].is_string()).collect();
    assert_eq!(opps.len(), first.matched, "one Opportunity per account: {first:?}");
    let accounts: HashMap<String, String> = w
        .records("Account")
        .await
        .iter()
        .map(|a| (a["Id"].as_str().unwrap().to_owned(), a["Name"].as_str().unwrap().to_owned()))
        .collect();
    let close = |d: i64| (Utc::now() + chrono::Duration::days(d)).date_naive().to_string();
    let features = w.ctx.pendo.features(&[]).await.unwrap();
    for o in &opps {
        let name = &accounts[o["AccountId"].as_str().unwrap()];
        assert_eq!(o["Name"], json!(format!("Renewal risk: {name}")), "the Account's name, not the Pendo id");
        assert_eq!((o["StageName"].as_str(), o["OwnerId"].as_str()), (Some("Qualification"), Some(user_id)));
        assert!([close(45), close(44)].contains(&o["CloseDate"].as_str().unwrap().to_owned()), "{o}");
        assert!(o["Usagesync_Key__c"].as_str().unwrap().contains("drop-opportunity"), "{o}");
        let text = o["Description"].as_str().unwrap();
        assert!(text.starts_with(&format!("{name}: events ")) && text.contains(" -> "), "{text}");
        assert!(features.iter().any(|f| !f.name.is_empty() && text.contains(&f.name)), "feature names: {text}");
        assert!(!features.iter().any(|f| text.contains(&f.id)), "no feature ids: {text}");
    }
    let tasks = w.records("Task").await;
    assert_eq!(tasks.len(), opps.len());
    let opp_ids: Vec<&str> = opps.iter().map(|o| o["Id"].as_str().unwrap()).collect();
    assert!(
        tasks.iter().all(|t| opp_ids.contains(&t["WhatId"].as_str().unwrap())),
        "each Task points at its Opportunity"
    );
    assert!(tasks.iter().all(|t| t["OwnerId"] == json!(user_id)));

    let again = run(&holds).await;
    assert_eq!((again.written, again.failed), (0, 0), "one Opportunity per episode: {again:?}");
    assert_eq!(again.api_calls.get("create"), None, "{:?}", again.api_calls);
    let cached = w.ctx.store.written_values("churn-alerts:owners", &[username.to_ascii_lowercase()]).await.unwrap();
    assert_eq!(cached.len(), 1, "the username was looked up once and kept");

    let closed = run(&never).await;
    assert_eq!(closed.written, 0);
    let outcomes = w.ctx.store.run_outcomes(closed.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    let recovered = outcomes.iter().filter(|o| o.message.as_deref().unwrap_or("").starts_with("recovered")).count();
    assert_eq!(recovered, opps.len(), "every episode closed");

    let second = run(&holds).await;
    assert_eq!(second.failed, 0, "{:?}", second.failures);
    let keys = w.keys("Opportunity").await;
    assert_eq!(keys.len(), 2 * opps.len(), "a second Opportunity per account in the second episode");
    assert!(keys.values().all(|n| *n == 1), "no key twice");
}

/// Field updates as the action: the Account's risk fields are set when the episode opens (and
/// nothing else is made), a re-run writes nothing, a person's edit during the episode stays,
/// and the fields are reset once the condition no longer holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_sets_account_fields_while_the_episode_is_open_and_resets_them_after() {
    let w = world(60, false).await;
    let url = format!("{}/__emulator/fields/Account", w.sf.base_url);
    let fields =
        json!([{"name": "At_Risk__c", "type": "boolean"}, {"name": "Risk_Reason__c", "type": "string", "length": 255}]);
    w.http.post(url).json(&fields).send().await.unwrap().error_for_status().unwrap();
    let set = "      task: false\n      set_fields: { At_Risk__c: true, Risk_Reason__c: \"{subject}\" }\n      \
               reset_fields: { At_Risk__c: false, Risk_Reason__c: null }\n";
    let holds = edited(
        &w,
        ALERT,
        &format!("      when: \"events >= 0.0\"\n      subject: \"Risk: {{metric}} at {{to}}\"\n{set}"),
    );
    let never = edited(&w, ALERT, &format!("      when: \"events < 0.0\"\n{set}"));
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let run = |ctx: &Context| {
        let ctx = ctx.clone();
        let options = options.clone();
        async move { engine::workflow::run(&ctx, "churn-alerts", &options).await.unwrap() }
    };
    let at_risk = || async {
        let all = w.records("Account").await;
        all.into_iter().filter(|a| a["At_Risk__c"] == json!(true)).collect::<Vec<_>>()
    };

    let first = run(&holds).await;
    assert_eq!(first.failed, 0, "{:?}", first.failures);
    assert!(first.matched > 0);
    assert_eq!(first.written, first.matched, "one Account update per matched account: {first:?}");
    assert!(w.records("Task").await.is_empty(), "fields only: no Task");
    let marked = at_risk().await;
    assert_eq!(marked.len(), first.matched);
    assert!(marked.iter().all(|a| a["Risk_Reason__c"].as_str().unwrap().starts_with("Risk: events at ")), "{marked:?}");

    // A person clears one Account's flag: the open episode does not put it back.
    let edited_id = salesforce::SalesforceId::parse(marked[0]["Id"].as_str().unwrap()).unwrap();
    w.ctx.salesforce.update("Account", &edited_id, &json!({"At_Risk__c": false})).await.unwrap();
    let again = run(&holds).await;
    assert_eq!((again.written, again.failed), (0, 0), "a re-run writes nothing: {again:?}");
    assert_eq!(again.api_calls.get("deliver"), None, "{:?}", again.api_calls);
    assert_eq!(at_risk().await.len(), first.matched - 1, "the person's edit stays");

    let closed = run(&never).await;
    assert_eq!(closed.failed, 0, "{:?}", closed.failures);
    assert_eq!(closed.written, first.matched, "every Account reset: {closed:?}");
    assert!(at_risk().await.is_empty());
    let all = w.records("Account").await;
    assert!(all.iter().all(|a| a["Risk_Reason__c"].is_null()), "reasons cleared");
    assert_eq!(run(&never).await.written, 0, "a reset is written once");
}

impl World {
    /// Creates Pendo account metadata fields in the `custom` group: (name, type).
    async fn pendo_fields(&self, fields: &[(&str, &str)]) {
        let specs: Vec<pendo::metadata::FieldSpec> = fields
            .iter()
            .map(|(name, t)| pendo::metadata::FieldSpec {
                name: (*name).into(),
                displayname: (*name).into(),
                field_type: (*t).into(),
            })
            .collect();
        self.ctx.pendo.create_fields(pendo::Kind::Account, "custom", &specs).await.unwrap();
    }

    /// Each Pendo account's `custom` metadata, by account id.
    async fn pendo_custom(&self) -> HashMap<String, Value> {
        let url = format!("{}/__emulator/accounts", self.pendo.base_url);
        let v: Value = self.http.get(url).send().await.unwrap().json().await.unwrap();
        let list = v.as_array().cloned().or_else(|| v["accounts"].as_array().cloned()).unwrap();
        list.into_iter()
            .map(|a| {
                let id = a["accountId"].as_str().or_else(|| a["id"].as_str()).unwrap().to_owned();
                (id, a["metadata"]["custom"].clone())
            })
            .collect()
    }
}

/// A Pendo metadata write as the action: the Pendo account's custom fields hold the alert's
/// values while the episode is open (beside the Account's fields), a re-run writes nothing to
/// either side, and once the condition no longer holds both are reset, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_writes_pendo_metadata_while_the_episode_is_open_and_resets_it_after() {
    let w = world(60, false).await;
    let url = format!("{}/__emulator/fields/Account", w.sf.base_url);
    let fields = json!([{"name": "At_Risk__c", "type": "boolean"}]);
    w.http.post(url).json(&fields).send().await.unwrap().error_for_status().unwrap();
    w.pendo_fields(&[("risk_flag", "string"), ("risk_since", "string")]).await;
    let set = "      task: false\n      set_fields: { At_Risk__c: true }\n      reset_fields: { At_Risk__c: false }\n      \
               set_pendo_fields: { risk_flag: \"at risk: {metric} at {to}\", risk_since: \"{opened_at}\" }\n      \
               reset_pendo_fields: { risk_flag: null, risk_since: null }\n";
    let holds = edited(&w, ALERT, &format!("      when: \"events >= 0.0\"\n{set}"));
    let never = edited(&w, ALERT, &format!("      when: \"events < 0.0\"\n{set}"));
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let run = |ctx: &Context| {
        let ctx = ctx.clone();
        let options = options.clone();
        async move { engine::workflow::run(&ctx, "churn-alerts", &options).await.unwrap() }
    };
    let flagged = || async {
        let all = w.pendo_custom().await;
        all.into_iter().filter(|(_, md)| md["risk_flag"].is_string()).collect::<HashMap<_, _>>()
    };

    let started = Utc::now() - chrono::Duration::seconds(1);
    let first = run(&holds).await;
    assert_eq!((first.failed, first.state.as_str()), (0, "succeeded"), "{:?} {:?}", first.failures, first.preflight);
    assert!(first.matched > 0);
    assert_eq!(first.written, 2 * first.matched, "an Account update and a Pendo write per account: {first:?}");
    assert_eq!(first.fields_changed.get("Pendo account"), Some(&first.matched), "{:?}", first.fields_changed);
    let marked = flagged().await;
    assert_eq!(marked.len(), first.matched);
    for md in marked.values() {
        assert!(md["risk_flag"].as_str().unwrap().starts_with("at risk: events at "), "{md}");
        let since = chrono::DateTime::parse_from_rfc3339(md["risk_since"].as_str().unwrap()).unwrap();
        assert!(since >= started && since <= Utc::now(), "the episode's opening: {md}");
    }
    let ids: Vec<String> = marked.keys().cloned().collect();
    let episodes = w.episodes(&ids).await;
    assert!(episodes.values().all(|e| e.open && e.pendo_fields.len() == 2), "{episodes:?}");

    let again = run(&holds).await;
    assert_eq!((again.written, again.failed), (0, 0), "a re-run writes nothing to either side: {again:?}");
    assert!(again.fields_changed.is_empty(), "{:?}", again.fields_changed);
    assert_eq!(again.api_calls.get("deliver"), None, "{:?}", again.api_calls);

    let closed = run(&never).await;
    assert_eq!(closed.failed, 0, "{:?}", closed.failures);
    assert_eq!(closed.written, 2 * first.matched, "both sides reset: {closed:?}");
    assert!(flagged().await.is_empty());
    let all = w.pendo_custom().await;
    assert!(ids.iter().all(|id| all[id]["risk_since"].is_null()), "cleared");
    let after = run(&never).await;
    assert_eq!((after.written, after.failed), (0, 0), "a reset is written once: {after:?}");
}

/// A Pendo refusal is a failure, not a silent drop: every account's refused write is counted,
/// the run is partial and the failure kept per Pendo account; once a person fixes the field's
/// type, replay sends the episode's values and settles the failures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_pendo_write_is_kept_and_replay_sends_it_once_the_field_is_fixed() {
    let w = world(60, false).await;
    // An integer field refuses the fractional level.
    w.pendo_fields(&[("risk_level", "integer")]).await;
    let holds = edited(
        &w,
        ALERT,
        "      when: \"events >= 0.0\"\n      task: false\n      set_pendo_fields: { risk_level: 0.5 }\n",
    );
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let first = engine::workflow::run(&holds, "churn-alerts", &options).await.unwrap();
    assert!(first.matched > 0);
    assert_eq!((first.failed, first.written, first.state.as_str()), (first.matched, 0, "partial"), "{first:?}");
    assert_eq!(first.failures[0].code, "PENDO_REFUSED", "{:?}", first.failures);
    let open = failures(&w, FailureStatus::Open).await;
    assert_eq!(open.len(), first.matched);
    assert!(open.iter().all(|f| f.object == "Pendo account" && f.payload == json!({"risk_level": 0.5})), "{open:?}");

    let url = format!("{}/api/v1/metadata/schema/account/custom/risk_level", w.pendo.base_url);
    let r = w.http.delete(url).header("x-pendo-integration-key", "emulator-integration-key").send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
    w.pendo_fields(&[("risk_level", "float")]).await;
    let replay =
        engine::workflow::replay::replay(&holds, &FailureSelector::All { workflow: None }, 1000).await.unwrap();
    assert_eq!((replay.claimed, replay.resolved, replay.failed_again), (open.len(), open.len(), 0), "{replay:?}");
    let md = w.pendo_custom().await;
    assert_eq!(md.values().filter(|m| m["risk_level"] == json!(0.5)).count(), first.matched);
    let next = engine::workflow::run(&holds, "churn-alerts", &options).await.unwrap();
    assert_eq!((next.written, next.failed), (0, 0), "{next:?}");
}

/// Preflight's Pendo half for alerts: a field Pendo does not have is held back (never sent, so
/// never refused), the run is partial and names the field where the config does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pendo_field_pendo_lacks_is_held_back_and_named_at_its_line() {
    let w = world(30, false).await;
    let holds = edited(
        &w,
        ALERT,
        "      when: \"events >= 0.0\"\n      task: false\n      set_pendo_fields: { risk_flag: \"at risk\" }\n",
    );
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let first = engine::workflow::run(&holds, "churn-alerts", &options).await.unwrap();
    assert!(first.matched > 0);
    assert_eq!((first.failed, first.written, first.state.as_str()), (0, 0, "partial"), "{first:?}");
    let problems = &first.preflight.problems;
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].field.as_deref(), Some("custom.risk_flag"));
    assert_eq!(problems[0].key, "workflows.churn-alerts.alert.set_pendo_fields.risk_flag");
    assert!(problems[0].line.is_some() && problems[0].message.contains("setup pendo"), "{}", problems[0]);
    assert!(w.pendo_custom().await.values().all(|m| m["risk_flag"].is_null()));
}
