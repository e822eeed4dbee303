use pendo::metadata::{FieldSpec, MetadataUpdate, Outcome};
use pendo::{Error, Kind};
use serde_json::{Map, Value, json};

use crate::{client, client_for, emulator};

fn update(id: &str, values: Value) -> MetadataUpdate {
    MetadataUpdate { id: id.into(), values: values.as_object().cloned().unwrap_or_else(Map::new) }
}

#[tokio::test]
async fn bulk_writes_report_each_id() {
    let e = emulator().await;
    let c = client(&e);
    let ids: Vec<String> = e.state.with_store_read(|s| s.accounts.iter().map(|a| a.id.to_string()).collect());
    // 1,200 updates: three batches; two unknown accounts, one bad value.
    let mut updates = Vec::new();
    for i in 0..1200 {
        let id = &ids[i % ids.len()];
        updates.push(update(id, json!({"arr": i as i64})));
    }
    updates[700] = update("ghost-1", json!({"plan": "x"}));
    updates[701] = update("ghost-2", json!({"plan": "x"}));
    updates[1100] = update(&ids[3], json!({"arr": "not a number"}));
    let report = c.set_metadata(Kind::Account, "custom", &updates, false).await.unwrap();
    assert_eq!(report.outcomes.len(), 1200);
    assert_eq!(report.outcomes[700], ("ghost-1".to_string(), Outcome::Missing));
    assert_eq!(report.outcomes[1100].1, Outcome::Failed);
    assert_eq!(report.count(Outcome::Updated), 1197);
    // 3 batch calls plus the halvings that pinned the one failure (log2(200) ≈ 8 levels × 2).
    assert!(report.requests > 3 && report.requests < 3 + 2 * 10, "{}", report.requests);
    // Values are visible to aggregations and single reads at once.
    let v = c.get_value(Kind::Account, "custom", &ids[0], "arr").await.unwrap();
    assert!(v.is_number());
    let created =
        c.set_metadata(Kind::Account, "custom", &[update("new-co", json!({"plan": "pro"}))], true).await.unwrap();
    assert_eq!(created.outcomes[0].1, Outcome::Updated);
    assert_eq!(c.account("new-co").await.unwrap().metadata["custom"]["plan"], "pro");
}

#[tokio::test]
async fn single_values_fields_and_write_access() {
    let e = emulator().await;
    let c = client(&e);
    let vid = e.state.with_store_read(|s| s.visitors[1].id.to_string());
    c.create_fields(
        Kind::Visitor,
        "custom",
        &[FieldSpec { name: "npsscore".into(), displayname: "NPS".into(), field_type: "number".into() }],
    )
    .await
    .unwrap();
    c.set_value(Kind::Visitor, "custom", &vid, "npsscore", &json!(9)).await.unwrap();
    assert_eq!(c.get_value(Kind::Visitor, "custom", &vid, "npsscore").await.unwrap(), json!(9));
    let err = c.set_value(Kind::Visitor, "custom", &vid, "npsscore", &json!("nine")).await.unwrap_err();
    assert!(matches!(err, Error::Rejected { status: 400, .. }), "{err}");
    let ro = client_for(&e, "emulator-readonly-key");
    let err =
        ro.set_metadata(Kind::Visitor, "custom", &[update(&vid, json!({"npsscore": 1}))], false).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }));
}
