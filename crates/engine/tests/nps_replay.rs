//! nps-realtime in the failure ledger, against both emulators on 127.0.0.1: a follow-up Salesforce
//! refuses is kept with its answer, and `replay` after the fix queues that answer again and
//! writes it from the config as it is now; a follow-up whose key field the org lacks is held back
//! by preflight (never sent to fail) while the Contact is written; with usagesync's daily cap
//! spent, answers wait (deferred) rather than being written past it.

// Tests lay out their worlds on the wall clock; only the engine must read time through its Clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::disallowed_methods)]

use std::sync::Arc;

use chrono::Utc;
use emulator::pendo::{GenConfig, PendoConfig, PendoState};
use engine::store::{FailureFilter, FailureSelector, FailureStatus, InboxEvent};
use engine::workflow::{Context, RunOptions};
use serde_json::{Value, json};

const CONFIG: &str = r#"
connections:
  salesforce:
    login_url: "{sf}"
    auth: { flow: client_credentials, client_id: usagesync-emulator, client_secret: { env: SF_SECRET } }
  pendo:
    base_url: "{pendo}"
    integration_key: { env: PENDO_KEY }
store: "sqlite://unused.db"
budget: { daily_share: {share} }
workflows:
  nps:
    template: nps-realtime
    schedule: "*/15 * * * *"
    window_days: 7
    contact:
      match: [visitor_id_field]
      visitor_id_field: Pendo_Visitor_Id__c
      score_field: NPS_Score__c
      comment_field: NPS_Comment__c
      date_field: NPS_Date__c
    follow_up:
      object: Task
      owner: account
      subject: "{subject}"
      priority: High
      due_in_days: 2
      key_field: {key_field}
"#;

fn env(name: &str) -> Option<String> {
    match name {
        "SF_SECRET" => Some("emulator-secret".into()),
        "PENDO_KEY" => Some("emulator-integration-key".into()),
        _ => None,
    }
}

fn context(sf: &str, pendo: &str, subject: &str, store: Arc<dyn engine::store::Store>) -> Context {
    context_with_key(sf, pendo, subject, "Usagesync_Key__c", store)
}

fn context_with_key(sf: &str, pendo: &str, subject: &str, key: &str, store: Arc<dyn engine::store::Store>) -> Context {
    context_with(sf, pendo, subject, key, "1.0", store)
}

