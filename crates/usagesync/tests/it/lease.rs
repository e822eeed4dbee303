//! Runs that cannot lie, through the real binary: a run killed with SIGKILL mid-run is marked
//! `abandoned` by the next run (which then completes), and of two `sync` processes of one
//! workflow started together exactly one runs; the other exits 1 saying who holds the workflow.
//! Leases are shortened to one second with `USAGESYNC_TEST_RUN_LEASE_MS` (read by debug builds).

use super::support::{Emulators, bin, emulate, eventually, text};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

fn emulators() -> Emulators {
    emulate(&["--seed-salesforce", "--days", "30", "--accounts", "40"])
}

/// Every Salesforce answer takes `ms`, so a run lasts long enough to be caught mid-way.
fn salesforce_latency(emu: &Emulators, ms: u64) {
    let body = format!(r#"{{"latencyMs":{ms},"latencyShare":1.0}}"#);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status = runtime.block_on(async {
        reqwest::Client::new()
            .put(format!("{}/__emulator/faults", emu.salesforce))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
            .status()
    });
    assert!(status.is_success(), "setting emulator faults: {status}");
}

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

fn command(config: &Path, args: &[&str]) -> Command {
    let mut c = bin();
    c.arg("--config")
        .arg(config)
        .args(args)
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .env("USAGESYNC_TEST_RUN_LEASE_MS", "1000");
    c
}

/// The workflow's runs as `usagesync runs --json` lists them, newest first.
fn runs(config: &Path) -> Vec<Value> {
    let out = command(config, &["runs", "--json", "--workflow", "engagement"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice::<Value>(&out.stdout).unwrap().as_array().cloned().unwrap_or_default()
}

#[test]
fn a_killed_run_is_marked_abandoned_by_the_next_run_which_completes() {
    let emu = emulators();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);
    // Two processes migrating a fresh SQLite file at once can collide: create it first.
    runs(&cfg);
    salesforce_latency(&emu, 1500);

    let mut victim =
        command(&cfg, &["sync", "engagement"]).stdout(Stdio::null()).stderr(Stdio::null()).spawn().unwrap();
    // Running, with its heartbeat renewed at least once (every 250 ms for a 1 s lease).
    eventually("the run to start and renew its lease", Duration::from_secs(30), || {
        let all = runs(&cfg);
        let renewed = all.first().is_some_and(|r| {
            r["state"] == "running" && r["heartbeat_at"].is_string() && r["heartbeat_at"] != r["started_at"]
        });
        (!renewed).then(|| format!("{all:#?}"))
    });
    assert!(victim.try_wait().unwrap().is_none(), "the run was still going when killed: {:#?}", runs(&cfg));
    let killed = runs(&cfg)[0]["id"].as_str().unwrap().to_owned();
    victim.kill().unwrap();
    victim.wait().unwrap();
    std::thread::sleep(Duration::from_millis(1200));
    assert_eq!(runs(&cfg)[0]["state"], "running", "nothing has looked at the dead run yet");

    salesforce_latency(&emu, 0);
    let out = command(&cfg, &["sync", "engagement"]).output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let all = runs(&cfg);
    assert_eq!(all.len(), 2, "{all:#?}");
    assert_eq!(all[0]["state"], "succeeded", "{all:#?}");
    assert_eq!(all[1]["id"], killed.as_str());
    assert_eq!(all[1]["state"], "abandoned", "{all:#?}");
    let error = all[1]["error"].as_str().unwrap();
    assert!(error.contains("expired at") && error.contains("next run sends it again"), "{error}");
    assert!(all[1]["finished_at"].is_string());

    // `usagesync runs` shows the state in its table too.
    let out = command(&cfg, &["runs", "--workflow", "engagement"]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("abandoned"), "{}", text(&out));
}

#[test]
fn of_two_syncs_of_one_workflow_started_together_exactly_one_runs() {
    let emu = emulators();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);
    // Two processes migrating a fresh SQLite file at once can collide: create it first.
    runs(&cfg);
    // Each run takes seconds, so the two overlap whichever claims first.
    salesforce_latency(&emu, 700);

    let spawn =
        || command(&cfg, &["sync", "engagement"]).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (a, b) = (spawn(), spawn());
    let outs = [a.wait_with_output().unwrap(), b.wait_with_output().unwrap()];
    let codes: Vec<Option<i32>> = outs.iter().map(|o| o.status.code()).collect();
    assert!(codes.contains(&Some(0)) && codes.contains(&Some(1)), "{codes:?}\n{}\n{}", text(&outs[0]), text(&outs[1]));
    let refused = outs.iter().find(|o| o.status.code() == Some(1)).unwrap();
    let message = text(refused);
    assert!(message.contains("workflow \"engagement\" is already running"), "{message}");
    assert!(message.contains("this run did not start"), "{message}");

    let all = runs(&cfg);
    assert_eq!(all.len(), 1, "only the run that started is in history: {all:#?}");
    assert_eq!(all[0]["state"], "succeeded");
    assert!(all[0]["holder"].as_str().is_some_and(|h| h.contains(':')), "{all:#?}");
}
