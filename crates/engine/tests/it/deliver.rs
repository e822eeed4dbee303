//! Delivery by Bulk API 2.0 against the Salesforce emulator: every row of the job is settled,
//! written, refused for good with Salesforce's code, or (refused only for a moment) sent again
//! by Collections until it is written.

use std::time::Duration;

use engine::change::Change;
use engine::deliver::{RecordRetry, deliver};
use engine::plan::WritePath;
use serde_json::json;

use crate::support::Emulators;

/// Only the connections matter here; a config must name a workflow.
const CONFIG: &str = r#"
store: "{store}"
budget: { daily_share: 1.0 }
workflows:
  engagement:
    template: engagement-scores
    schedule: "0 6 * * *"
    window_days: 30
    matching:
      - { rule: external_id, field: Pendo_Account_Id__c }
    score:
      active_days: { weight: 1.0, target: 20 }
    fields:
      events: Pendo_Events__c
"#;

#[tokio::test]
async fn a_bulk_delivery_settles_every_row_and_sends_again_only_the_locked_ones() {
    let w = Emulators::start(11, 400, 1).await.world(CONFIG).await;
    let mut ids: Vec<String> =
        w.live_records("Account").await.iter().map(|a| a["Id"].as_str().unwrap().to_owned()).collect();
    ids.sort();
    assert!(ids.len() >= 300, "{} Accounts", ids.len());
    // Ten Accounts deleted by someone else between the read and the write: refused for good.
    let (gone, live) = ids.split_at(10);
    for id in gone {
        w.ctx.salesforce.delete("Account", &id.parse().unwrap()).await.unwrap();
    }
    // A third of the Bulk rows refused for a moment (a lock held by another job).
    w.sf_admin(reqwest::Method::PUT, "faults", json!({ "bulkUnableToLockRow": 0.3 })).await;
    let changes: Vec<Change> = ids
        .iter()
        .enumerate()
        .map(|(i, id)| Change {
            key: format!("key-{i}"),
            salesforce_id: id.clone(),
            fields: vec![("Pendo_Events__c".into(), json!(i))],
            prints: vec![],
        })
        .collect();
    let retry = RecordRetry { rounds: 3, pause: Duration::from_millis(1) };
    let out = deliver(&w.ctx.salesforce, "Account", WritePath::Bulk, changes, &retry, &|_| {}).await;

    assert_eq!(out.requests.get("bulk_job"), Some(&1), "{:?}", out.requests);
    // Only the locked rows are sent again: about 120 of the 400, one Collections call (every row
    // again would take two; none again, none).
    assert_eq!(out.requests.get("retry"), Some(&1), "{:?}", out.requests);
    assert!(out.deferred.is_empty(), "{:?}", out.deferred);
    let mut refused: Vec<(&str, &str)> =
        out.failed.iter().map(|f| (f.change.salesforce_id.as_str(), f.code.as_str())).collect();
    refused.sort();
    let expected: Vec<(&str, &str)> = gone.iter().map(|id| (id.as_str(), "ENTITY_IS_DELETED")).collect();
    assert_eq!(refused, expected);
    let mut written: Vec<&str> = out.written.iter().map(|c| c.salesforce_id.as_str()).collect();
    written.sort_unstable();
    assert_eq!(written, live.iter().map(String::as_str).collect::<Vec<_>>());
    // What was written is what Salesforce holds, each value on its own record.
    let events: std::collections::HashMap<String, serde_json::Value> = w
        .live_records("Account")
        .await
        .into_iter()
        .map(|a| (a["Id"].as_str().unwrap().to_owned(), a["Pendo_Events__c"].clone()))
        .collect();
    for (i, id) in ids.iter().enumerate().skip(10) {
        assert_eq!(events[id].as_f64(), Some(i as f64), "{id}");
    }
}
