//! contact-engagement end to end against both emulators on 127.0.0.1: each person's usage lands
//! on their Contact (found by visitor id or by e-mail), a silent person gets zeros and keeps the
//! last active day, an address two visitors share links nobody, and a re-run writes nothing.

use std::collections::HashMap;

use chrono::{Duration, Utc};
use serde_json::{Value, json};

use crate::support::{self, Emulators, World};

const CONFIG: &str = r#"
store: "{store}"
budget: { daily_share: 0.5 }
workflows:
  people-by-id:
    template: contact-engagement
    schedule: "0 6 * * *"
    window_days: 30
    max_latency: 1m
    contacts:
      visitor_id_field: Pendo_Visitor_Id__c
      fields:
        active_days: Person_Active_Days__c
        events: Person_Events__c
        minutes: Person_Minutes__c
        features_used: Person_Features__c
        guides_completed: Person_Guides__c
        last_active: Pendo_Last_Active__c
  people-by-email:
    template: contact-engagement
    schedule: "0 6 * * *"
    window_days: 30
    max_latency: 1m
    contacts:
      match: email
      fields:
        events: Person_Mail_Events__c
  people-signals:
    template: contact-engagement
    schedule: "0 6 * * *"
    window_days: 30
    contacts:
      visitor_id_field: Pendo_Visitor_Id__c
      alert:
        when: "events < 10.0"
        subject: "Low usage: {person} ({events} events, {previous.events} before)"
"#;

impl World {
    async fn contacts(&self) -> HashMap<String, Value> {
        let url = format!("{}/__emulator/records/Contact", self.sf.base_url);
        let rows: Vec<Value> = self.http.get(url).send().await.unwrap().json().await.unwrap();
        rows.into_iter().filter_map(|r| Some((r["LastName"].as_str()?.to_owned(), r))).collect()
    }
}

async fn post(http: &reqwest::Client, url: String, body: Value) {
    let r = http.post(url).json(&body).send().await.unwrap();
    assert!(r.status().is_success(), "{}", r.text().await.unwrap());
}

