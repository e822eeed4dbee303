//! The real binary killed between a create call (a Collections upsert) and its local commit
//! (`USAGESYNC_TEST_CRASH_AFTER_CREATE`), then run again: every alert exists exactly once and
//! the second run settles the interrupted one instead of failing or duplicating it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

use serde_json::Value;

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_usagesync"));
    c.env_remove("USAGESYNC_CONFIG").env_remove("USAGESYNC_TEST_CRASH_AFTER_CREATE");
    c
}

struct Emulators {
    child: Child,
    salesforce: String,
    pendo: String,
}

impl Drop for Emulators {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn emulators(accounts: u32) -> Emulators {
    let mut child = bin()
        .args(["emulate", "--seed-salesforce", "--days", "30", "--accounts", &accounts.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let salesforce = lines.next().unwrap().unwrap().strip_prefix("salesforce ").unwrap().to_owned();
    let pendo = lines.next().unwrap().unwrap().strip_prefix("pendo ").unwrap().to_owned();
    Emulators { child, salesforce, pendo }
}

/// The shipped example, pointed at these emulators and a store in `dir`.
fn config(dir: &Path, emu: &Emulators) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8443", &emu.salesforce)
        .replace("http://127.0.0.1:8444", &emu.pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.join("state.db").display()));
    let path = dir.join("usagesync.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

fn run(config: &Path, args: &[&str], crash_after: Option<u32>) -> Output {
    let mut c = bin();
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        // The crashed run holds its workflow until its lease lapses: keep that short.
        .env("USAGESYNC_TEST_RUN_LEASE_MS", "500");
    if let Some(n) = crash_after {
        c.env("USAGESYNC_TEST_CRASH_AFTER_CREATE", n.to_string());
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn task_keys(emu: &Emulators) -> BTreeMap<String, usize> {
    let url = format!("{}/__emulator/records/Task", emu.salesforce);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let rows: Vec<Value> = runtime.block_on(async { reqwest::get(url).await.unwrap().json().await.unwrap() });
    let mut out = BTreeMap::new();
    for r in rows {
        *out.entry(r["Usagesync_Key__c"].as_str().unwrap_or("").to_owned()).or_default() += 1;
    }
    out
}

#[test]
fn a_process_killed_between_the_create_and_the_commit_leaves_no_duplicate() {
    let emu = emulators(300);
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &emu);

    let plan = run(&config, &["sync", "churn-alerts", "--dry-run", "--json"], None);
    assert!(plan.status.success(), "{}", text(&plan));
    let planned: Value = serde_json::from_slice(&plan.stdout).unwrap();
    let alerts = planned["changed"].as_u64().unwrap();
    assert!(alerts >= 3, "the world has dropping accounts: {planned}");

    // Dies right after the first batch of Tasks is created in Salesforce (one Collections call,
    // up to 200), before the store records any of them.
    let crashed = run(&config, &["sync", "churn-alerts"], Some(1));
    assert!(!crashed.status.success(), "the crash hook fired: {}", text(&crashed));
    assert!(text(&crashed).contains("aborting after create call 1"), "{}", text(&crashed));
    let after_crash = task_keys(&emu);
    assert_eq!(after_crash.len() as u64, alerts.min(200), "the batch was made before the crash: {after_crash:?}");

    // Until the dead run's lease lapses it holds the workflow; then the rerun marks it abandoned.
    std::thread::sleep(std::time::Duration::from_millis(700));
    let rerun = run(&config, &["sync", "churn-alerts", "--json"], None);
    assert!(rerun.status.success(), "{}", text(&rerun));
    let history = run(&config, &["runs", "--json", "--workflow", "churn-alerts"], None);
    let history: Value = serde_json::from_slice(&history.stdout).unwrap();
    assert_eq!(history[1]["state"], "abandoned", "the crashed run is not left running: {history}");
    let report: Value = serde_json::from_slice(&rerun.stdout).unwrap();
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["written"].as_u64(), Some(alerts), "{report}");
    let keys = task_keys(&emu);
    assert_eq!(keys.len() as u64, alerts, "one Task per alert: {keys:?}");
    assert!(keys.values().all(|n| *n == 1), "no key twice: {keys:?}");
    assert!(after_crash.keys().all(|k| keys.contains_key(k)));

    let third = run(&config, &["sync", "churn-alerts", "--json"], None);
    assert!(third.status.success(), "{}", text(&third));
    let report: Value = serde_json::from_slice(&third.stdout).unwrap();
    assert_eq!(report["written"], 0, "{report}");
    assert_eq!(task_keys(&emu).len() as u64, alerts);
}
