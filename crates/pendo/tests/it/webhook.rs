use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use pendo::webhook::{EventKind, WebhookEvent, verify_signature};
use serde_json::json;

use crate::emulator;

#[tokio::test]
async fn receives_verifies_and_dedupes() {
    type Seen = Arc<parking_lot_free::Mutex<Vec<(bool, WebhookEvent)>>>;
    let seen: Seen = Arc::default();
    let s = seen.clone();
    let app = axum::Router::new().route(
        "/pendo",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let s = s.clone();
            async move {
                let sig = headers.get("x-pendo-signature").and_then(|v| v.to_str().ok()).unwrap_or("");
                let ok = verify_signature(b"topsecret", &body, sig);
                if let Ok(ev) = WebhookEvent::parse(&body) {
                    s.lock().push((ok, ev));
                }
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let e = emulator().await;
    let http = reqwest::Client::new();
    http.put(format!("{}/__emulator/webhooks", e.base_url))
        .json(&json!({"url": format!("http://{addr}/pendo"), "secret": "topsecret", "backoffMs": 10}))
        .send()
        .await
        .unwrap();
    let (vid, aid) = e.state.with_store_read(|s| (s.visitors[2].id.to_string(), s.accounts[1].id.to_string()));
    for body in [
        json!({"event": "npsSubmitted", "visitorId": vid, "accountId": aid, "rating": 2, "reason": "too slow", "repeat": 2}),
        json!({"event": "pollSubmitted", "visitorId": vid, "accountId": aid, "response": "yes"}),
        json!({"event": "guideDisplayed", "visitorId": vid, "accountId": aid}),
        json!({"event": "visitorFirstSeen", "visitorId": "newbie@example.com", "accountId": aid}),
        json!({"event": "accountFirstSeen", "accountId": "brand-new-account"}),
    ] {
        let r = http.post(format!("{}/__emulator/webhooks/fire", e.base_url)).json(&body).send().await.unwrap();
        assert_eq!(r.status(), 202, "{body}");
    }
    for _ in 0..200 {
        if seen.lock().len() >= 6 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let got = seen.lock().clone();
    assert_eq!(got.len(), 6);
    assert!(got.iter().all(|(ok, _)| *ok), "every signature verifies");
    let unique: HashSet<&str> = got.iter().map(|(_, e)| e.unique_id.as_str()).collect();
    assert_eq!(unique.len(), 5, "the repeated delivery shares its uniqueId");
    let nps = got.iter().find(|(_, e)| e.kind() == EventKind::NpsSubmitted).unwrap();
    assert_eq!(nps.1.properties.nps.as_ref().unwrap().rating, 2);
    assert!(got.iter().any(|(_, e)| e.kind() == EventKind::AccountFirstSeen && e.visitor_id.is_none()));
    // The NPS answer is also visible to the polling path.
    let c = crate::client(&e);
    let v = c.visitor("newbie@example.com").await.unwrap();
    assert_eq!(v.account_ids, vec![aid]);
}

/// A tiny mutex so the test needs no extra dependency.
mod parking_lot_free {
    #[derive(Default)]
    pub struct Mutex<T>(std::sync::Mutex<T>);
    impl<T> Mutex<T> {
        pub fn lock(&self) -> std::sync::MutexGuard<'_, T> {
            self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
        }
    }
}
