//! End-to-end tests of the emulator over real HTTP on loopback.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use serde_json::{Value as J, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

const KEY: &str = DEFAULT_INTEGRATION_KEY;

fn gen_config() -> GenConfig {
    GenConfig { seed: 7, accounts: 40, days: 20, ..GenConfig::default() }
}

async fn start_default() -> Running {
    start_for_tests(PendoConfig::default(), &gen_config()).await.unwrap()
}

async fn agg(base: &str, pipeline: J) -> (u16, J) {
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/aggregation"))
        .header("X-Pendo-Integration-Key", KEY)
        .json(&json!({"response": {"mimeType": "application/json"}, "request": {"pipeline": pipeline}}))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let text = r.text().await.unwrap();
    (status, serde_json::from_str(&text).unwrap_or(J::String(text)))
}

async fn get(base: &str, path: &str, key: Option<&str>) -> reqwest::Response {
    let mut r = reqwest::Client::new().get(format!("{base}{path}"));
    if let Some(k) = key {
        r = r.header("x-pendo-integration-key", k);
    }
    r.send().await.unwrap()
}

#[tokio::test]
async fn unknown_routes_and_auth() {
    let e = start_default().await;
    let r = get(&e.base_url, "/api/v1/nothing", Some(KEY)).await;
    assert_eq!(r.status(), 404);
    assert!(r.headers()["content-type"].to_str().unwrap().starts_with("text/plain"));
    assert_eq!(r.bytes().await.unwrap().as_ref(), b"404 page not found\n");
    assert_eq!(get(&e.base_url, "/api/v1/visitor", Some(KEY)).await.status(), 404);
    assert_eq!(get(&e.base_url, "/api/v1/feature", None).await.status(), 403);
    assert_eq!(get(&e.base_url, "/api/v1/feature", Some("wrong")).await.status(), 403);
    assert_eq!(get(&e.base_url, "/api/v1/feature", Some("emulator-integration-key.eu")).await.status(), 200);
    assert_eq!(get(&e.base_url, "/api/v1/aggregation", Some(KEY)).await.status(), 400);
    let usage = e.state.usage();
    assert!(usage.by_status.get(&403).copied().unwrap_or(0) >= 2);
}

