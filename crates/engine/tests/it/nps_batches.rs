//! nps-realtime batches against both emulators on 127.0.0.1: with `match: [visitor_id_field,
//! email]`, Pendo is asked for the e-mail only of visitors whose Contact the visitor-id field did
//! not find, and every answer is still written by the rule that matches it.

use std::time::Duration;

use chrono::Utc;
use engine::store::InboxEvent;
use engine::workflow::RunOptions;
use serde_json::{Value, json};

use crate::support::{self, Emulators};

const CONFIG: &str = r#"
store: "sqlite://unused.db"
budget: { daily_share: 1.0 }
workflows:
  nps:
    template: nps-realtime
    schedule: "*/15 * * * *"
    window_days: 7
    contact:
      match: [visitor_id_field, email]
      visitor_id_field: Pendo_Visitor_Id__c
      email_metadata: agent.email
      score_field: NPS_Score__c
      comment_field: NPS_Comment__c
      date_field: NPS_Date__c
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pendo_is_asked_only_about_visitors_the_visitor_id_field_did_not_match() {
    let emu = Emulators::start(11, 5, 10).await;
    let store = emu.open_store().await;
    let admin = |base: &str, path: &str| format!("{base}/__emulator/{path}");
    let get = |url: String| async { emu.http.get(url).send().await.unwrap().json::<Value>().await.unwrap() };
    let contacts = get(admin(&emu.sf.base_url, "records/Contact")).await;
    let contacts = contacts.as_array().unwrap();
    // A generated visitor whose e-mail is on exactly one Contact, and whose id is on none.
    let visitors = get(admin(&emu.pendo.base_url, "visitors")).await;
    let (by_email, email_contact) = visitors
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| {
            let id = v["visitorId"].as_str()?;
            let email = v["metadata"]["agent"]["email"].as_str()?;
            let hits: Vec<&Value> = contacts
                .iter()
                .filter(|c| c["Email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(email)))
                .collect();
            let by_id = contacts.iter().any(|c| c["Pendo_Visitor_Id__c"] == id);
            (hits.len() == 1 && !by_id).then(|| (id.to_owned(), hits[0]["Id"].as_str().unwrap().to_owned()))
        })
        .expect("the generated world has a visitor matched by e-mail only");
    // Three people whose Contacts carry their visitor id.
    let account = contacts[0]["AccountId"].as_str().unwrap();
    let rows: Vec<Value> = (0..3)
        .map(|i| json!({"LastName": format!("By id {i}"), "AccountId": account, "Pendo_Visitor_Id__c": format!("by-id-v{i}")}))
        .collect();
    let made = emu.http.post(admin(&emu.sf.base_url, "records/Contact")).json(&rows).send().await.unwrap();
    assert!(made.status().is_success());
    let secs = Utc::now().timestamp() - 60;
    let people: Vec<String> = (0..3).map(|i| format!("by-id-v{i}")).chain([by_email.clone()]).collect();
    for (i, visitor) in people.iter().enumerate() {
        let body = json!({"event": "npsSubmitted", "visitorId": visitor, "timestamp": secs, "uniqueId": format!("u{i}"),
                          "properties": {"nps": {"rating": 9, "reason": ""}}});
        let event = InboxEvent {
            unique_id: format!("u{i}"),
            source: "pendo".into(),
            kind: "npsSubmitted".into(),
            received_at: Utc::now(),
            body,
        };
        assert!(store.put_event(&event).await.unwrap());
    }
    assert!(emu.http.delete(admin(&emu.pendo.base_url, "usage")).send().await.unwrap().status().is_success());

    let ctx = support::context(&emu.fill(CONFIG), store.clone());
    let options = RunOptions { trigger: "test".into(), ..Default::default() };
    let report = engine::workflow::run(&ctx, "nps", &options).await.unwrap();
    assert_eq!((report.changed, report.unmatched, report.failed), (4, 0, 0), "{report:?}");
    let usage = get(admin(&emu.pendo.base_url, "usage")).await;
    let look_ups: u64 = usage["byEndpoint"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(endpoint, _)| endpoint.starts_with("GET") && endpoint.contains("/visitor/"))
        .map(|(_, n)| n.as_u64().unwrap())
        .sum();
    assert_eq!(look_ups, 1, "only the visitor matched by e-mail is looked up: {usage}");
    let contacts = get(admin(&emu.sf.base_url, "records/Contact")).await;
    let score = |pred: &dyn Fn(&Value) -> bool| {
        contacts.as_array().unwrap().iter().find(|c| pred(c)).map(|c| c["NPS_Score__c"].clone()).unwrap()
    };
    assert_eq!(score(&|c| c["Id"] == email_contact.as_str()), 9.0);
    for i in 0..3 {
        assert_eq!(score(&|c| c["Pendo_Visitor_Id__c"] == format!("by-id-v{i}").as_str()), 9.0);
    }
}

/// Three Contacts (`taken-v0..2`) and an answer of each in the inbox (ratings 4, 5, 6, events
/// `{prefix}0..2`), answered a minute ago; returns the answers' timestamp.
async fn three_answers(emu: &Emulators, store: &std::sync::Arc<dyn engine::store::Store>, prefix: &str) -> i64 {
    let records = format!("{}/__emulator/records/Contact", emu.sf.base_url);
    let contacts: Value = emu.http.get(&records).send().await.unwrap().json().await.unwrap();
    let account = contacts[0]["AccountId"].as_str().unwrap().to_owned();
    let rows: Vec<Value> = (0..3)
        .map(|i| json!({"LastName": format!("Taken {i}"), "AccountId": account, "Pendo_Visitor_Id__c": format!("taken-v{i}")}))
        .collect();
    let made = emu.http.post(&records).json(&rows).send().await.unwrap();
    assert!(made.status().is_success());
    let secs = Utc::now().timestamp() - 60;
    for i in 0..3 {
        let body = json!({"event": "npsSubmitted", "visitorId": format!("taken-v{i}"), "timestamp": secs,
                          "uniqueId": format!("{prefix}{i}"), "properties": {"nps": {"rating": 4 + i, "reason": ""}}});
        let event = InboxEvent {
            unique_id: format!("{prefix}{i}"),
            source: "pendo".into(),
            kind: "npsSubmitted".into(),
            received_at: Utc::now(),
            body,
        };
        assert!(store.put_event(&event).await.unwrap());
    }
    secs
}

/// A daemon of this host killed while it held a batch: the consumer of another gives the
/// batch back at its next idle poll and writes it, though nothing else is pending, rather than
/// waiting out the dead one's lease (an hour here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_consumer_takes_back_a_dead_daemons_batch_before_its_lease_ends() {
    let emu = Emulators::start(12, 5, 10).await;
    let store = emu.open_store().await;
    three_answers(&emu, &store, "t").await;
    let mut gone = std::process::Command::new("true").spawn().unwrap();
    gone.wait().unwrap();
    let this_host = engine::workflow::lease_holder().rsplit_once(':').map(|(h, _)| h.to_owned()).unwrap();
    let dead = format!("{this_host}:{}:batch", gone.id());
    let held = store.claim_events(&dead, Duration::from_secs(3600), Utc::now(), 100).await.unwrap();
    assert_eq!(held.len(), 3);

    let config = CONFIG.replace("match: [visitor_id_field, email]", "match: [visitor_id_field]");
    let ctx = support::context(&emu.fill(&config), store.clone());
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wake = std::sync::Arc::new(tokio::sync::Notify::new());
    let consumer =
        tokio::spawn(engine::workflow::nps::consume(ctx, engine::workflow::RunLease::DEFAULT, wake, stopped));
    support::eventually("the dead daemon's batch is written", Duration::from_secs(30), || {
        let store = store.clone();
        async move { (store.inbox_counts().await.unwrap().pending == 0).then_some(()) }
    })
    .await;
    stop.send(true).unwrap();
    consumer.await.unwrap();
    let contacts: Value = emu
        .http
        .get(format!("{}/__emulator/records/Contact", emu.sf.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for i in 0..3 {
        let c =
            contacts.as_array().unwrap().iter().find(|c| c["Pendo_Visitor_Id__c"] == format!("taken-v{i}").as_str());
        assert_eq!(c.unwrap()["NPS_Score__c"], f64::from(4 + i));
    }
}

/// A batch whose claim lapses mid-way (a heartbeat starved past its lease) and is taken over by
/// another worker: both write the answers to Salesforce (harmless), but only the taker records
/// them; the first worker's record stage finds its claim gone and records, commits and marks
/// nothing of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_taken_over_after_its_claim_lapsed_is_recorded_once_by_the_taker() {
    let emu = Emulators::start(12, 5, 10).await;
    let store = emu.open_store().await;
    let admin = |base: &str, path: &str| format!("{base}/__emulator/{path}");
    let secs = three_answers(&emu, &store, "t").await;
    let keys: Vec<String> = (0..3).map(|i| format!("nps:{secs}:taken-v{i}")).collect();
    // Every Salesforce call slow: the first worker is still writing when the second takes over.
    let faults = json!({"latencyMs": 700, "latencyShare": 1.0});
    assert!(emu.http.put(admin(&emu.sf.base_url, "faults")).json(&faults).send().await.unwrap().status().is_success());

    let config = CONFIG.replace("match: [visitor_id_field, email]", "match: [visitor_id_field]");
    let first = support::context(&emu.fill(&config), store.clone());
    let running = tokio::spawn(async move {
        let options = RunOptions { trigger: "test".into(), ..Default::default() };
        engine::workflow::run(&first, "nps", &options).await
    });
    let first_claimer = support::eventually("the first worker claims the batch", Duration::from_secs(30), || {
        let store = store.clone();
        async move { store.event_claimers(Utc::now()).await.unwrap().into_iter().next() }
    })
    .await;
    // The first worker's lease looks lapsed to a claimer an hour on: as if its heartbeat had
    // been starved for that long.
    let lease = Duration::from_secs(60);
    let events = store.claim_events("taker", lease, Utc::now() + chrono::Duration::hours(1), 100).await.unwrap();
    assert_eq!(events.len(), 3, "the lapsed batch is taken over whole");
    let second = support::context(&emu.fill(&config), store.clone());
    let (workflow, nps) = engine::workflow::nps::inbox_workflow(&second).unwrap();
    let batch = engine::workflow::nps::Claimed { claimer: "taker".into(), events };
    let cache = engine::workflow::nps::BatchCache::default();
    let taken = engine::workflow::nps::process(&second, workflow, nps, &cache, batch, "test", None).await.unwrap();
    assert_eq!(taken.taken_over, 0, "{taken:?}");
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.failed, 0, "{report:?}");
    assert!(
        emu.http.put(admin(&emu.sf.base_url, "faults")).json(&json!({})).send().await.unwrap().status().is_success()
    );

    // Each answer recorded by one worker: the taker, the one holding its events.
    let mut recorded: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for run in store.list_runs(Some("nps"), 0).await.unwrap() {
        for o in store.run_outcomes(run.id, &Default::default()).await.unwrap() {
            if o.object == "Contact" {
                recorded.entry(o.key).or_default().push(format!("run {} {:?}", run.id, o.action));
            }
        }
    }
    for key in &keys {
        assert_eq!(
            recorded.get(key).map(Vec::len),
            Some(1),
            "{key} recorded once (first claimer {first_claimer}): {recorded:?}"
        );
    }
    assert_eq!(store.inbox_counts().await.unwrap().pending, 0, "the taker marked the batch processed");
    for key in &keys {
        let state = store.begin_create(key, "nps", Utc::now()).await.unwrap();
        assert!(matches!(state, engine::store::CreateState::Committed { .. }), "{key} in the ledger: {state:?}");
    }
    let contacts: Value =
        emu.http.get(admin(&emu.sf.base_url, "records/Contact")).send().await.unwrap().json().await.unwrap();
    for i in 0..3 {
        let c =
            contacts.as_array().unwrap().iter().find(|c| c["Pendo_Visitor_Id__c"] == format!("taken-v{i}").as_str());
        assert_eq!(c.unwrap()["NPS_Score__c"], f64::from(4 + i));
    }
}

