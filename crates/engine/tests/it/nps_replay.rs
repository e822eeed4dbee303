//! nps-realtime in the failure ledger, against both emulators on 127.0.0.1: a follow-up Salesforce
//! refuses is kept with its answer, and `replay` after the fix queues that answer again and
//! writes it from the config as it is now; a follow-up whose key field the org lacks is held back
//! by preflight (never sent to fail) while the Contact is written; with usagesync's daily cap
//! spent, answers wait (deferred) rather than being written past it.

use std::sync::Arc;

use chrono::Utc;
use engine::store::{FailureFilter, FailureSelector, FailureStatus, InboxEvent};
use engine::workflow::{Context, RunOptions};
use serde_json::{Value, json};

use crate::support::{self, Emulators};

const CONFIG: &str = r#"
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

fn context(emu: &Emulators, subject: &str, store: Arc<dyn engine::store::Store>) -> Context {
    context_with_key(emu, subject, "Usagesync_Key__c", store)
}

fn context_with_key(emu: &Emulators, subject: &str, key: &str, store: Arc<dyn engine::store::Store>) -> Context {
    context_with(emu, subject, key, "1.0", store)
}

fn context_with(
    emu: &Emulators,
    subject: &str,
    key: &str,
    share: &str,
    store: Arc<dyn engine::store::Store>,
) -> Context {
    let text = CONFIG.replace("{subject}", subject).replace("{key_field}", key).replace("{share}", share);
    support::context(&emu.fill(&text), store)
}

/// A Contact of the world's first Account for the Pendo visitor `visitor`.
async fn contact(emu: &Emulators, last_name: &str, visitor: &str) {
    let admin = |path: &str| format!("{}/__emulator/{path}", emu.sf.base_url);
    let accounts: Vec<Value> = emu.http.get(admin("records/Account")).send().await.unwrap().json().await.unwrap();
    let account = accounts[0]["Id"].as_str().unwrap();
    let contact = json!([{"LastName": last_name, "AccountId": account, "Pendo_Visitor_Id__c": visitor}]);
    assert!(emu.http.post(admin("records/Contact")).json(&contact).send().await.unwrap().status().is_success());
}

/// `visitor`'s NPS answer, a minute old, as the webhook leaves it in the inbox.
async fn answer(store: &Arc<dyn engine::store::Store>, visitor: &str, unique_id: &str, rating: u8, reason: &str) {
    let secs = Utc::now().timestamp() - 60;
    let body = json!({"event": "npsSubmitted", "visitorId": visitor, "timestamp": secs, "uniqueId": unique_id,
                      "properties": {"nps": {"rating": rating, "reason": reason}}});
    let event = InboxEvent {
        unique_id: unique_id.into(),
        source: "pendo".into(),
        kind: "npsSubmitted".into(),
        received_at: Utc::now(),
        body,
    };
    assert!(store.put_event(&event).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_follow_up_is_kept_and_replay_writes_it_from_the_current_config() {
    let emu = Emulators::start(3, 5, 10).await;
    let store = emu.open_store().await;
    let http = &emu.http;
    let admin = |path: &str| format!("{}/__emulator/{path}", emu.sf.base_url);

    contact(&emu, "Detractor", "nps-v1").await;
    let rule = json!({"name": "No_Follow_Ups", "errorMessage": "Tasks are frozen", "errorField": "Subject",
                      "condition": {"field": "Subject", "operator": "contains", "value": "NPS"}});
    assert!(http.post(admin("validation-rules/Task")).json(&rule).send().await.unwrap().status().is_success());

    let ctx = context(&emu, "NPS detractor: follow up", store.clone());
    answer(&store, "nps-v1", "a1b2", 2, "too slow").await;
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
    let ctx = context(&emu, "NPS detractor: call them today", store.clone());
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
    let emu = Emulators::start(4, 5, 10).await;
    let store = emu.open_store().await;
    let http = &emu.http;
    let admin = |path: &str| format!("{}/__emulator/{path}", emu.sf.base_url);
    contact(&emu, "Detractor", "nps-v9").await;

    let ctx = context_with_key(&emu, "NPS detractor", "Usagesync_Kee__c", store.clone());
    answer(&store, "nps-v9", "c3d4", 1, "broken").await;
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
    let emu = Emulators::start(5, 5, 10).await;
    let store = emu.open_store().await;
    let http = &emu.http;
    let admin = |path: &str| format!("{}/__emulator/{path}", emu.sf.base_url);
    contact(&emu, "Promoter", "nps-v7").await;
    answer(&store, "nps-v7", "e5f6", 10, "").await;
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let score = || async {
        let contacts: Vec<Value> = http.get(admin("records/Contact")).send().await.unwrap().json().await.unwrap();
        contacts.iter().find(|c| c["Pendo_Visitor_Id__c"] == "nps-v7").unwrap()["NPS_Score__c"].clone()
    };

    // A share of the allocation smaller than one batch's reservation.
    let tight = context_with(&emu, "NPS", "Usagesync_Key__c", "0.00005", store.clone());
    let err = engine::workflow::run(&tight, "nps", &options).await.unwrap_err();
    assert!(err.is_deferral(), "{err}");
    assert_eq!(score().await, Value::Null, "nothing written past the cap");
    assert_eq!(store.inbox_counts().await.unwrap().pending, 1, "the answer waits");

    let roomy = context(&emu, "NPS", store.clone());
    let report = engine::workflow::run(&roomy, "nps", &options).await.unwrap();
    assert_eq!(report.changed, 1, "{report:?}");
    assert_eq!(score().await, 10.0);
    assert_eq!(store.inbox_counts().await.unwrap().pending, 0);
}
