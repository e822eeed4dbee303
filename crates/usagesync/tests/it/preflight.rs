//! Preflight end to end: the real binary against `usagesync emulate` in a child process. A
//! misspelt Account field fails `validate --remote` (exit 2, file:line, did you mean), and a real
//! sync quarantines that field while writing the others (exit 3, state partial).

use super::support::{Emulators, bin, emulate, text};

use std::path::Path;
use std::process::Output;

use serde_json::Value;

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

fn accounts(sf: &str) -> Vec<Value> {
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let url = format!("{sf}/__emulator/records/Account");
        reqwest::get(url).await.unwrap().json().await.unwrap()
    })
}

/// Emulators with a seeded org, and the shipped example pointed at them and a store in `dir`;
/// returns the Salesforce URL and the example's text.
fn world(dir: &Path) -> (Emulators, String, String) {
    let emu = emulate(&["--seed-salesforce", "--days", "30", "--accounts", "60"]);
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml")).unwrap();
    let text = example
        .replace("http://127.0.0.1:8443", &emu.salesforce)
        .replace("http://127.0.0.1:8444", &emu.pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.join("state.db").display()));
    let sf = emu.salesforce.clone();
    (emu, sf, text)
}

#[test]
fn a_misspelt_field_fails_validate_remote_and_is_quarantined_by_a_run() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, sf, good) = world(dir.path());
    let cfg = dir.path().join("usagesync.yaml");

    // The shipped example fits the emulator's org: nothing to report.
    std::fs::write(&cfg, &good).unwrap();
    let o = run(&cfg, &["validate", "--remote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));

    let bad = good.replace("minutes: Pendo_Minutes__c", "minutes: Pendo_Minuts__c");
    std::fs::write(&cfg, &bad).unwrap();
    let line = bad.lines().position(|l| l.contains("Pendo_Minuts__c")).unwrap() + 1;
    let o = run(&cfg, &["validate", "--remote"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains(&format!("{}:{line}:", cfg.display())), "{out}");
    assert!(out.contains("Pendo_Minuts__c") && out.contains("did you mean Pendo_Minutes__c?"), "{out}");
    assert!(out.contains("1 problem(s)"), "only the misspelt field: {out}");
    let o = run(&cfg, &["validate", "--remote", "--json"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let checked: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(checked["valid"], false, "{checked}");
    assert_eq!(checked["problems"][0]["line"], line, "{checked}");
    assert_eq!(checked["problems"][0]["did_you_mean"], "Pendo_Minutes__c", "{checked}");
    assert!(!accounts(&sf).iter().any(|a| a["Pendo_Engagement_Score__c"].is_number()), "validate wrote nothing");

    let o = run(&cfg, &["sync", "engagement", "--dry-run"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("did you mean Pendo_Minutes__c?"), "{}", text(&o));

    let o = run(&cfg, &["sync", "engagement", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["state"], "partial", "{report}");
    assert_eq!(report["failed"], 0, "nothing refused, the field was never sent: {report}");
    assert_eq!(report["preflight"]["problems"][0]["field"], "Pendo_Minuts__c", "{report}");
    // The describe of Account came with the first page of the Account read (one Composite
    // call), so preflight spent nothing of its own.
    assert!(report["api_calls"]["preflight"].is_null(), "{report}");
    assert!(report["api_calls"]["read_accounts"].as_u64() >= Some(1), "{report}");
    let written = report["written"].as_u64().unwrap();
    assert!(written > 10, "{report}");
    let records = accounts(&sf);
    let scored = records.iter().filter(|a| a["Pendo_Engagement_Score__c"].is_number()).count();
    assert_eq!(scored as u64, written, "the other fields are written");
    assert!(records.iter().any(|a| a["Pendo_Active_Days__c"].is_number()));
    assert!(records.iter().all(|a| a["Pendo_Minutes__c"].is_null() && a.get("Pendo_Minuts__c").is_none()));

    // Until the config is fixed, the field stays held back and every run says so.
    let o = run(&cfg, &["sync", "engagement"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains("partial") && out.contains("quarantined") && out.contains("Pendo_Minuts__c"), "{out}");

    // Fixed, the next run sends the minutes it held back and succeeds.
    std::fs::write(&cfg, &good).unwrap();
    let o = run(&cfg, &["sync", "engagement", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let fixed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(fixed["state"], "succeeded", "{fixed}");
    assert!(accounts(&sf).iter().any(|a| a["Pendo_Minutes__c"].is_number()));
}

#[test]
fn an_attribute_the_org_lacks_is_left_out_of_the_read_instead_of_failing_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, _sf, good) = world(dir.path());
    let cfg = dir.path().join("usagesync.yaml");
    // A Number attribute on a date field, and a field that does not exist.
    let bad = good
        .replace("{ salesforce: Plan_Tier__c, pendo: plan }", "{ salesforce: Plan_Tierr__c, pendo: plan }")
        .replace("pendo: renewaldate, type: time }", "pendo: renewaldate, type: number }");
    std::fs::write(&cfg, &bad).unwrap();
    let o = run(&cfg, &["sync", "attributes-to-pendo", "--json"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let report: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(report["state"], "partial", "{report}");
    let problems: Vec<(&str, Option<&str>)> = report["preflight"]["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["field"].as_str().unwrap(), p["did_you_mean"].as_str()))
        .collect();
    // Numbers for Pendo's time field `renewaldate` would be refused by Pendo too: both halves say so.
    assert_eq!(
        problems,
        [("Plan_Tierr__c", Some("Plan_Tier__c")), ("Renewal_Date__c", None), ("custom.renewaldate", None)],
        "{report}"
    );
    assert_eq!(report["failed"], 0, "{report}");
}

/// A Pendo field the config writes and Pendo lacks fails `validate --remote` (file:line);
/// `setup pendo` shows it and writes nothing, `--apply` creates it and reads it back.
#[test]
fn a_pendo_field_pendo_lacks_fails_validate_remote_and_setup_pendo_creates_it() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, _sf, good) = world(dir.path());
    let cfg = dir.path().join("usagesync.yaml");
    let o = run(&cfg_with(&cfg, &good), &["setup", "pendo"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("Pendo has all 3 metadata field(s)"), "{}", text(&o));

    let bad = good.replace("pendo: csm }", "pendo: csmname }");
    std::fs::write(&cfg, &bad).unwrap();
    let line = bad.lines().position(|l| l.contains("pendo: csmname")).unwrap() + 1;
    let o = run(&cfg, &["validate", "--remote"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    assert!(out.contains(&format!("{}:{line}:", cfg.display())) && out.contains("custom.csmname"), "{out}");
    assert!(out.contains("1 problem(s)"), "{out}");

    let o = run(&cfg, &["setup", "pendo"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("missing csmname (string)") && text(&o).contains("Nothing was written"), "{}", text(&o));
    let o = run(&cfg, &["--json", "setup", "pendo", "--apply"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let made: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((made["created"].as_u64(), made["still_missing"].as_u64()), (Some(1), Some(0)), "{made}");
    let o = run(&cfg, &["validate", "--remote"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn cfg_with(path: &Path, text: &str) -> std::path::PathBuf {
    std::fs::write(path, text).unwrap();
    path.to_owned()
}

/// An alert's `set_pendo_fields` are Pendo metadata writes like the attributes': enabled, the
/// fields Pendo lacks fail `validate --remote` at their line, and `setup pendo --apply` creates
/// them.
#[test]
fn an_alerts_pendo_fields_are_checked_by_validate_remote_and_created_by_setup_pendo() {
    let dir = tempfile::tempdir().unwrap();
    let (_emu, _sf, good) = world(dir.path());
    let cfg = dir.path().join("usagesync.yaml");
    let enabled = good.replace(
        "    enabled: false                  # create At_Risk__c",
        "    enabled: true                  # create At_Risk__c",
    );
    std::fs::write(&cfg, &enabled).unwrap();
    let line = enabled.lines().position(|l| l.contains("set_pendo_fields:")).unwrap() + 1;
    let o = run(&cfg, &["validate", "--remote"]);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    let out = text(&o);
    for field in ["custom.risk_flag", "custom.risk_since"] {
        assert!(
            out.lines().any(|l| l.contains(&format!("{}:{line}:", cfg.display())) && l.contains(field)),
            "{field}: {out}"
        );
    }
    let o = run(&cfg, &["--json", "setup", "pendo", "--apply"]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    let made: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!((made["created"].as_u64(), made["still_missing"].as_u64()), (Some(2), Some(0)), "{made}");
    let o = run(&cfg, &["validate", "--remote"]);
    assert!(!text(&o).contains("custom.risk_"), "{}", text(&o));
}