/// A small generated world plus five people of our own: Ada and Bo busy, Cy silent, Dee and Eve
/// sharing one address.
async fn world() -> World {
    let emulators = Emulators::start(9, 20, 30).await;
    let (sf, pendo, http) = (&emulators.sf, &emulators.pendo, &emulators.http);

    let today = Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc();
    let at = |days_ago: i64| (today - Duration::days(days_ago) + Duration::hours(10)).timestamp_millis();
    let person = |id: &str, email: &str| json!({"visitorId": id, "accountId": "people-co", "metadata": {"agent": {"email": email}}});
    let page = |visitor: &str, days_ago: i64, events: u64, minutes: u64| json!({"kind": "page", "id": "page-p", "visitorId": visitor, "accountId": "people-co", "time": at(days_ago), "numEvents": events, "numMinutes": minutes});
    let feature = |visitor: &str, id: &str, days_ago: i64| json!({"kind": "feature", "id": id, "visitorId": visitor, "accountId": "people-co", "time": at(days_ago), "numEvents": 1});
    let guide = |visitor: &str, step: &str, days_ago: i64| json!({"guideId": "guide-p", "visitorId": visitor, "accountId": "people-co", "time": at(days_ago), "type": "guideAdvanced", "guideStepId": step});
    let seed = json!({
        "accounts": [{"accountId": "people-co"}],
        "visitors": [
            person("p-ada", "ada@people.test"),
            person("p-bo", "bo@people.test"),
            person("p-cy", "cy@people.test"),
            person("p-dee", "shared@people.test"),
            person("p-eve", "Shared@People.test"),
        ],
        "pages": [{"id": "page-p", "name": "Home"}],
        "features": [{"id": "feat-a", "name": "Export"}, {"id": "feat-b", "name": "Share"}],
        "guides": [{"id": "guide-p", "name": "Tour", "steps": [{"id": "s1", "rank": 1}, {"id": "s2", "rank": 2}]}],
        "events": [
            page("p-ada", 2, 5, 3), page("p-ada", 5, 7, 4),
            feature("p-ada", "feat-a", 2), feature("p-ada", "feat-b", 5),
            page("p-bo", 3, 2, 1),
            feature("p-bo", "feat-a", 3), feature("p-bo", "feat-a", 4),
            page("p-dee", 2, 9, 9), page("p-eve", 2, 9, 9),
            // Outside the window (and today, which the window never includes).
            page("p-cy", 40, 50, 50), page("p-cy", 0, 50, 50),
        ],
        "guideEvents": [guide("p-ada", "s1", 2), guide("p-ada", "s2", 2), guide("p-bo", "s1", 3)],
    });
    post(http, format!("{}/__emulator/seed", pendo.base_url), seed).await;

    for name in [
        "Person_Active_Days__c",
        "Person_Events__c",
        "Person_Minutes__c",
        "Person_Features__c",
        "Person_Guides__c",
        "Person_Mail_Events__c",
    ] {
        let field = json!({"name": name, "type": "double"});
        post(http, format!("{}/__emulator/fields/Contact", sf.base_url), field).await;
    }

    let w = emulators.world(CONFIG).await;
    for (last, visitor, email) in [
        ("Ada", Some("p-ada"), None),
        ("Bo", Some("p-bo"), None),
        ("Cy", Some("p-cy"), None),
        ("AdaByMail", None, Some(" ADA@People.Test")),
        ("Shared", None, Some("shared@people.test")),
    ] {
        let mut c = json!({"LastName": last});
        if let Some(v) = visitor {
            c["Pendo_Visitor_Id__c"] = json!(v);
        }
        if let Some(e) = email {
            c["Email"] = json!(e.trim());
        }
        w.ctx.salesforce.create("Contact", &c).await.unwrap();
    }
    w
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_persons_usage_lands_on_their_contact_and_a_rerun_writes_nothing() {
    let w = world().await;
    let by_id = w.run("people-by-id").await;
    assert_eq!((by_id.state.as_str(), by_id.failed, by_id.deferred), ("succeeded", 0, 0), "{by_id:?}");
    assert_eq!(by_id.written, 3, "{by_id:?}");
    let by_mail = w.run("people-by-email").await;
    assert_eq!((by_mail.state.as_str(), by_mail.failed), ("succeeded", 0), "{by_mail:?}");
    assert!(by_mail.ambiguous >= 2, "Dee and Eve share an address: {by_mail:?}");
    assert!(
        by_mail
            .ambiguous_samples
            .iter()
            .any(|s| s.pendo_account.contains("p-dee") && s.pendo_account.contains("p-eve")),
        "{:?}",
        by_mail.ambiguous_samples
    );

    let c = w.contacts().await;
    let figures = |name: &str| {
        let r = &c[name];
        ["Person_Active_Days__c", "Person_Events__c", "Person_Minutes__c", "Person_Features__c", "Person_Guides__c"]
            .map(|f| r[f].as_f64())
    };
    assert_eq!(figures("Ada"), [Some(2.0), Some(12.0), Some(7.0), Some(2.0), Some(1.0)]);
    // Bo advanced a guide but never reached its last step, and used one feature twice.
    assert_eq!(figures("Bo"), [Some(1.0), Some(2.0), Some(1.0), Some(1.0), Some(0.0)]);
    // Cy's events are all outside the window: zeros, and no last active day to write.
    assert_eq!(figures("Cy"), [Some(0.0); 5]);
    assert!(c["Cy"]["Pendo_Last_Active__c"].is_null(), "{}", c["Cy"]);
    let two_days_ago = (Utc::now().date_naive() - Duration::days(2)).to_string();
    let last = c["Ada"]["Pendo_Last_Active__c"].as_str().unwrap();
    assert!(last.starts_with(&two_days_ago), "{last}");
    assert_eq!(c["AdaByMail"]["Person_Mail_Events__c"].as_f64(), Some(12.0));
    assert!(c["Shared"]["Person_Mail_Events__c"].is_null(), "an address two people share links nobody");
    assert!(c["Ada"]["Person_Mail_Events__c"].is_null());

    // Nothing changed: nothing is written, and only reads are spent.
    for workflow in ["people-by-id", "people-by-email"] {
        let again = w.run(workflow).await;
        assert_eq!((again.written, again.changed, again.failed), (0, 0, 0), "{workflow}: {again:?}");
        assert!(!again.api_calls.contains_key("update") && !again.api_calls.contains_key("collections"), "{again:?}");
    }

    // A new process: nothing to write, so the budget comes from the ledger and today's last
    // reading, not /limits.
    let (again, calls) = w.run_fresh("people-by-id").await;
    let again = again.unwrap();
    assert_eq!((again.written, again.failed), (0, 0), "{again:?}");
    assert!(!again.api_calls.contains_key("read_limits"), "{:?}", again.api_calls);
    assert_eq!(calls, again.total_api_calls());

    // A person's usage changes: only their Contact is written, and only the changed fields.
    let now = Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc() - Duration::days(1);
    let more = json!({"events": [{"kind": "page", "id": "page-p", "visitorId": "p-bo", "accountId": "people-co", "time": now.timestamp_millis(), "numEvents": 4, "numMinutes": 0}]});
    post(&w.http, format!("{}/__emulator/seed", w.pendo.base_url), more.clone()).await;
    let changed = w.run("people-by-id").await;
    assert_eq!((changed.written, changed.failed), (1, 0), "{changed:?}");
    assert_eq!(
        changed.fields_changed.keys().cloned().collect::<Vec<_>>(),
        ["Pendo_Last_Active__c", "Person_Active_Days__c", "Person_Events__c"]
    );
    let bo = &w.contacts().await["Bo"];
    assert_eq!((bo["Person_Active_Days__c"].as_f64(), bo["Person_Events__c"].as_f64()), (Some(2.0), Some(6.0)));
    // And again, on the same day: the new figure is written.
    post(&w.http, format!("{}/__emulator/seed", w.pendo.base_url), more).await;
    let again = w.run("people-by-id").await;
    assert_eq!((again.written, again.failed), (1, 0), "{again:?}");
    assert_eq!(w.contacts().await["Bo"]["Person_Events__c"].as_f64(), Some(10.0));

    // Today's share spent (the ledger): refused as deferred before any Salesforce call.
    let today = Utc::now();
    w.ctx.store.settle_budget(today.date_naive(), "another-workflow", 0, 10_000_000, today).await.unwrap();
    let (refused, calls) = w.run_fresh("people-by-id").await;
    let e = refused.expect_err("over budget");
    assert!(matches!(e, engine::workflow::RunError::OverBudget { .. }) && e.is_deferral(), "{e}");
    assert_eq!(calls, 0, "refused before reading anything");
}

/// The Contacts are read whole once; later runs ask Salesforce only for the Contacts changed
/// since (one call after a quiet day), and follow an address moved to another Contact and a
/// Contact deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn later_runs_read_only_the_contacts_changed_since_and_follow_relinks_and_deletions() {
    let w = world().await;
    // Six query pages of Contacts whose addresses no visitor has (so the whole read takes Bulk
    // after the first page), stamped an hour before the rest (so the change query's overlap
    // does not reach them).
    let clock = format!("{}/__emulator/clock", w.sf.base_url);
    for change in [json!({"advanceSeconds": -3_600}), json!({"live": true})] {
        let r = w.http.put(&clock).json(&change).send().await.unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        if change["live"].is_null() {
            let many: Vec<Value> = (0..11_000)
                .map(|i| json!({"LastName": format!("Many {i}"), "Email": format!("nobody-{i}@else.test")}))
                .collect();
            post(&w.http, format!("{}/__emulator/records/Contact", w.sf.base_url), json!(many)).await;
        }
    }

    let first = w.run("people-by-email").await;
    assert_eq!((first.failed, first.ambiguous), (0, 2), "{first:?}");
    assert_eq!(w.contacts().await["AdaByMail"]["Person_Mail_Events__c"].as_f64(), Some(12.0));
    let whole = first.api_calls.get("read_contacts").copied().unwrap_or_default();
    assert!((3..=5).contains(&whole), "a REST page, then Bulk (not 6 pages): {:?}", first.api_calls);
    // The Contacts written come back (their stamp moved): one page.
    let second = w.run("people-by-email").await;
    assert_eq!((second.written, second.failed), (0, 0), "{second:?}");
    assert_eq!(second.api_calls.get("read_contacts"), Some(&1), "{:?}", second.api_calls);

    // Ada's address moves to a new Contact; the Contact two people's address pointed at is deleted.
    let c = w.contacts().await;
    let id = |name: &str| salesforce::SalesforceId::parse(c[name]["Id"].as_str().unwrap()).unwrap();
    w.ctx.salesforce.update("Contact", &id("AdaByMail"), &json!({"Email": "ada-old@people.test"})).await.unwrap();
    w.ctx.salesforce.create("Contact", &json!({"LastName": "AdaMail2", "Email": "ada@people.test"})).await.unwrap();
    w.ctx.salesforce.delete("Contact", &id("Shared")).await.unwrap();
    let third = w.run("people-by-email").await;
    let linked = (third.written, third.failed, third.matched, third.ambiguous);
    assert_eq!(linked, (1, 0, first.matched, 0), "AdaMail2 in AdaByMail's place: {third:?}");
    assert_eq!(third.api_calls.get("read_contacts"), Some(&1), "{:?}", third.api_calls);
    assert_eq!(w.contacts().await["AdaMail2"]["Person_Mail_Events__c"].as_f64(), Some(12.0));
}

