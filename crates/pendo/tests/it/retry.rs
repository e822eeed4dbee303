use std::time::{Duration, Instant};

use emulator::pendo::PendoConfig;
use emulator::pendo::faults::{FaultConfig, FaultRule, RateLimit};
use pendo::{Apps, Error, Pipeline, Source};
use serde_json::json;

use crate::{client, emulator, emulator_with};

#[tokio::test]
async fn retries_5xx_then_succeeds() {
    let e = emulator().await;
    reqwest::Client::new()
        .put(format!("{}/__emulator/faults", e.base_url))
        .json(&json!({"rules": [{"pathPrefix": "/api/v1/aggregation", "status": 503, "times": 2}]}))
        .send()
        .await
        .unwrap();
    let c = client(&e);
    let r = c.aggregate(&Pipeline::from_source(Source::Accounts { apps: Apps::Default }).count()).await.unwrap();
    assert_eq!(r.results[0]["count"], 30);
    let usage = e.state.usage();
    assert_eq!(usage.by_status.get(&503), Some(&2));
}

#[tokio::test]
async fn gives_up_after_the_attempt_limit() {
    let e = emulator().await;
    reqwest::Client::new()
        .put(format!("{}/__emulator/faults", e.base_url))
        .json(&json!({"rules": [{"pathPrefix": "/api/v1/feature", "status": 502}]}))
        .send()
        .await
        .unwrap();
    let err = client(&e).features(&[]).await.unwrap_err();
    assert!(matches!(err, Error::Server { status: 502, attempts: 4, .. }), "{err}");
    assert!(err.is_retryable());
}

#[tokio::test]
async fn honours_retry_after_on_429() {
    let cfg = PendoConfig {
        faults: FaultConfig {
            rules: vec![],
            rate_limit: Some(RateLimit { per_second: 1.0, burst: Some(1.0), retry_after_secs: Some(1) }),
        },
        ..PendoConfig::default()
    };
    let e = emulator_with(cfg).await;
    let c = client(&e);
    let t = Instant::now();
    c.pages(&[]).await.unwrap();
    c.pages(&[]).await.unwrap();
    // The second call was throttled once and waited for Retry-After before succeeding.
    assert!(t.elapsed().as_millis() >= 900);
    assert!(e.state.usage().throttled >= 1);
    let _ = FaultRule {
        method: None,
        path_prefix: String::new(),
        status: 0,
        body: None,
        times: None,
        delay_ms: 0,
        cut_after_bytes: None,
    };
}

#[tokio::test]
async fn persistent_throttling_is_reported() {
    let cfg = PendoConfig {
        faults: FaultConfig {
            rules: vec![],
            rate_limit: Some(RateLimit { per_second: 0.0001, burst: Some(1.0), retry_after_secs: None }),
        },
        ..PendoConfig::default()
    };
    let e = emulator_with(cfg).await;
    let c = client(&e);
    c.pages(&[]).await.unwrap();
    let err = c.pages(&[]).await.unwrap_err();
    // Throttled for the test client's max_throttled_wait (2 s), not after 4 attempts: a 429
    // delays a request, it does not use up its attempts.
    assert!(matches!(err, Error::Throttled { attempts, .. } if attempts > 4), "{err}");
}

/// Many look-ups at once against a throttle: the shared limiter paces them and every one
/// succeeds (throttling delays, it does not fail), with 429s a small share of the calls.
#[tokio::test]
async fn concurrent_calls_under_a_throttle_all_succeed() {
    let cfg = PendoConfig {
        faults: FaultConfig {
            rules: vec![],
            rate_limit: Some(RateLimit { per_second: 20.0, burst: Some(5.0), retry_after_secs: None }),
        },
        ..PendoConfig::default()
    };
    let e = emulator_with(cfg).await;
    let c = client(&e);
    let t = Instant::now();
    let calls: Vec<_> = (0..40)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.pages(&[]).await })
        })
        .collect();
    for call in calls {
        call.await.unwrap().unwrap();
    }
    let usage = e.state.usage();
    assert!(usage.throttled >= 1, "the throttle was met");
    // The first burst meets 35 429s (5 of 40 fit the bucket); after it the pace is learnt.
    assert!(usage.throttled < 80, "the limiter slowed down instead of hammering: {} 429s", usage.throttled);
    assert!(t.elapsed() < Duration::from_secs(10), "paced near the throttle's 20/s: {:?}", t.elapsed());
}

/// A response that breaks off mid-body: a streamed read reports how many rows it handed over
/// before the break (so the caller can read on from there), and a whole read asks again.
#[tokio::test]
async fn a_body_that_breaks_off_is_reported_or_asked_for_again() {
    let e = emulator().await;
    let cut = |times: u32| {
        let url = format!("{}/__emulator/faults", e.base_url);
        async move {
            let rules = json!({"rules": [
                {"method": "POST", "pathPrefix": "/api/v1/aggregation", "status": 0, "cutAfterBytes": 1500, "times": times}
            ]});
            let resp = reqwest::Client::new().put(url).json(&rules).send().await.unwrap();
            assert!(resp.status().is_success());
        }
    };
    let c = client(&e);
    let p = Pipeline::from_source(Source::Accounts { apps: Apps::Default }).sort(&[pendo::SortKey::asc("accountId")]);
    let whole = c.aggregate(&p).await.unwrap().results;
    assert!(serde_json::to_vec(&json!({"results": whole})).unwrap().len() > 3000, "the body must outlast the cut");

    cut(1).await;
    let mut seen = Vec::new();
    let err = c
        .aggregate_each(&p, |row| {
            seen.push(row);
            Ok::<(), Error>(())
        })
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Interrupted { rows, .. } if rows == seen.len() as u64), "{err}");
    assert!(!seen.is_empty() && seen.len() < whole.len(), "{} of {}", seen.len(), whole.len());
    assert_eq!(seen[..], whole[..seen.len()]);
    assert!(err.is_retryable() && err.fault() == pendo::Fault::Remote);
    assert_eq!(err.rows_before_break(), Some(seen.len() as u64));

    // Read whole, the broken body is asked for again within the attempts.
    cut(1).await;
    assert_eq!(c.aggregate(&p).await.unwrap().results, whole);
    cut(10).await;
    let err = c.aggregate(&p).await.unwrap_err();
    assert!(matches!(err, Error::Transport { attempts: 4, .. }), "{err}");
}