#[tokio::test]
async fn throttle_sends_the_reason_phrase() {
    let cfg = PendoConfig {
        faults: faults::FaultConfig {
            rules: vec![],
            rate_limit: Some(faults::RateLimit { per_second: 0.01, burst: Some(1.0), retry_after_secs: Some(2) }),
        },
        ..PendoConfig::default()
    };
    let e = start_for_tests(cfg, &gen_config()).await.unwrap();
    assert_eq!(get(&e.base_url, "/api/v1/page", Some(KEY)).await.status(), 200);
    // Raw HTTP/1.1 so the reason phrase itself is checked, as tap-pendo does.
    let mut s = tokio::net::TcpStream::connect(e.addr).await.unwrap();
    s.write_all(
        format!("GET /api/v1/page HTTP/1.1\r\nHost: x\r\nx-pendo-integration-key: {KEY}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).await.unwrap();
    assert!(out.starts_with("HTTP/1.1 429 Too Many Requests\r\n"), "{out}");
    assert!(out.to_ascii_lowercase().contains("retry-after: 2"));
}

#[tokio::test]
async fn injected_faults_expire() {
    let e = start_default().await;
    let c = reqwest::Client::new();
    c.put(format!("{}/__emulator/faults", e.base_url))
        .json(&json!({"rules": [{"pathPrefix": "/api/v1/feature", "status": 503, "times": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(get(&e.base_url, "/api/v1/feature", Some(KEY)).await.status(), 503);
    assert_eq!(get(&e.base_url, "/api/v1/feature", Some(KEY)).await.status(), 200);
}

#[tokio::test]
async fn entity_reads() {
    let e = start_default().await;
    let features: J = get(&e.base_url, "/api/v1/feature?expand=*", Some(KEY)).await.json().await.unwrap();
    let list = features.as_array().unwrap();
    assert!(list.len() > 10);
    assert_eq!(list[0]["kind"], "Feature");
    let guides: J = get(&e.base_url, "/api/v1/guide", Some(KEY)).await.json().await.unwrap();
    let nps = guides.as_array().unwrap().iter().find(|g| g["polls"].as_array().is_some_and(|p| p.len() == 2)).unwrap();
    let id = nps["id"].as_str().unwrap();
    let one: J = get(&e.base_url, &format!("/api/v1/guide?id={id}"), Some(KEY)).await.json().await.unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(get(&e.base_url, &format!("/api/v1/guide?id={id},nope"), Some(KEY)).await.status(), 404);
    let (visitor_id, account_id) =
        e.state.with_store_read(|s| (s.visitors[0].id.to_string(), s.accounts[0].id.to_string()));
    let v: J = get(&e.base_url, &format!("/api/v1/visitor/{visitor_id}"), Some(KEY)).await.json().await.unwrap();
    assert_eq!(v["id"], visitor_id.as_str());
    assert_eq!(v["accountIds"][0], account_id.as_str());
    let a: J = get(&e.base_url, &format!("/api/v1/account/{account_id}"), Some(KEY)).await.json().await.unwrap();
    assert!(a["metadata"]["auto"]["lastupdated"].is_i64());
    assert_eq!(get(&e.base_url, "/api/v1/account/nope", Some(KEY)).await.status(), 404);
    let schema: J = get(&e.base_url, "/api/v1/metadata/schema/account", Some(KEY)).await.json().await.unwrap();
    assert_eq!(schema["custom"]["sfdcaccountid"]["Type"], "string");
    let odd: J = get(&e.base_url, "/api/v1/metadata/schema/AccountMetadata", Some(KEY)).await.json().await.unwrap();
    assert_eq!(odd, json!({}));
    // History: one day of a visitor that was active.
    let (vid, day) = e.state.with_store_read(|s| {
        let t = &s.page_rows;
        (s.visitors[t.visitor(0) as usize].id.to_string(), generate::local_midnight(t.ts(0), 0))
    });
    let h: J = get(&e.base_url, &format!("/api/v1/visitor/{vid}/history?starttime={day}"), Some(KEY))
        .await
        .json()
        .await
        .unwrap();
    assert!(!h.as_array().unwrap().is_empty());
    assert!(h[0]["ts"].as_i64().unwrap() >= day);
}

#[tokio::test]
async fn tap_pendo_paging_patterns() {
    let e = start_default().await;
    let base = &e.base_url;
    // Visitors: keyset on visitorId with a count pre-check.
    let mut seen = Vec::new();
    let mut last = String::new();
    loop {
        let filter = format!("visitorId>\"{}\"", last.replace('\\', "\\\\").replace('"', "\\\""));
        let (st, out) = agg(base, json!([{"source": {"visitors": {"identified": true}}}, {"sort": ["visitorId"]}, {"filter": filter}, {"limit": 25}])).await;
        assert_eq!(st, 200, "{out}");
        let rows = out["results"].as_array().unwrap().clone();
        for r in &rows {
            assert!(r["metadata"]["auto"]["lastupdated"].is_i64());
            seen.push(r["visitorId"].as_str().unwrap().to_string());
        }
        if rows.len() < 25 {
            break;
        }
        last = seen.last().cloned().unwrap();
    }
    let identified = e.state.with_store_read(|s| s.visitors.iter().filter(|v| !store::is_anonymous(&v.id)).count());
    assert_eq!(seen.len(), identified);
    let (_, c) = agg(base, json!([{"source": {"visitors": {"identified": true}}}, {"sort": ["visitorId"]}, {"filter": "visitorId>\"\""}, {"limit": 100000}, {"count": null}])).await;
    assert_eq!(c["results"][0]["count"], identified);

    // Accounts with tap's exact body shape, including the stray request-level sort.
    let r = reqwest::Client::new()
        .post(format!("{base}/api/v1/aggregation"))
        .header("x-pendo-integration-key", KEY)
        .header("content-type", "application/json")
        .json(&json!({"response": {"mimeType": "application/json"}, "request": {"name": "all-accounts", "requestId": "all-accounts", "sort": ["accountId"],
            "pipeline": [{"source": {"accounts": {"appId": "expandAppIds(\"*\")"}}}, {"sort": ["metadata.auto.lastupdated"]}, {"filter": "metadata.auto.lastupdated>=1"}, {"limit": 100000}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let out: J = r.json().await.unwrap();
    let rows = out["results"].as_array().unwrap();
    assert_eq!(rows.len(), 40);
    let ts: Vec<i64> = rows.iter().map(|r| r["metadata"]["auto"]["lastupdated"].as_i64().unwrap()).collect();
    assert!(ts.windows(2).all(|w| w[0] <= w[1]));

    // Events with tap's body: every row carries `day`.
    let first = e.state.now_ms() - 10 * store::DAY_MS;
    let (st, out) = agg(base, json!([{"source": {"events": {"appId": ["-323232"]}, "timeSeries": {"period": "dayRange", "first": first, "last": "now()"}}}, {"sort": ["day"]}, {"filter": format!("day>={first}")}, {"limit": 100000}])).await;
    assert_eq!(st, 200);
    let rows = out["results"].as_array().unwrap();
    assert!(!rows.is_empty());
    assert!(rows.iter().all(|r| r["day"].is_i64() && r["numEvents"].is_i64() && r["pageId"].is_string()));
    // Poll events keyed on browserTime.
    let (st, out) = agg(base, json!([{"source": {"pollEvents": {"appId": "expandAppIds(\"*\")"}, "timeSeries": {"period": "dayRange", "first": 1, "last": "now()"}}}, {"sort": ["browserTime"]}, {"filter": "browserTime>=1"}, {"limit": 100000}])).await;
    assert_eq!(st, 200);
    assert!(out["results"].as_array().unwrap().iter().all(|r| r["browserTime"].is_i64() && r["pollId"].is_string()));
}

#[tokio::test]
async fn operators_and_errors() {
    let e = start_default().await;
    let base = &e.base_url;
    let ts = json!({"period": "dayRange", "first": "now()", "count": -20});
    let (st, out) = agg(
        base,
        json!([
            {"source": {"events": null, "timeSeries": ts}},
            {"identified": "visitorId"},
            {"group": {"group": ["accountId", "visitorId"], "fields": [{"n": {"count": null}}]}},
            {"group": {"group": ["accountId"], "fields": {"visitors": {"count": "visitorId"}, "rows": {"sum": "n"}}}},
            {"sort": ["-visitors", "accountId"]}, {"limit": 3}
        ]),
    )
    .await;
    assert_eq!(st, 200, "{out}");
    let rows = out["results"].as_array().unwrap();
    assert!(rows.len() <= 3 && !rows.is_empty());
    assert!(rows.windows(2).all(|w| w[0]["visitors"].as_i64() >= w[1]["visitors"].as_i64()));
    // eval, select, unwind, bulkExpand, reduce, merge.
    let (st, out) = agg(
        base,
        json!([
            {"source": {"guides": null}},
            {"filter": "len(polls) == 2"},
            {"select": {"p1": "polls[0].id", "p2": "polls[1].id", "name": "name"}}
        ]),
    )
    .await;
    assert_eq!(st, 200);
    assert!(out["results"][0]["p1"].is_string());
    let (st, out) = agg(base, json!([
        {"source": {"visitors": null}},
        {"identified": "visitorId"},
        {"eval": {"accountId": "metadata.auto.accountid", "x.y": "1 + 1"}},
        {"bulkExpand": {"account": {"account": "accountId"}}},
        {"filter": "account.auto.id == accountId && x.y == 2"},
        {"eval": {"ids": "metadata.auto.accountids"}},
        {"unwind": {"field": "ids", "keepEmpty": true}},
        {"reduce": {"n": {"count": "visitorId"}, "first": {"first": "visitorId"}, "mx": {"max": "metadata.auto.lastvisit"}}}
    ])).await;
    assert_eq!(st, 200, "{out}");
    assert!(out["results"][0]["n"].as_i64().unwrap() > 0);
    let (st, out) = agg(
        base,
        json!([
            {"source": {"accounts": null}},
            {"merge": {"fields": ["accountId"], "mappings": {"visitorCount": "n"}, "pipeline": [
                {"source": {"visitors": null}}, {"eval": {"accountId": "metadata.auto.accountid"}},
                {"group": {"group": ["accountId"], "fields": {"n": {"count": "visitorId"}}}}]}},
            {"filter": "visitorCount > 0"}, {"count": null}
        ]),
    )
    .await;
    assert_eq!(st, 200, "{out}");
    assert_eq!(out["results"][0]["count"], 40);
    let (st, out) = agg(base, json!([
        {"spawn": [
            [{"source": {"visitors": null}}, {"select": {"visitorId": "visitorId", "a": "1"}}],
            [{"source": {"visitors": null}}, {"identified": "visitorId"}, {"select": {"visitorId": "visitorId", "b": "2"}}]
        ]},
        {"join": {"fields": ["visitorId"], "width": 2}},
        {"filter": "a == 1 && b == 2"}, {"count": null}
    ])).await;
    assert_eq!(st, 200, "{out}");
    assert!(out["results"][0]["count"].as_i64().unwrap() > 0);
    let (st, out) = agg(
        base,
        json!([{"source": {"visitors": null}}, {"segment": {"id": "seg-enterprise-users"}}, {"count": null}]),
    )
    .await;
    assert_eq!(st, 200, "{out}");
    // Errors: 400 with a message, never a panic.
    for bad in [
        json!([{"source": {"visitors": null}}, {"filter": "visitorId > \"abc"}]),
        json!([{"source": {"visitors": null}}, {"frobnicate": 1}]),
        json!([{"source": {"nosuch": null}}]),
        json!([{"source": {"events": null}}]),
        json!([{"source": {"events": null, "timeSeries": {"period": "yearRange", "first": 1, "count": 1}}}]),
        json!([{"filter": "true"}]),
        json!([]),
        json!([{"source": {"visitors": null}}, {"limit": -1}]),
        json!([{"source": {"visitors": null}}, {"group": {"group": ["x"], "fields": {"y": {"median": "z"}}}}]),
        json!([{"source": {"visitors": null}}, {"segment": {"id": "nope"}}]),
    ] {
        let (st, out) = agg(base, bad.clone()).await;
        assert_eq!(st, 400, "{bad} -> {out}");
        assert!(!out.as_str().unwrap_or("x").is_empty());
    }
    let c = reqwest::Client::new();
    for body in [json!({"request": {}}), json!({"pipeline": []}), json!([1])] {
        let r = c
            .post(format!("{base}/api/v1/aggregation"))
            .header("x-pendo-integration-key", KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 422, "{body}");
    }
    let r = c
        .post(format!("{base}/api/v1/aggregation"))
        .header("x-pendo-integration-key", KEY)
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

#[tokio::test]
async fn metadata_writes_are_visible_and_counted() {
    let e = start_default().await;
    let base = &e.base_url;
    let c = reqwest::Client::new();
    let ids: Vec<String> = e.state.with_store_read(|s| s.accounts.iter().take(2).map(|a| a.id.to_string()).collect());
    let body = json!([
        {"accountId": ids[0], "values": {"sfdcaccountid": "001Dn0000000001AAA", "arr": 125000}},
        {"accountId": ids[1], "values": {"arr": "not a number"}},
        {"accountId": "does-not-exist", "values": {"plan": "pro"}}
    ]);
    let r: J = c
        .post(format!("{base}/api/v1/metadata/account/custom/value"))
        .header("x-pendo-integration-key", KEY)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r, json!({"total": 3, "updated": 1, "failed": 1, "missing": ["does-not-exist"]}));
    let (_, out) =
        agg(base, json!([{"source": {"accounts": null}}, {"filter": format!("accountId == \"{}\"", ids[0])}])).await;
    assert_eq!(out["results"][0]["metadata"]["custom"]["sfdcaccountid"], "001Dn0000000001AAA");
    assert!(out["results"][0]["metadata"]["auto"]["lastupdated"].as_i64().unwrap() >= e.state.now_ms() - 60_000);
    // create=true creates the missing account.
    let r: J = c
        .post(format!("{base}/api/v1/metadata/account/custom/value?create=true"))
        .header("x-pendo-integration-key", KEY)
        .json(&json!([{"accountId": "brand-new", "values": {"plan": "pro"}}]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["updated"], 1);
    // Single value GET/PUT; read-only key is refused.
    let url = format!("{base}/api/v1/metadata/account/custom/value/brand-new/plan");
    assert_eq!(
        c.put(&url).header("x-pendo-integration-key", KEY).body("\"enterprise\"").send().await.unwrap().status(),
        200
    );
    let v: J = c.get(&url).header("x-pendo-integration-key", KEY).send().await.unwrap().json().await.unwrap();
    assert_eq!(v, json!("enterprise"));
    assert_eq!(
        c.put(&url)
            .header("x-pendo-integration-key", DEFAULT_READONLY_KEY)
            .body("\"x\"")
            .send()
            .await
            .unwrap()
            .status(),
        403
    );
    // Field creation makes a new custom field writable.
    let r = c
        .post(format!("{base}/api/v1/metadata/schema/account/custom"))
        .header("x-pendo-integration-key", KEY)
        .json(&json!([{"name": "healthscore", "displayname": "Health", "type": "number"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r: J = c
        .post(format!("{base}/api/v1/metadata/account/custom/value"))
        .header("x-pendo-integration-key", KEY)
        .json(&json!([{"accountId": "brand-new", "values": {"healthscore": 71.5}}]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["updated"], 1);
}

#[tokio::test]
async fn webhooks_are_signed_retried_and_recorded() {
    use axum::routing::post;
    type Hits = Arc<parking_lot::Mutex<Vec<(Option<String>, Vec<u8>)>>>;
    let hits: Hits = Arc::default();
    let h = hits.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let h = h.clone();
            async move {
                let mut l = h.lock();
                l.push((
                    headers.get("x-pendo-signature").and_then(|v| v.to_str().ok()).map(str::to_string),
                    body.to_vec(),
                ));
                // Fail the first delivery to exercise retries.
                if l.len() == 1 { axum::http::StatusCode::SERVICE_UNAVAILABLE } else { axum::http::StatusCode::OK }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });

    let e = start_default().await;
    let c = reqwest::Client::new();
    let r = c
        .put(format!("{}/__emulator/webhooks", e.base_url))
        .json(&json!({"url": format!("http://{addr}/hook"), "secret": "s3cret", "backoffMs": 10}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (vid, aid) = e.state.with_store_read(|s| (s.visitors[0].id.to_string(), s.accounts[0].id.to_string()));
    let polls_before = e
        .state
        .with_store_read(|s| s.guide_events.iter().filter(|g| g.kind == store::GuideEventType::PollResponse).count());
    let r: J = c
        .post(format!("{}/__emulator/webhooks/fire", e.base_url))
        .json(&json!({"event": "npsSubmitted", "visitorId": vid, "accountId": aid, "rating": 3, "reason": "slow"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let uid = r["uniqueId"].as_str().unwrap().to_string();
    assert_eq!(uid.len(), 40);
    for _ in 0..100 {
        if hits.lock().len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let l = hits.lock().clone();
    assert_eq!(l.len(), 2);
    let (sig, body) = &l[1];
    assert_eq!(sig.as_deref(), Some(webhooks::sign("s3cret", body).as_str()));
    let payload: J = serde_json::from_slice(body).unwrap();
    assert_eq!(payload["event"], "npsSubmitted");
    assert_eq!(payload["properties"]["nps"]["rating"], 3);
    assert_eq!(payload["uniqueId"], uid.as_str());
    // The answer is also visible to polling.
    let polls_after = e
        .state
        .with_store_read(|s| s.guide_events.iter().filter(|g| g.kind == store::GuideEventType::PollResponse).count());
    assert_eq!(polls_after, polls_before + 2);
    let d: J = c.get(format!("{}/__emulator/webhooks", e.base_url)).send().await.unwrap().json().await.unwrap();
    assert_eq!(d["deliveries"][0]["delivered"], true);
    assert_eq!(d["deliveries"][0]["attempts"], 2);
}

#[tokio::test]
async fn admin_seed_reset_and_org() {
    let e = start_for_tests(PendoConfig::default(), &GenConfig { accounts: 5, ..gen_config() }).await.unwrap();
    let c = reqwest::Client::new();
    let base = &e.base_url;
    let r = c.post(format!("{base}/__emulator/reset")).body("").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let org: J = c.get(format!("{base}/__emulator/salesforce-org")).send().await.unwrap().json().await.unwrap();
    assert!(org["Account"].as_array().unwrap().len() >= 4);
    let seed = json!({
        "accounts": [{"accountId": "acme", "metadata": {"agent": {"name": "Acme"}}}],
        "visitors": [{"visitorId": "ann@acme.com", "accountId": "acme", "metadata": {"agent": {"email": "ann@acme.com"}}}],
        "features": [{"id": "featX", "name": "X"}],
        "events": [{"kind": "feature", "id": "featX", "visitorId": "ann@acme.com", "accountId": "acme", "time": e.state.now_ms() - 3_600_000, "numEvents": 4}]
    });
    let r = c.post(format!("{base}/__emulator/seed")).json(&seed).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let (_, out) = agg(base, json!([{"source": {"featureEvents": {"featureId": "featX"}, "timeSeries": {"period": "hourRange", "first": "now()", "count": -3}}}])).await;
    assert_eq!(out["results"][0]["numEvents"], 4);
    assert!(out["results"][0]["hour"].is_i64());
    let bad = c
        .post(format!("{base}/__emulator/seed"))
        .json(&json!({"events": [{"id": "nope", "visitorId": "x", "accountId": "y", "time": 1}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let accounts: J = c.get(format!("{base}/__emulator/accounts")).send().await.unwrap().json().await.unwrap();
    assert!(accounts.as_array().unwrap().iter().any(|a| a["accountId"] == "acme"));
    let r: J = c
        .put(format!("{base}/__emulator/clock"))
        .json(&json!({"now": 1_700_000_000_000i64}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["now"], 1_700_000_000_000i64);
}

#[test]
fn fast_group_matches_general_group() {
    let g = generate::generate(&GenConfig { anchor_day_ms: Some(1_767_225_600_000), ..gen_config() });
    let store = g.store;
    let pipeline = |extra: J| {
        json!([
            {"source": {"featureEvents": null, "timeSeries": {"period": "dayRange", "first": 1_767_225_600_000i64 - 15 * store::DAY_MS, "count": 15}}},
            extra,
            {"group": {"group": ["accountId", "featureId"], "fields": {"clicks": {"sum": "numEvents"}, "users": {"count": "visitorId"}, "days": {"count": "day"}, "rows": {"count": null}, "first": {"first": "visitorId"}, "mx": {"max": "numMinutes"}}}},
            {"sort": ["accountId", "featureId"]}
        ])
    };
    let now = 1_767_225_600_000;
    // The `eval` turns rows into documents, which forces the general path.
    let (_, fast, _, _) = aggregation::execute(&store, &pipeline(json!({"cat": null})), now, 0, true).unwrap();
    let (_, slow, _, _) = aggregation::execute(&store, &pipeline(json!({"eval": {"z": "1"}})), now, 0, true).unwrap();
    let ctx = aggregation::row::Ctx {
        store: &store,
        period: aggregation::row::Period::Day,
        tz_ms: 0,
        now,
        app_ids: vec![],
        count_distinct: true,
    };
    let a: Vec<J> = fast.iter().map(|r| val::Val::Obj(r.materialize(&ctx)).to_json()).collect();
    let b: Vec<J> = slow.iter().map(|r| val::Val::Obj(r.materialize(&ctx)).to_json()).collect();
    assert!(!a.is_empty());
    assert_eq!(a, b);

    // Guide events, grouped by the event's own time too (the last time each visitor saw each
    // guide, as kept engagement asks).
    let guides = |extra: J| {
        json!([
            {"source": {"guideEvents": null, "timeSeries": {"period": "dayRange", "first": 1_767_225_600_000i64 - 15 * store::DAY_MS, "count": 15}}},
            extra,
            {"group": {"group": ["accountId", "visitorId", "guideId", "type"], "fields": {"at": {"max": "browserTime"}, "since": {"min": "guideTimestamp"}, "n": {"count": null}}}},
            {"sort": ["accountId", "visitorId", "guideId", "type"]}
        ])
    };
    let (_, fast, _, _) = aggregation::execute(&store, &guides(json!({"cat": null})), now, 0, true).unwrap();
    let (_, slow, _, _) = aggregation::execute(&store, &guides(json!({"eval": {"z": "1"}})), now, 0, true).unwrap();
    let a: Vec<J> = fast.iter().map(|r| val::Val::Obj(r.materialize(&ctx)).to_json()).collect();
    let b: Vec<J> = slow.iter().map(|r| val::Val::Obj(r.materialize(&ctx)).to_json()).collect();
    assert!(a.len() > 10 && a.iter().all(|r| r["at"].is_i64()), "{:?}", a.first());
    assert_eq!(a, b);
}

#[tokio::test]
async fn extreme_inputs_answer_instead_of_panicking() {
    let e = start_for_tests(PendoConfig::default(), &GenConfig { accounts: 3, ..gen_config() }).await.unwrap();
    let c = reqwest::Client::new();
    let base = &e.base_url;
    let seed = json!({
        "accounts": [{"accountId": "a"}],
        "visitors": [{"visitorId": "v", "accountId": "a"}],
        "features": [{"id": "f"}],
        "events": [{"kind": "feature", "id": "f", "visitorId": "v", "accountId": "a", "time": i64::MAX, "numEvents": u64::MAX},
                   {"kind": "feature", "id": "f", "visitorId": "v", "accountId": "a", "time": i64::MIN}]
    });
    assert_eq!(c.post(format!("{base}/__emulator/seed")).json(&seed).send().await.unwrap().status(), 200);
    for ts in [
        json!({"period": "dayRange", "first": i64::MIN, "last": i64::MAX}),
        json!({"period": "hourRange", "first": i64::MAX, "count": i64::MAX}),
        json!({"period": "dayRange", "first": "now() * now()", "count": -5}),
    ] {
        let (st, out) = agg(base, json!([{"source": {"featureEvents": null, "timeSeries": ts}}, {"eval": {"x": "lastTime + 1"}}, {"group": {"group": ["day", "hour"], "fields": {"n": {"sum": "numEvents"}}}}])).await;
        assert!(st == 200 || st == 400, "{st} {out}");
    }
    let r = c
        .get(format!("{base}/api/v1/visitor/v/history?starttime={}", i64::MAX - 1))
        .header("x-pendo-integration-key", KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    c.put(format!("{base}/__emulator/webhooks"))
        .json(&json!({"url": "http://127.0.0.1:9/x", "maxAttempts": 1}))
        .send()
        .await
        .unwrap();
    let r = c
        .post(format!("{base}/__emulator/webhooks/fire"))
        .json(&json!({"event": "npsSubmitted", "visitorId": "v", "accountId": "a", "rating": 5, "time": i64::MAX}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    c.put(format!("{base}/__emulator/clock")).json(&json!({"now": i64::MAX})).send().await.unwrap();
    let (st, _) = agg(
        base,
        json!([{"source": {"events": null, "timeSeries": {"period": "dayRange", "first": "now()", "count": 3}}}]),
    )
    .await;
    assert!(st == 200 || st == 400);
}

/// The generated org must load into the Salesforce emulator through its admin API, so that the
/// two emulators describe one world.
#[tokio::test]
async fn generated_org_seeds_the_salesforce_emulator() {
    let gc = GenConfig { accounts: 200, ..gen_config() };
    let pendo = start_for_tests(PendoConfig::default(), &gc).await.unwrap();
    let sf = crate::salesforce::spawn(crate::salesforce::Config::default(), false).await.unwrap();
    let c = reqwest::Client::new();
    let org: J =
        c.get(format!("{}/__emulator/salesforce-org", pendo.base_url)).send().await.unwrap().json().await.unwrap();
    for sobject in ["User", "Account", "Contact", "Opportunity"] {
        let records = &org[sobject];
        assert!(!records.as_array().unwrap().is_empty(), "{sobject}");
        let r = c.post(format!("{}/__emulator/records/{sobject}", sf.base_url)).json(records).send().await.unwrap();
        let status = r.status();
        let body = r.text().await.unwrap();
        assert!(status.is_success(), "{sobject}: {status} {body}");
    }
    let accounts: J =
        c.get(format!("{}/__emulator/records/Account", sf.base_url)).send().await.unwrap().json().await.unwrap();
    let n = accounts.as_array().map_or(0, Vec::len);
    assert_eq!(n, org["Account"].as_array().unwrap().len());
}

mod fuzz {
    use super::*;
    use proptest::prelude::*;

    fn stage() -> impl Strategy<Value = J> {
        let exprs = prop::sample::select(vec![
            "visitorId > \"\"",
            "day >= 0",
            "numEvents * 2 > 3 || !isNull(pageId)",
            "a.b[0].c == `x`",
            "\"unterminated",
            "1 / 0",
            "len(metadata)",
            "now() - now()",
            "((((",
            "visitorId == null",
            "-",
            "date(1,2)",
            "x[-1]",
            "9999999999999999999999",
        ]);
        let fields = prop::sample::select(vec![
            "visitorId",
            "accountId",
            "day",
            "numEvents",
            "metadata.auto.id",
            "x",
            "polls[0].id",
            "",
            "a..b",
        ]);
        let aggs = prop::sample::select(vec!["sum", "count", "first", "last", "list", "min", "max", "avg", "median"]);
        prop_oneof![
            exprs.clone().prop_map(|e| json!({"filter": e})),
            (fields.clone(), exprs.clone()).prop_map(|(f, e)| json!({"eval": {f: e}})),
            (fields.clone(), exprs).prop_map(|(f, e)| json!({"select": {f: e}})),
            fields.clone().prop_map(|f| json!({"sort": [f, format!("-{f}")]})),
            any::<i64>().prop_map(|n| json!({"limit": n})),
            fields.clone().prop_map(|f| json!({"identified": f})),
            (fields.clone(), fields.clone(), aggs.clone())
                .prop_map(|(k, f, a)| json!({"group": {"group": [k], "fields": {"out": {a: f}}}})),
            (fields.clone(), aggs).prop_map(|(f, a)| json!({"reduce": [{"out": {a: f}}]})),
            Just(json!({"count": null})),
            (fields.clone(), any::<bool>()).prop_map(|(f, k)| json!({"unwind": {"field": f, "keepEmpty": k}})),
            fields.clone().prop_map(|f| json!({"bulkExpand": {"account": {"account": f}}})),
            fields
                .clone()
                .prop_map(|f| json!({"merge": {"fields": [f], "pipeline": [{"source": {"accounts": null}}]}})),
            Just(json!({"segment": {"id": "seg-enterprise-users"}})),
            Just(json!({"cat": null})),
            Just(json!({"join": {"fields": ["visitorId"]}})),
            Just(json!({"fork": [[{"count": null}], [{"limit": 1}]]})),
            Just(json!({"nope": 1})),
            Just(json!([1, 2])),
            Just(json!({})),
        ]
    }

    fn source() -> impl Strategy<Value = J> {
        let ts = prop_oneof![
            Just(json!({"period": "dayRange", "first": "now()", "count": -5})),
            Just(json!({"period": "hourRange", "first": 0, "last": "now()"})),
            any::<i64>().prop_map(|n| json!({"period": "dayRange", "first": n, "count": n})),
            Just(json!({"period": "dayRange"})),
            Just(json!(null)),
        ];
        let names = prop::sample::select(vec![
            "visitors",
            "accounts",
            "features",
            "pages",
            "guides",
            "trackTypes",
            "events",
            "featureEvents",
            "pageEvents",
            "trackEvents",
            "guideEvents",
            "pollEvents",
            "pollsSeenEver",
            "bogus",
        ]);
        (names, ts).prop_map(|(n, ts)| json!({"source": {n: null, "timeSeries": ts}}))
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 300, .. ProptestConfig::default() })]
        #[test]
        fn random_pipelines_never_panic(src in source(), stages in prop::collection::vec(stage(), 0..6)) {
            static STORE: std::sync::OnceLock<Store> = std::sync::OnceLock::new();
            let store = STORE.get_or_init(|| generate::generate(&GenConfig { accounts: 5, anchor_day_ms: Some(1_767_225_600_000), ..gen_config() }).store);
            let mut p = vec![src];
            p.extend(stages);
            let _ = aggregation::execute(store, &J::Array(p), 1_767_225_600_000, 0, true);
        }
    }
}

/// Pendo's event sources sum events and minutes by day for `dayRange` (one row per visitor ×
/// account × page × day) and by hour for `hourRange`; the stored rollups are hourly.
#[tokio::test]
async fn day_range_rows_are_summed_by_day_and_hour_range_rows_by_hour() {
    let e = start_for_tests(PendoConfig::default(), &GenConfig { accounts: 2, ..gen_config() }).await.unwrap();
    let c = reqwest::Client::new();
    let base = &e.base_url;
    let day = 1_700_000_000_000i64.div_euclid(store::DAY_MS) * store::DAY_MS;
    let h = store::HOUR_MS;
    let ev = |page: &str, visitor: &str, t: i64, n: u64, m: u64| json!({"kind": "page", "id": page, "visitorId": visitor, "accountId": "acme", "time": t, "numEvents": n, "numMinutes": m});
    let seed = json!({
        "accounts": [{"accountId": "acme"}],
        "visitors": [{"visitorId": "ann", "accountId": "acme"}, {"visitorId": "bob", "accountId": "acme"}],
        "pages": [{"id": "pageA", "name": "A"}, {"id": "pageB", "name": "B"}],
        "events": [
            ev("pageA", "ann", day + 9 * h, 3, 2),
            ev("pageA", "ann", day + 14 * h + 60_000, 2, 5),
            ev("pageB", "ann", day + 10 * h, 1, 1),
            ev("pageA", "bob", day + 11 * h, 7, 3),
            ev("pageA", "ann", day + 24 * h + 9 * h, 4, 1),
        ]
    });
    let r = c.post(format!("{base}/__emulator/seed")).json(&seed).send().await.unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let window = |period: &str, count: i64| json!({"period": period, "first": day, "count": count});
    let source = |period: &str, count: i64| json!({"source": {"pageEvents": {"pageId": "pageA"}, "timeSeries": window(period, count)}});

    let (s, out) = agg(base, json!([source("dayRange", 1), {"sort": ["visitorId"]}])).await;
    assert_eq!(s, 200, "{out}");
    let rows = out["results"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "{out}");
    assert_eq!(
        (rows[0]["visitorId"].clone(), rows[0]["numEvents"].clone(), rows[0]["numMinutes"].clone()),
        (json!("ann"), json!(5), json!(7))
    );
    assert_eq!(rows[0]["day"], json!(day));
    // The store keeps hours: the later hour's rollup ends five minutes in.
    assert_eq!(rows[0]["lastTime"], json!(day + 14 * h + 5 * 60_000));
    assert_eq!(rows[1]["numEvents"], json!(7));

    // Row counts, limit and min/max over raw rows see days; totals are unchanged.
    let (_, out) = agg(base, json!([source("dayRange", 2), {"group": {"group": ["visitorId"], "fields": {"rows": {"count": null}, "most": {"max": "numEvents"}, "total": {"sum": "numEvents"}}}}, {"sort": ["visitorId"]}])).await;
    assert_eq!(out["results"][0]["rows"], json!(2), "{out}");
    assert_eq!(out["results"][0]["most"], json!(5));
    assert_eq!(out["results"][0]["total"], json!(9));
    let (_, out) = agg(base, json!([source("dayRange", 2), {"limit": 2}])).await;
    assert_eq!(out["results"].as_array().unwrap().len(), 2);
    let (_, out) = agg(base, json!([{"source": {"events": null, "timeSeries": window("dayRange", 1)}}])).await;
    assert_eq!(out["results"].as_array().unwrap().len(), 3, "ann×A, ann×B, bob×A: {out}");

    // hourRange keeps one row per stored hour.
    let (_, out) = agg(base, json!([source("hourRange", 24), {"sort": ["hour"]}])).await;
    let rows = out["results"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{out}");
    assert_eq!(rows[0]["numEvents"], json!(3));
    assert_eq!(rows[0]["hour"], json!(day + 9 * h));
}