/// Every answer's Contact outcomes, by response key, across the workflow's runs.
async fn contact_outcomes(
    store: &std::sync::Arc<dyn engine::store::Store>,
) -> std::collections::BTreeMap<String, Vec<String>> {
    let mut recorded: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for run in store.list_runs(Some("nps"), 0).await.unwrap() {
        for o in store.run_outcomes(run.id, &Default::default()).await.unwrap() {
            if o.object == "Contact" {
                recorded.entry(o.key).or_default().push(format!("run {} {:?}", run.id, o.action));
            }
        }
    }
    recorded
}

/// A worker that stalls in its record stage past its lease, after it found its claim still
/// held and before its events are marked processed: a worker taking the batch over meanwhile
/// takes nothing (the check and the record are one transaction), and every answer is recorded
/// exactly once, with its key in the ledger and its event processed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stalled_while_recording_is_recorded_once() {
    let emu = Emulators::start(12, 5, 10).await;
    let store = emu.open_store().await;
    let secs = three_answers(&emu, &store, "stalled-").await;
    let keys: Vec<String> = (0..3).map(|i| format!("nps:{secs}:taken-v{i}")).collect();
    let stall = engine::testhook::stall_at("record-held", "stalled-0");

    let config = CONFIG.replace("match: [visitor_id_field, email]", "match: [visitor_id_field]");
    let first = support::context(&emu.fill(&config), store.clone());
    let running = tokio::spawn(async move {
        let options = RunOptions { trigger: "test".into(), ..Default::default() };
        engine::workflow::run(&first, "nps", &options).await
    });
    tokio::time::timeout(Duration::from_secs(60), stall.reached()).await.expect("the first worker reaches its record");
    // The first worker's lease looks lapsed to a claimer an hour on: as if it had stalled that
    // long. Its claim is taken over unless its record holds the events.
    let lease = Duration::from_secs(60);
    let mut taking = {
        let store = store.clone();
        tokio::spawn(
            async move { store.claim_events("taker", lease, Utc::now() + chrono::Duration::hours(1), 100).await },
        )
    };
    // A takeover that is not kept waiting has happened: the stalled worker goes on after it.
    let early = tokio::time::timeout(Duration::from_millis(300), &mut taking).await;
    stall.release();
    let events = match early {
        Ok(taken) => taken,
        Err(_) => taking.await,
    };
    let events = events.unwrap().unwrap();
    if !events.is_empty() {
        let second = support::context(&emu.fill(&config), store.clone());
        let (workflow, nps) = engine::workflow::nps::inbox_workflow(&second).unwrap();
        let batch = engine::workflow::nps::Claimed { claimer: "taker".into(), events };
        let cache = engine::workflow::nps::BatchCache::default();
        engine::workflow::nps::process(&second, workflow, nps, &cache, batch, "test", None).await.unwrap();
    }
    let report = running.await.unwrap().unwrap();
    assert_eq!(report.failed, 0, "{report:?}");

    let recorded = contact_outcomes(&store).await;
    for key in &keys {
        assert_eq!(recorded.get(key).map(Vec::len), Some(1), "{key} recorded exactly once: {recorded:?}");
    }
    assert_eq!(store.inbox_counts().await.unwrap().pending, 0, "every event processed");
    for key in &keys {
        let state = store.begin_create(key, "nps", Utc::now()).await.unwrap();
        assert!(matches!(state, engine::store::CreateState::Committed { .. }), "{key} in the ledger: {state:?}");
    }
    let contacts: Value = emu
        .http
        .get(format!("{}/__emulator/records/Contact", emu.sf.base_url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    for i in 0..3 {
        let c =
            contacts.as_array().unwrap().iter().find(|c| c["Pendo_Visitor_Id__c"] == format!("taken-v{i}").as_str());
        assert_eq!(c.unwrap()["NPS_Score__c"], f64::from(4 + i));
    }
}