fn context_with(
    sf: &str,
    pendo: &str,
    subject: &str,
    key: &str,
    share: &str,
    store: Arc<dyn engine::store::Store>,
) -> Context {
    let text = CONFIG
        .replace("{sf}", sf)
        .replace("{pendo}", pendo)
        .replace("{subject}", subject)
        .replace("{key_field}", key)
        .replace("{share}", share);
    let config = engine::config::load_str(&text, "test.yaml").unwrap();
    Context {
        salesforce: engine::connect::salesforce_client(&config, &env).unwrap(),
        pendo: engine::connect::pendo_client(&config, &env).unwrap(),
        store,
        config: Arc::new(config),
        clock: engine::clock::Clock::system(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_follow_up_is_kept_and_replay_writes_it_from_the_current_config() {
    let gc = GenConfig { seed: 3, accounts: 5, days: 10, ..GenConfig::default() };
    let state = PendoState::generated(PendoConfig::default(), &gc);
    let sf = emulator::salesforce::spawn(emulator::salesforce::Config::default(), false).await.unwrap();
    emulator::seed_matching_org(&sf.state, &state).unwrap();
    let pendo = emulator::pendo::start("127.0.0.1:0", state).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = engine::store::open(&format!("sqlite://{}", dir.path().join("state.db").display())).await.unwrap();
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}/__emulator/{path}", sf.base_url);

    let accounts: Vec<Value> = http.get(admin("records/Account")).send().await.unwrap().json().await.unwrap();
    let account = accounts[0]["Id"].as_str().unwrap();
    let contact = json!([{"LastName": "Detractor", "AccountId": account, "Pendo_Visitor_Id__c": "nps-v1"}]);
    assert!(http.post(admin("records/Contact")).json(&contact).send().await.unwrap().status().is_success());
    let rule = json!({"name": "No_Follow_Ups", "errorMessage": "Tasks are frozen", "errorField": "Subject",
                      "condition": {"field": "Subject", "operator": "contains", "value": "NPS"}});
    assert!(http.post(admin("validation-rules/Task")).json(&rule).send().await.unwrap().status().is_success());

    let ctx = context(&sf.base_url, &pendo.base_url, "NPS detractor: follow up", store.clone());
    let secs = Utc::now().timestamp() - 60;
    let body = json!({"event": "npsSubmitted", "visitorId": "nps-v1", "timestamp": secs, "uniqueId": "a1b2",
                      "properties": {"nps": {"rating": 2, "reason": "too slow"}}});
    let event = InboxEvent {
        unique_id: "a1b2".into(),
        source: "pendo".into(),
        kind: "npsSubmitted".into(),
        received_at: Utc::now(),
        body,
    };
    assert!(store.put_event(&event).await.unwrap());
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let first = engine::workflow::run(&ctx, "nps", &options).await.unwrap();
    assert_eq!(first.failed, 1, "{first:?}");
    let open =
        store.list_failures(&FailureFilter { status: Some(FailureStatus::Open), ..Default::default() }).await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].object.as_str(), open[0].error_code.as_str()), ("Task", "FIELD_CUSTOM_VALIDATION_EXCEPTION"));
    assert_eq!(open[0].payload["sent"]["Subject"], "NPS detractor: follow up (2/10)");
    assert!(open[0].fields.iter().any(|f| f == "Subject"), "{open:?}");

    // Fixed, and the follow-up's subject reworded since: the replay sends the new one.
    assert!(http.delete(admin("validation-rules/Task")).send().await.unwrap().status().is_success());
    let ctx = context(&sf.base_url, &pendo.base_url, "NPS detractor: call them today", store.clone());
    let replay = engine::workflow::replay::replay(&ctx, &FailureSelector::All { workflow: None }, 10).await.unwrap();
    assert_eq!((replay.claimed, replay.resolved, replay.failed_again), (1, 1, 0), "{replay:?}");
    let tasks: Vec<Value> = http.get(admin("records/Task")).send().await.unwrap().json().await.unwrap();
    let follow_ups: Vec<&Value> = tasks.iter().filter(|t| t["Usagesync_Key__c"].is_string()).collect();
    assert_eq!(follow_ups.len(), 1, "{follow_ups:?}");
    assert_eq!(follow_ups[0]["Subject"], "NPS detractor: call them today (2/10)");
    let resolved = store
        .list_failures(&FailureFilter { status: Some(FailureStatus::Resolved), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(resolved.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follow_up_whose_key_field_the_org_lacks_is_held_back_and_the_contact_still_written() {
    let gc = GenConfig { seed: 4, accounts: 5, days: 10, ..GenConfig::default() };
    let state = PendoState::generated(PendoConfig::default(), &gc);
    let sf = emulator::salesforce::spawn(emulator::salesforce::Config::default(), false).await.unwrap();
    emulator::seed_matching_org(&sf.state, &state).unwrap();
    let pendo = emulator::pendo::start("127.0.0.1:0", state).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = engine::store::open(&format!("sqlite://{}", dir.path().join("state.db").display())).await.unwrap();
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}/__emulator/{path}", sf.base_url);
    let accounts: Vec<Value> = http.get(admin("records/Account")).send().await.unwrap().json().await.unwrap();
    let account = accounts[0]["Id"].as_str().unwrap();
    let contact = json!([{"LastName": "Detractor", "AccountId": account, "Pendo_Visitor_Id__c": "nps-v9"}]);
    assert!(http.post(admin("records/Contact")).json(&contact).send().await.unwrap().status().is_success());

    let ctx = context_with_key(&sf.base_url, &pendo.base_url, "NPS detractor", "Usagesync_Kee__c", store.clone());
    let secs = Utc::now().timestamp() - 60;
    let body = json!({"event": "npsSubmitted", "visitorId": "nps-v9", "timestamp": secs, "uniqueId": "c3d4",
                      "properties": {"nps": {"rating": 1, "reason": "broken"}}});
    let event = InboxEvent {
        unique_id: "c3d4".into(),
        source: "pendo".into(),
        kind: "npsSubmitted".into(),
        received_at: Utc::now(),
        body,
    };
    assert!(store.put_event(&event).await.unwrap());
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let report = engine::workflow::run(&ctx, "nps", &options).await.unwrap();
    assert_eq!((report.changed, report.failed), (1, 1), "{report:?}");
    let contacts: Vec<Value> = http.get(admin("records/Contact")).send().await.unwrap().json().await.unwrap();
    let written = contacts.iter().find(|c| c["Pendo_Visitor_Id__c"] == "nps-v9").unwrap();
    assert_eq!(written["NPS_Score__c"], 1.0, "{written}");
    let open =
        store.list_failures(&FailureFilter { status: Some(FailureStatus::Open), ..Default::default() }).await.unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!((open[0].object.as_str(), open[0].error_code.as_str()), ("Task", "QUARANTINED"));
    assert!(open[0].message.contains("Usagesync_Kee__c"), "{open:?}");
    let tasks: Vec<Value> = http.get(admin("records/Task")).send().await.unwrap().json().await.unwrap();
    assert!(tasks.iter().all(|t| t["Subject"].as_str().is_none_or(|s| !s.starts_with("NPS detractor"))), "{tasks:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_wait_while_the_daily_cap_is_spent_and_go_once_it_allows() {
    let gc = GenConfig { seed: 5, accounts: 5, days: 10, ..GenConfig::default() };
    let state = PendoState::generated(PendoConfig::default(), &gc);
    let sf = emulator::salesforce::spawn(emulator::salesforce::Config::default(), false).await.unwrap();
    emulator::seed_matching_org(&sf.state, &state).unwrap();
    let pendo = emulator::pendo::start("127.0.0.1:0", state).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = engine::store::open(&format!("sqlite://{}", dir.path().join("state.db").display())).await.unwrap();
    let http = reqwest::Client::new();
    let admin = |path: &str| format!("{}/__emulator/{path}", sf.base_url);
    let accounts: Vec<Value> = http.get(admin("records/Account")).send().await.unwrap().json().await.unwrap();
    let account = accounts[0]["Id"].as_str().unwrap();
    let contact = json!([{"LastName": "Promoter", "AccountId": account, "Pendo_Visitor_Id__c": "nps-v7"}]);
    assert!(http.post(admin("records/Contact")).json(&contact).send().await.unwrap().status().is_success());
    let secs = Utc::now().timestamp() - 60;
    let body = json!({"event": "npsSubmitted", "visitorId": "nps-v7", "timestamp": secs, "uniqueId": "e5f6",
                      "properties": {"nps": {"rating": 10, "reason": ""}}});
    let event = InboxEvent {
        unique_id: "e5f6".into(),
        source: "pendo".into(),
        kind: "npsSubmitted".into(),
        received_at: Utc::now(),
        body,
    };
    assert!(store.put_event(&event).await.unwrap());
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let score = || async {
        let contacts: Vec<Value> = http.get(admin("records/Contact")).send().await.unwrap().json().await.unwrap();
        contacts.iter().find(|c| c["Pendo_Visitor_Id__c"] == "nps-v7").unwrap()["NPS_Score__c"].clone()
    };

    // A share of the allocation smaller than one batch's reservation.
    let tight = context_with(&sf.base_url, &pendo.base_url, "NPS", "Usagesync_Key__c", "0.00005", store.clone());
    let err = engine::workflow::run(&tight, "nps", &options).await.unwrap_err();
    assert!(err.is_deferral(), "{err}");
    assert_eq!(score().await, Value::Null, "nothing written past the cap");
    assert_eq!(store.inbox_counts().await.unwrap().pending, 1, "the answer waits");

    let roomy = context(&sf.base_url, &pendo.base_url, "NPS", store.clone());
    let report = engine::workflow::run(&roomy, "nps", &options).await.unwrap();
    assert_eq!(report.changed, 1, "{report:?}");
    assert_eq!(score().await, 10.0);
    assert_eq!(store.inbox_counts().await.unwrap().pending, 0);
}
