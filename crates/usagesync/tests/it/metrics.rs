//! `/metrics` after real runs that wrote some records and had others refused: every counter
//! agrees with the runs and failures the store recorded (read back with `usagesync runs` and
//! `usagesync failures`), including the per-code failures and the duration histogram.

use super::support::emulate;

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::process::{Command, Stdio};

fn http(base: &str, method: &str, path: &str, body: &str) -> (u16, String) {
    let host = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(host).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default())
}

fn series(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.rsplit_once(' ').and_then(|(k, v)| Some((k.to_owned(), v.parse().ok()?))))
        .collect()
}

fn bin() -> Command {
    let mut c = super::support::bin();
    c.env("SF_CLIENT_SECRET", "emulator-secret").env("PENDO_INTEGRATION_KEY", "emulator-integration-key");
    c
}

#[test]
fn metrics_agree_with_the_runs_and_failures_in_the_store() {
    let emu = emulate(&["--seed-salesforce", "--days", "30", "--accounts", "60"]);
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usagesync.yaml");
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()));
    std::fs::write(&cfg, text).unwrap();
    let cli = |args: &[&str]| {
        let out = bin().arg("--config").arg(&cfg).arg("--json").args(args).output().unwrap();
        assert!(matches!(out.status.code(), Some(0 | 3)), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };

    // Salesforce refuses high scores: the first run writes some records and keeps the rest.
    let rule = r#"{"name": "Score_Cap", "errorMessage": "Score too high", "errorField": "Pendo_Engagement_Score__c",
        "condition": {"field": "Pendo_Engagement_Score__c", "operator": "greaterThan", "value": 50}}"#;
    assert_eq!(http(&sf, "POST", "/__emulator/validation-rules/Account", rule).0, 200);
    let first = cli(&["sync", "engagement"]);
    assert!(first["written"].as_u64() > Some(0) && first["failed"].as_u64() > Some(0), "{first}");
    let second = cli(&["sync", "engagement"]);
    assert_eq!(second["written"], 0, "nothing new to write");

    let mut daemon = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let line = BufReader::new(daemon.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = line.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    let (status, text) = http(&url, "GET", "/metrics", "");
    assert_eq!(status, 200);
    let m = series(&text);

    let runs = cli(&["runs"]);
    let runs = runs.as_array().unwrap();
    let mut by_state: HashMap<String, f64> = HashMap::new();
    let (mut written, mut failed) = (0.0, 0.0);
    let mut calls: HashMap<String, f64> = HashMap::new();
    for r in runs {
        *by_state.entry(r["state"].as_str().unwrap().to_owned()).or_default() += 1.0;
        written += r["stats"]["written"].as_f64().unwrap_or(0.0);
        failed += r["stats"]["failed"].as_f64().unwrap_or(0.0);
        for (kind, n) in r["stats"]["api_calls"].as_object().unwrap() {
            *calls.entry(kind.clone()).or_default() += n.as_f64().unwrap();
        }
    }
    for (state, n) in &by_state {
        assert_eq!(m.get(&format!("usagesync_runs_total{{workflow=\"engagement\",state=\"{state}\"}}")), Some(n));
    }
    assert_eq!(m["usagesync_records_written_total{workflow=\"engagement\"}"], written);
    assert_eq!(m["usagesync_records_failed_total{workflow=\"engagement\"}"], failed);
    for (kind, n) in &calls {
        assert_eq!(m.get(&format!("usagesync_api_calls_total{{workflow=\"engagement\",kind=\"{kind}\"}}")), Some(n));
    }
    let failures = cli(&["failures"]);
    let open = failures.as_array().unwrap();
    assert_eq!(open.len() as u64, first["failed"].as_u64().unwrap());
    assert!(open.iter().all(|f| f["error_code"] == "FIELD_CUSTOM_VALIDATION_EXCEPTION"));
    assert_eq!(
        m["usagesync_open_failures{workflow=\"engagement\",code=\"FIELD_CUSTOM_VALIDATION_EXCEPTION\"}"],
        open.len() as f64
    );
    assert_eq!(m["usagesync_run_duration_seconds_count{workflow=\"engagement\"}"], runs.len() as f64);
    assert_eq!(m["usagesync_run_duration_seconds_bucket{workflow=\"engagement\",le=\"+Inf\"}"], runs.len() as f64);
    let spent: f64 = calls.values().sum();
    let budget = m["usagesync_api_budget_spent_today"];
    assert!(budget >= spent, "the ledger holds at least the runs' calls: {budget} < {spent}");
    assert_eq!(m["usagesync_webhook_queue_depth"], 0.0);
    // No run of this workflow succeeded (refused records each time): no last-success time,
    // so an alert on its age fires (tests/operator.rs checks one after a success).
    assert!(runs.iter().all(|r| r["state"] != "succeeded"), "{runs:?}");
    assert!(!m.keys().any(|k| k.starts_with("usagesync_workflow_last_success_timestamp_seconds")), "{m:?}");
    assert!(m.keys().any(|k| k.starts_with("usagesync_build_info{version=")), "{m:?}");

    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    assert!(daemon.wait().unwrap().success());
}
