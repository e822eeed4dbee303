//! The daemon, as a process: schedules fire, `/healthz` reports them, and SIGTERM lets the run
//! in flight finish and record itself before the process exits 0.

use super::support::{bin, emulate};

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// A plain HTTP/1.1 GET, parsed as JSON (`null` when anything fails: the caller retries).
fn get_json(base: &str, path: &str) -> serde_json::Value {
    serde_json::from_str(&get(base, path)).unwrap_or_default()
}

/// A plain HTTP/1.1 POST: (status, body).
fn post(base: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let mut head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    // A refused huge body may be cut off mid-write: the answer is what counts.
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let _ = stream.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

/// A plain HTTP/1.1 GET's body ("" when anything fails).
fn get(base: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let host = base.trim_start_matches("http://");
    let Ok(mut stream) = std::net::TcpStream::connect(host) else { return String::new() };
    let request = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default()
}

/// `name{labels} value` lines of a Prometheus text page, by series.
fn series(text: &str) -> std::collections::HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
        .collect()
}

#[test]
fn schedules_fire_and_sigterm_loses_nothing() {
    let emu = emulate(&["--seed-salesforce", "--days", "30", "--accounts", "80"]);
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usagesync.yaml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()))
        // Every two seconds (croner takes an optional seconds field).
        .replace("schedule: \"0 6 * * *\"", "schedule: \"*/2 * * * * *\"");
    std::fs::write(&cfg, text).unwrap();

    let mut daemon = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--listen", "127.0.0.1:0", "--grace-seconds", "30"])
        .env("USAGESYNC_LOG", "info")
        .env("USAGESYNC_LOG_FORMAT", "json")
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let first = BufReader::new(daemon.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();

    // Wait (up to 60 s) until /healthz reports a finished scheduled run.
    let started = Instant::now();
    let health = loop {
        let body = get_json(&url, "/healthz");
        if body["workflows"]["engagement"]["last_state"].is_string() {
            break body;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no run finished: {body}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(health["status"], "ok");
    assert_eq!(health["workflows"]["engagement"]["last_state"], "succeeded", "{health}");
    assert!(health["workflows"]["engagement"]["next_run"].is_string());
    let metrics = series(&get(&url, "/metrics"));

    // SIGTERM, probably mid-run: the daemon waits for it and exits 0.
    let pid = daemon.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = daemon.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{logs}");
    // Structured logs: one JSON object per event line, and no secret anywhere.
    let finished: Vec<serde_json::Value> = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|l| l["fields"]["message"] == "Run finished")
        .collect();
    assert!(!finished.is_empty(), "{logs}");
    assert_eq!(finished[0]["fields"]["workflow"], "engagement");
    assert!(!logs.contains("emulator-secret") && !logs.contains("emulator-integration-key"));

    // Every run the daemon started is finished in the store: none left running.
    let runs = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["runs", "--json"])
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .output()
        .unwrap();
    let runs: Vec<serde_json::Value> = serde_json::from_slice(&runs.stdout).unwrap();
    assert!(!runs.is_empty());
    assert!(runs.iter().all(|r| r["state"] != "running" && r["trigger"] == "schedule"), "{runs:?}");
    let written: u64 = runs.iter().filter_map(|r| r["stats"]["written"].as_u64()).sum();
    assert!(written > 50, "the first scheduled run wrote the world: {runs:?}");
    // The scrape came after the first run; later runs write nothing, so the counters agree with
    // the store's own records of the runs.
    assert_eq!(metrics.get("usagesync_records_written_total{workflow=\"engagement\"}"), Some(&(written as f64)));
    let first = runs.iter().find(|r| r["stats"]["written"].as_u64() > Some(0)).unwrap();
    for (kind, n) in first["stats"]["api_calls"].as_object().unwrap() {
        if kind != "read_limits" {
            let key = format!("usagesync_api_calls_total{{workflow=\"engagement\",kind=\"{kind}\"}}");
            assert_eq!(metrics.get(&key), Some(&n.as_f64().unwrap()), "{key}");
        }
    }
    assert!(metrics.contains_key("usagesync_api_budget_remaining"), "{metrics:?}");
    assert!(metrics.keys().any(|k| k.starts_with("usagesync_run_duration_seconds_bucket")));
}

