//! The real binary, end to end: `init`, `validate`, `sync` (dry run and real), `runs`,
//! `failures` and `replay` against `usagesync emulate` running in a child process on ports
//! picked by the OS, with the exit codes a scheduler relies on.

use super::support::{Emulators, bin, emulate, text};

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};

use serde_json::Value;

fn emulators(accounts: u32) -> Emulators {
    emulate(&["--seed-salesforce", "--days", "30", "--accounts", &accounts.to_string()])
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

fn run(config: &Path, args: &[&str]) -> Output {
    bin()
        .arg("--config")
        .arg(config)
        .args(args)
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .output()
        .unwrap()
}

#[test]
fn init_writes_a_starter_that_validates_and_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("usagesync.yaml");
    let o = bin().arg("init").arg(&path).output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    let o = bin().arg("init").arg(&path).output().unwrap();
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("already exists"), "{}", text(&o));
    let o = bin().arg("--config").arg(&path).arg("validate").output().unwrap();
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "is valid: 12 workflow(s): engagement, new-users, attributes-to-pendo, nps, churn-alerts, stalled-adoption, usage-collapse, renewal-risk, expansion, trials, people, people-gone-quiet"
        ),
        "{}",
        text(&o)
    );
    // Without the env vars its secrets name, --secrets says which are missing.
    let o = bin()
        .arg("--config")
        .arg(&path)
        .args(["validate", "--secrets"])
        .env_remove("SF_CLIENT_SECRET")
        .env_remove("PENDO_INTEGRATION_KEY")
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("SF_CLIENT_SECRET") && text(&o).contains("PENDO_INTEGRATION_KEY"), "{}", text(&o));
}

#[test]
fn validate_reports_every_error_with_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    let starter = bin().arg("init").arg(&path).output().unwrap();
    assert!(starter.status.success());
    let broken = std::fs::read_to_string(&path)
        .unwrap()
        .replace("daily_share: 0.25", "daily_share: 3")
        .replace("window_days: 30", "window_days: 0")
        .replace("schedule: \"0 6 * * *\"", "schedule: \"every morning\"");
    std::fs::write(&path, &broken).unwrap();
    let line_of = |needle: &str| broken.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let o = bin().arg("--config").arg(&path).arg("validate").output().unwrap();
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    for (needle, key) in [
        ("daily_share: 3", "budget.daily_share"),
        ("window_days: 0", "workflows.engagement.window_days"),
        ("every morning", "workflows.engagement.schedule"),
    ] {
        let want = format!("bad.yaml:{}:", line_of(needle));
        assert!(out.lines().any(|l| l.contains(&want) && l.contains(key)), "no {want} … {key} in:\n{out}");
    }
    let o = bin().arg("--config").arg(&path).args(["validate", "--json"]).output().unwrap();
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["valid"], false);
    // Both workflows with a 30-day window got 0.
    assert_eq!(v["errors"].as_array().unwrap().len(), 4, "{v}");
    assert!(v["errors"].as_array().unwrap().iter().any(|e| e["key"] == "workflows.people.window_days"), "{v}");
    // A config that does not load stops `sync` with the same exit code and changes nothing.
    let o = bin().arg("--config").arg(&path).args(["sync", "engagement"]).output().unwrap();
    assert_eq!(o.status.code(), Some(2));
    assert!(!dir.path().join("usagesync.db").exists());
}

