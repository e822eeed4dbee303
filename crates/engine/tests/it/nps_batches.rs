//! nps-realtime batches against both emulators on 127.0.0.1: with `match: [visitor_id_field,
//! email]`, Pendo is asked for the e-mail only of visitors whose Contact the visitor-id field did
//! not find, and every answer is still written by the rule that matches it.

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
