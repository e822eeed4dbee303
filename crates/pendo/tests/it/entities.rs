use pendo::entities::metadata_value;
use pendo::{Error, Kind};

use crate::{client, emulator};

#[tokio::test]
async fn catalogue_and_entities() {
    let e = emulator().await;
    let c = client(&e);
    let features = c.features(&[]).await.unwrap();
    assert!(features.iter().any(|f| f.extra.get("group").and_then(|g| g["name"].as_str()) == Some("Premium")));
    let one = c.features(&[features[0].id.as_str()]).await.unwrap();
    assert_eq!(one.len(), 1);
    assert!(matches!(c.features(&[features[0].id.as_str(), "nope"]).await, Err(Error::NotFound { .. })));
    assert!(!c.pages(&[]).await.unwrap().is_empty());
    assert!(!c.track_types(&[]).await.unwrap().is_empty());
    assert!(!c.reports().await.unwrap().is_empty());
    let guides = c.guides(&[]).await.unwrap();
    let tour = guides.iter().find(|g| g.steps.len() > 1).unwrap();
    assert!(tour.last_step_id().is_some());
    let nps = guides.iter().find(|g| g.polls.len() == 2).unwrap();
    assert_eq!(nps.polls[0].poll_type(), Some("NPSRating"));

    let (vid, aid) = e.state.with_store_read(|s| (s.visitors[0].id.to_string(), s.accounts[0].id.to_string()));
    let v = c.visitor(&vid).await.unwrap();
    assert_eq!(v.account_ids, vec![aid.clone()]);
    assert!(metadata_value(&v.metadata, "auto", "lastupdated").is_some());
    let a = c.account(&aid).await.unwrap();
    assert_eq!(metadata_value(&a.metadata, "auto", "id").and_then(|x| x.as_str()), Some(aid.as_str()));
    assert!(matches!(c.account("no-such").await, Err(Error::NotFound { .. })));

    let (hv, day) = e.state.with_store_read(|s| {
        let t = &s.feature_rows;
        (s.visitors[t.visitor(0) as usize].id.to_string(), t.ts(0) - t.ts(0).rem_euclid(86_400_000))
    });
    let h = c.visitor_history(&hv, day).await.unwrap();
    assert!(h.iter().any(|i| i.feature_id.is_some()));

    let schema = c.metadata_schema(Kind::Account).await.unwrap();
    assert_eq!(schema["custom"]["sfdcaccountid"].field_type, "string");
    assert_eq!(schema["auto"]["lastupdated"].field_type, "time");
}

#[tokio::test]
async fn bad_key_is_forbidden_and_not_retried() {
    let e = emulator().await;
    let c = crate::client_for(&e, "wrong-key");
    let err = c.metadata_schema(Kind::Visitor).await.unwrap_err();
    assert!(matches!(err, Error::Forbidden { .. }), "{err}");
    assert!(!err.is_retryable());
    assert_eq!(e.state.usage().by_status.get(&403), Some(&1));
    // A region suffix on the key is accepted.
    assert!(crate::client_for(&e, "emulator-integration-key.eu").features(&[]).await.is_ok());
}