#[test]
fn sync_plans_writes_then_rests_and_history_shows_it() {
    let emu = emulators(120);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);

    let o = run(&cfg, &["sync", "engagement", "--dry-run", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let plan: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(plan["dry_run"], true);
    let to_write = plan["changed"].as_u64().unwrap();
    assert!(to_write > 50, "{plan}");
    assert_eq!(plan["plan"]["path"], "collections");

    let o = run(&cfg, &["sync", "engagement"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("succeeded"), "{}", text(&o));
    let verified = format!("Verified {to_write} of {to_write} written: every value is as usagesync wrote it.");
    assert!(text(&o).contains(&verified), "the read-back is reported: {}", text(&o));

    let o = run(&cfg, &["sync", "engagement", "--json"]);
    let again: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((again["written"].as_u64(), again["changed"].as_u64()), (Some(0), Some(0)), "{again}");

    let o = run(&cfg, &["runs", "--json"]);
    let runs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs.len(), 2, "the dry run is not a run");
    let first = runs.iter().find(|r| r["stats"]["written"].as_u64() == Some(to_write)).unwrap();
    assert_eq!(first["stats"]["verify"]["checked"].as_u64(), Some(to_write), "{first}");
    assert_eq!(first["stats"]["api_calls"]["verify"].as_u64(), Some(1), "{first}");
    let id = first["id"].as_str().unwrap();
    let key = plan["samples"][0]["pendo_account"].as_str().unwrap();
    let o = run(&cfg, &["runs", &id[..13], "--search", key]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(key) && text(&o).contains("Pendo_Engagement_Score__c"), "{}", text(&o));

    let o = run(&cfg, &["failures"]);
    assert!(text(&o).contains("No open failures."), "{}", text(&o));
    let o = run(&cfg, &["replay"]);
    assert_eq!(o.status.code(), Some(1), "replay needs a selection: {}", text(&o));

    // Settle an ambiguous account by hand; the next run writes it.
    let ambiguous = &plan["ambiguous_samples"][0];
    let pendo_id = ambiguous["pendo_account"].as_str().unwrap();
    let candidate = ambiguous["candidates"][0].as_str().unwrap();
    let o = run(&cfg, &["pin", "engagement", pendo_id, "003000000000001"]);
    assert_eq!(o.status.code(), Some(1), "only an Account Id can be pinned: {}", text(&o));
    // The candidate may be matched to another Pendo account already: then pinning says so
    // and takes --force.
    let o = run(&cfg, &["pin", "engagement", pendo_id, candidate]);
    let o = if o.status.success() {
        o
    } else {
        assert!(text(&o).contains("--force"), "{}", text(&o));
        run(&cfg, &["pin", "engagement", pendo_id, candidate, "--force"])
    };
    assert!(o.status.success(), "{}", text(&o));
    let o = run(&cfg, &["sync", "engagement", "--json"]);
    let pinned: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(pinned["written"].as_u64(), Some(1), "{pinned}");

    let o = run(&cfg, &["sync", "no-such-workflow"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("no-such-workflow"), "{}", text(&o));
}

#[test]
fn failures_dismiss_closes_them_with_a_reason_and_replay_leaves_them() {
    let emu = emulators(60);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);
    // Every Account write refused: a cause a person decides to live with.
    let rule = serde_json::json!({"name": "No_Events", "errorMessage": "Events are read-only",
        "errorField": "Pendo_Events__c", "condition": {"field": "Pendo_Events__c", "operator": "notNull"}});
    let url = format!("{}/__emulator/validation-rules/Account", emu.salesforce);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let status =
        runtime.block_on(async { reqwest::Client::new().post(url).json(&rule).send().await.unwrap().status() });
    assert!(status.is_success());

    let o = run(&cfg, &["sync", "engagement"]);
    assert_eq!(o.status.code(), Some(3), "refused records exit 3: {}", text(&o));
    let o = run(&cfg, &["failures", "--json", "--limit", "0"]);
    let open: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert!(open.len() > 1, "{}", text(&o));
    let first = open[0]["id"].as_i64().unwrap().to_string();

    let o = run(&cfg, &["failures", "dismiss", &first]);
    assert_eq!(o.status.code(), Some(2), "a dismissal needs a reason: {}", text(&o));
    let o = run(&cfg, &["failures", "dismiss", &first, "--reason", "account being merged"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("Dismissed 1 failure."), "{}", text(&o));
    let o = run(&cfg, &["failures", "dismiss", &first, "--reason", "again"]);
    assert_eq!(o.status.code(), Some(1), "a closed failure is not dismissed twice: {}", text(&o));
    let o =
        run(&cfg, &["failures", "dismiss", "--code", "FIELD_CUSTOM_VALIDATION_EXCEPTION", "--reason", "known rule"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains(&format!("Dismissed {} failures.", open.len() - 1)), "{}", text(&o));

    let o = run(&cfg, &["failures"]);
    assert!(text(&o).contains("No open failures."), "{}", text(&o));
    let o = run(&cfg, &["failures", "--status", "dismissed", "--json", "--limit", "0"]);
    let dismissed: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(dismissed.len(), open.len());
    assert_eq!(dismissed[0]["reason"], "account being merged");
    assert_eq!(dismissed[1]["reason"], "known rule");
    let o = run(&cfg, &["replay", "--all", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let replay: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(replay["claimed"], 0, "dismissed failures are not replayed: {replay}");

    // The same refusal recurring stays dismissed.
    let o = run(&cfg, &["sync", "engagement"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = run(&cfg, &["failures"]);
    assert!(text(&o).contains("No open failures."), "{}", text(&o));
}

/// A clock start that is not a time is refused before anything is opened: no state store is
/// made, and the message names the variable and the form it takes.
#[test]
fn a_bad_usagesync_now_changes_nothing_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("usagesync.yaml");
    let init = bin().arg("init").arg(&config).output().unwrap();
    assert!(init.status.success(), "{}", String::from_utf8_lossy(&init.stderr));
    let out = bin()
        .current_dir(dir.path())
        .arg("--config")
        .arg(&config)
        .args(["sync", "engagement"])
        .env("USAGESYNC_NOW", "yesterday")
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("USAGESYNC_NOW=\"yesterday\" is not an RFC 3339 time"), "{stderr}");
    let made: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(made, vec![std::ffi::OsString::from("usagesync.yaml")], "nothing but the config: {made:?}");
}

/// `prune` deletes the history past `retention.history_days` and nothing a later run decides
/// with: 40 days on (USAGESYNC_NOW), the first of two runs goes with its outcomes, the latest
/// stays, and a run after the prune still finds nothing changed.
#[test]
fn prune_deletes_old_history_and_keeps_what_runs_decide_with() {
    let emu = emulators(60);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);
    let o = run(&cfg, &["sync", "engagement", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let first: Value = serde_json::from_slice(&o.stdout).unwrap();
    let written = first["written"].as_u64().unwrap();
    assert!(written > 0, "{first}");
    let o = run(&cfg, &["sync", "engagement", "--json"]);
    assert!(o.status.success(), "{}", text(&o));

    let o = run(&cfg, &["prune", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let today: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(today["history_days"], 30, "{today}");
    assert_eq!(today["pruned"]["runs"], 0, "nothing is 30 days old yet: {today}");
    assert_eq!(today["pruned"]["outcomes"], 0, "{today}");

    let later = (chrono::Utc::now() + chrono::Duration::days(40)).to_rfc3339();
    let prune =
        |args: &[&str]| bin().arg("--config").arg(&cfg).args(args).env("USAGESYNC_NOW", &later).output().unwrap();
    let o = prune(&["prune", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("would delete"), "{}", text(&o));
    let o = prune(&["prune", "--dry-run", "--json"]);
    let dry: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(dry["dry_run"], true);
    assert_eq!(dry["pruned"]["runs"], 1, "the latest run stays: {dry}");
    assert!(dry["pruned"]["outcomes"].as_u64().unwrap() >= written, "{dry}");
    assert!(dry["pruned"]["budget_rows"].as_u64().unwrap() > 0, "today's ledger is past then: {dry}");
    let o = run(&cfg, &["runs", "--json"]);
    assert_eq!(serde_json::from_slice::<Vec<Value>>(&o.stdout).unwrap().len(), 2, "a dry run deletes nothing");

    let o = prune(&["prune", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let done: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(done["pruned"], dry["pruned"], "{done}");
    assert!(done["released_bytes"].as_u64().unwrap() > 0, "the file gives the pages back: {done}");
    assert!(done["store_bytes_after"].as_u64() < done["store_bytes_before"].as_u64(), "{done}");
    let o = run(&cfg, &["runs", "--json"]);
    let runs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0]["stats"]["written"], 0, "the latest run is the one kept");
    let o = prune(&["prune", "--json"]);
    let again: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(again["pruned"]["runs"], 0, "{again}");

    // Fingerprints are state: the next run still finds every record unchanged.
    let o = run(&cfg, &["sync", "engagement", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let after: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((after["written"].as_u64(), after["changed"].as_u64()), (Some(0), Some(0)), "{after}");

    let o = prune(&["prune", "--dry-run", "--vacuum"]);
    assert_eq!(o.status.code(), Some(2), "--vacuum deletes, so it is no dry run: {}", text(&o));
}

/// The daemon prunes on its own: with its clock 40 days on and the prune interval shortened
/// (debug builds only), the older of two runs goes without anyone typing `prune`.
#[test]
fn the_daemon_prunes_old_history_by_itself() {
    let emu = emulators(40);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu);
    for _ in 0..2 {
        let o = run(&cfg, &["sync", "engagement", "--json"]);
        assert!(o.status.success(), "{}", text(&o));
    }
    let ids = |cfg: &std::path::Path| -> Vec<String> {
        let o = run(cfg, &["runs", "--json"]);
        let runs: Vec<Value> = serde_json::from_slice(&o.stdout).unwrap();
        runs.iter().filter_map(|r| r["id"].as_str().map(str::to_owned)).collect()
    };
    let before = ids(&cfg);
    assert_eq!(before.len(), 2);
    let oldest = before.last().unwrap().clone();
    let later = (chrono::Utc::now() + chrono::Duration::days(40)).to_rfc3339();
    let mut daemon = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--listen", "127.0.0.1:0", "--grace-seconds", "0"])
        .env("USAGESYNC_NOW", &later)
        .env("USAGESYNC_TEST_PRUNE_EVERY_MS", "300")
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    loop {
        let now = ids(&cfg);
        if !now.contains(&oldest) {
            assert!(now.contains(&before[0]), "the latest run stays: {now:?}");
            break;
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(30), "the daemon never pruned: {now:?}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let _ = daemon.kill();
    let _ = daemon.wait();
}

/// The process gives freed memory back to the system at once: it starts itself again, under the
/// same process id, with mimalloc's purge delay at 0, unless the operator set one.
/// A benchmark's emulators go down with it however it ends: told `--exit-with-stdin`, the
/// emulator process exits once the other end of its stdin is closed (as it is when the parent
/// dies, even by SIGKILL); without it, a stdin at its end from the start (`nohup`, a shell's
/// background job) does not stop it.
#[test]
fn the_emulators_exit_with_their_stdin_only_when_told_to() {
    /// Killed when the test ends, passed or failed.
    struct Emulator(std::process::Child);
    impl Drop for Emulator {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let start = |flag: bool, stdin: Stdio| {
        let mut cmd = bin();
        cmd.args(["emulate", "--accounts", "1"]);
        if flag {
            cmd.arg("--exit-with-stdin");
        }
        let mut child = Emulator(cmd.stdin(stdin).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap());
        let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
        assert!(lines.next().unwrap().unwrap().starts_with("salesforce "));
        (child, lines)
    };
    let (mut told, _lines) = start(true, Stdio::piped());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(told.0.try_wait().unwrap().is_none(), "exited while its stdin was open");
    drop(told.0.stdin.take());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let status = loop {
        if let Some(status) = told.0.try_wait().unwrap() {
            break status;
        }
        assert!(std::time::Instant::now() < deadline, "still running a minute after its stdin closed");
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");

    let (mut untold, _lines) = start(false, Stdio::null());
    std::thread::sleep(std::time::Duration::from_millis(300));
    assert!(untold.0.try_wait().unwrap().is_none(), "exited on a stdin at its end without --exit-with-stdin");
}

#[cfg(target_os = "linux")]
#[test]
fn the_process_gives_freed_memory_back_at_once_unless_told_otherwise() {
    let purge_delay = |set: Option<&str>| {
        let mut cmd = bin();
        cmd.env_remove("MIMALLOC_PURGE_DELAY");
        if let Some(v) = set {
            cmd.env("MIMALLOC_PURGE_DELAY", v);
        }
        let mut child =
            cmd.args(["emulate", "--accounts", "1"]).stdout(Stdio::piped()).stderr(Stdio::null()).spawn().unwrap();
        // The first address is printed once the process runs as it will stay.
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert!(lines.next().unwrap().unwrap().starts_with("salesforce "));
        let environ = std::fs::read(format!("/proc/{}/environ", child.id())).unwrap();
        let _ = child.kill();
        let _ = child.wait();
        environ
            .split(|b| *b == 0)
            .find_map(|kv| kv.strip_prefix(b"MIMALLOC_PURGE_DELAY=").map(|v| String::from_utf8_lossy(v).into_owned()))
    };
    assert_eq!(purge_delay(None).as_deref(), Some("0"));
    assert_eq!(purge_delay(Some("250")).as_deref(), Some("250"));
}