/// The world's config with `from` replaced by `to`, over the world's store and clients.
fn edited(w: &World, from: &str, to: &str) -> engine::workflow::Context {
    let text = support::config_text(CONFIG, &w.sf.base_url, &w.pendo.base_url, "sqlite://unused.db").replace(from, to);
    let config = engine::config::load_str(&text, "test.yaml").unwrap();
    engine::workflow::Context { config: std::sync::Arc::new(config), ..w.ctx.clone() }
}

/// A signal over each person's figures: everyone it holds for gets one Task on their Contact
/// (and its Account, for the Account's owner); a re-run makes nothing; a person who recovers
/// closes their episode, and alerts again in a new one once the signal holds again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_persons_signal_makes_one_task_per_episode_on_their_contact_and_rearms_after_recovery() {
    use engine::store::OutcomeFilter;
    use engine::workflow::people::alert_key;
    let w = world().await;
    let users = w.records("User").await;
    let owner = users.last().unwrap()["Id"].as_str().unwrap().to_owned();
    let account = w.ctx.salesforce.create("Account", &json!({"Name": "People Co", "OwnerId": owner})).await.unwrap();
    let account = account.id.as_str().to_owned();
    let c = w.contacts().await;
    for name in ["Ada", "Bo", "Cy"] {
        let id = salesforce::SalesforceId::parse(c[name]["Id"].as_str().unwrap()).unwrap();
        w.ctx.salesforce.update("Contact", &id, &json!({"AccountId": account})).await.unwrap();
    }
    let id_of = |name: &str| c[name]["Id"].as_str().unwrap().to_owned();
    let tasks = || async {
        let all = w.records("Task").await;
        all.into_iter().filter(|t| t["Usagesync_Key__c"].is_string()).collect::<Vec<_>>()
    };

    // Bo (2 events) and Cy (none in the window) are under 10; Ada (12) is not.
    let first = w.run("people-signals").await;
    assert_eq!((first.failed, first.state.as_str()), (0, "succeeded"), "{:?} {:?}", first.failures, first.preflight);
    assert_eq!(first.written, 2, "{first:?}");
    // The report counts each Task decided (the people workflow writes no Contact field here).
    assert_eq!((first.changed, first.fields_changed.get("Task")), (2, Some(&2)), "{first:?}");
    let made = tasks().await;
    assert_eq!(made.len(), 2);
    for t in &made {
        let who = t["WhoId"].as_str().unwrap();
        assert!([id_of("Bo"), id_of("Cy")].contains(&who.to_owned()), "{t}");
        assert_eq!(
            (t["WhatId"].as_str(), t["OwnerId"].as_str()),
            (Some(account.as_str()), Some(owner.as_str())),
            "{t}"
        );
        assert_eq!(t["Priority"], json!("High"));
    }
    let bo = made.iter().find(|t| t["WhoId"] == json!(id_of("Bo"))).unwrap();
    assert_eq!(bo["Subject"], json!("Low usage: Bo (2 events, 0 before)"));
    assert_eq!(bo["Usagesync_Key__c"], json!(alert_key("people-signals", "p-bo", 1)));

    let again = w.run("people-signals").await;
    assert_eq!((again.written, again.changed, again.failed), (0, 0, 0), "one Task per episode: {again:?}");
    assert_eq!(again.api_calls.get("create"), None, "{:?}", again.api_calls);
    assert_eq!(tasks().await.len(), 2);

    // Bo gets busy: his episode closes; Cy's stays open.
    let yesterday = Utc::now().date_naive().and_hms_opt(0, 0, 0).unwrap().and_utc() - Duration::days(1);
    let more = json!({"events": [{"kind": "page", "id": "page-p", "visitorId": "p-bo", "accountId": "people-co", "time": yesterday.timestamp_millis(), "numEvents": 10, "numMinutes": 1}]});
    w.pendo_seed(more).await;
    let recovered = w.run("people-signals").await;
    assert_eq!((recovered.written, recovered.failed), (0, 0), "{recovered:?}");
    let rows = w.ctx.store.run_outcomes(recovered.run_id.unwrap(), &OutcomeFilter::default()).await.unwrap();
    let said = |key: &str| rows.iter().find(|o| o.key == key).and_then(|o| o.message.clone()).unwrap_or_default();
    assert!(said("p-bo").starts_with("recovered"), "{rows:?}");
    assert!(said("p-cy").contains("still open"), "{rows:?}");

    // A higher bar: Bo (12 events) alerts again in a second episode, Ada in her first; Cy's
    // open episode makes nothing new.
    let higher = edited(&w, "when: \"events < 10.0\"", "when: \"events < 20.0\"");
    let options = engine::workflow::RunOptions { trigger: "test".into(), ..Default::default() };
    let second = engine::workflow::run(&higher, "people-signals", &options).await.unwrap();
    assert_eq!((second.written, second.failed), (2, 0), "{second:?}");
    let keys: Vec<String> = tasks().await.iter().map(|t| t["Usagesync_Key__c"].as_str().unwrap().to_owned()).collect();
    assert_eq!(keys.len(), 4);
    assert!(keys.contains(&alert_key("people-signals", "p-bo", 2)), "{keys:?}");
    assert!(keys.contains(&alert_key("people-signals", "p-ada", 1)), "{keys:?}");
}