#[test]
fn webhooks_are_verified_stored_once_and_bad_ones_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usagesync.yaml");
    // No run fires in this test (06:00 daily, first sight only schedules), so the connections
    // are never called.
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
        .unwrap()
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()))
        + "webhooks:\n  secret: { env: HOOK_SECRET }\n  max_body_bytes: 65536\n";
    std::fs::write(&cfg, text).unwrap();
    let mut daemon = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("SF_CLIENT_SECRET", "x")
        .env("PENDO_INTEGRATION_KEY", "x")
        .env("HOOK_SECRET", "hook-secret")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(daemon.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();

    let event = serde_json::json!({
        "event": "npsSubmitted", "visitorId": "v'1\\", "accountId": "acme", "timestamp": 1_764_000_000,
        "uniqueId": "0123456789abcdef0123456789abcdef01234567",
        "properties": {"nps": {"rating": 4, "reason": "slow \"exports\""}}
    });
    let body = serde_json::to_vec(&event).unwrap();
    let sign = |b: &[u8]| pendo::webhook::sign(b"hook-secret", b);
    let good = sign(&body);

    let (status, reply) = post(&url, "/webhooks/pendo", &[("X-Pendo-Signature", &good)], &body);
    assert_eq!(status, 202, "{reply}");
    let (status, reply) = post(&url, "/webhooks/pendo", &[("X-Pendo-Signature", &good)], &body);
    assert_eq!(status, 200, "a replayed uniqueId is a no-op: {reply}");
    assert!(reply.contains("duplicate"));

    let mut other = event.clone();
    other["uniqueId"] = "ffffffffffffffffffffffffffffffffffffffff".into();
    let other = serde_json::to_vec(&other).unwrap();
    let (status, reply) = post(&url, "/webhooks/pendo", &[("X-Pendo-Signature", &good)], &other);
    assert_eq!(status, 401, "a signature of another body: {reply}");
    assert!(reply.contains("does not match"));
    let (status, _) = post(&url, "/webhooks/pendo", &[], &other);
    assert_eq!(status, 401, "no signature");
    let malformed = b"{\"event\": \"npsSubmitted\", \"uniqueId\": ";
    let (status, reply) = post(&url, "/webhooks/pendo", &[("X-Pendo-Signature", &sign(malformed))], malformed);
    assert_eq!(status, 400, "{reply}");
    let huge = vec![b' '; 200_000];
    let (status, _) = post(&url, "/webhooks/pendo", &[("X-Pendo-Signature", &sign(&huge))], &huge);
    assert_eq!(status, 413);

    let metrics = series(&get(&url, "/metrics"));
    assert_eq!(metrics.get("usagesync_webhook_events_received_total"), Some(&1.0), "only the good event is kept");
    assert_eq!(metrics.get("usagesync_webhook_queue_depth"), Some(&1.0));

    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
}

/// A run still going when the grace period ends is aborted and marked `cancelled` in the store
/// (not left `running` forever), and the daemon exits 1 to say so.
#[test]
fn a_run_abandoned_after_the_grace_period_is_recorded_as_cancelled() {
    let emu = emulate(&["--seed-salesforce", "--days", "30", "--accounts", "40"]);
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());
    // Every Salesforce answer takes 3 s: a run cannot finish inside a zero grace period.
    let faults = br#"{"latencyMs":3000,"latencyShare":1.0}"#;
    let host = sf.trim_start_matches("http://");
    let (status, body) = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(host).unwrap();
        let head = format!(
            "PUT /__emulator/faults HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
            faults.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(faults).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let status: u16 = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
        (status, response)
    };
    assert_eq!(status, 200, "{body}");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usagesync.yaml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()))
        .replace("schedule: \"0 6 * * *\"", "schedule: \"*/2 * * * * *\"");
    std::fs::write(&cfg, text).unwrap();
    let with_env = |c: &mut Command| {
        c.env("SF_CLIENT_SECRET", "emulator-secret").env("PENDO_INTEGRATION_KEY", "emulator-integration-key");
    };
    let runs = || -> Vec<serde_json::Value> {
        let mut c = bin();
        c.arg("--config").arg(&cfg).args(["runs", "--json"]);
        with_env(&mut c);
        serde_json::from_slice(&c.output().unwrap().stdout).unwrap_or_default()
    };

    let mut c = bin();
    c.arg("--config").arg(&cfg).args(["run", "--listen", "127.0.0.1:0", "--grace-seconds", "0"]);
    with_env(&mut c);
    let mut daemon = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let _ = BufReader::new(daemon.stdout.take().unwrap()).lines().next();

    // Wait (up to 60 s) for the scheduled run to be recorded as started, then stop the daemon.
    let started = Instant::now();
    loop {
        if runs().iter().any(|r| r["workflow"] == "engagement" && r["state"] == "running") {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(60), "no run started: {:?}", runs());
        std::thread::sleep(Duration::from_millis(200));
    }
    let pid = daemon.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let out = daemon.wait_with_output().unwrap();
    let logs = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{logs}");

    let after = runs();
    assert!(after.iter().all(|r| r["state"] != "running"), "{after:?}");
    let cancelled: Vec<_> = after.iter().filter(|r| r["state"] == "cancelled").collect();
    assert!(!cancelled.is_empty(), "{after:?}");
    assert!(cancelled[0]["error"].as_str().unwrap().contains("abandoned"), "{:?}", cancelled[0]);
}
