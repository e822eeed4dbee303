//! `usagesync sync` runs the two-way templates of the shipped example against `usagesync
//! emulate` in a child process: new visitors become Contacts, Account fields reach Pendo, and a
//! repeat of either writes nothing.

use super::support::{bin, emulate};

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

fn report(o: &Output) -> Value {
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn sync_runs_new_users_and_attributes_to_pendo_and_a_repeat_writes_nothing() {
    let emu = emulate(&["--seed-salesforce", "--days", "30", "--accounts", "40"]);
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());

    let dir = tempfile::tempdir().unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml")).unwrap();
    let text = example
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()))
        .replace("window_days: 7 ", "window_days: 40 ");
    let cfg = dir.path().join("usagesync.yaml");
    std::fs::write(&cfg, text).unwrap();

    let plan = report(&run(&cfg, &["sync", "new-users", "--dry-run", "--json"]));
    assert!(plan["changed"].as_u64().unwrap() > 0, "{plan}");
    let first = report(&run(&cfg, &["sync", "new-users", "--json"]));
    assert_eq!(first["written"], plan["changed"], "{first}");
    assert_eq!(first["failed"], 0, "{first}");
    let again = report(&run(&cfg, &["sync", "new-users", "--json"]));
    assert_eq!((again["written"].as_u64(), again["failed"].as_u64()), (Some(0), Some(0)), "{again}");

    // Someone sets a plan tier on two Accounts that carry a Pendo account id.
    tokio::runtime::Runtime::new().unwrap().block_on(async {
        let http = reqwest::Client::new();
        let accounts: Vec<Value> =
            http.get(format!("{sf}/__emulator/records/Account")).send().await.unwrap().json().await.unwrap();
        let token: Value = http
            .post(format!("{sf}/services/oauth2/token"))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "usagesync-emulator"),
                ("client_secret", "emulator-secret"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let bearer = token["access_token"].as_str().unwrap();
        for a in accounts.iter().filter(|a| a["Pendo_Account_Id__c"].is_string()).take(2) {
            let url = format!("{sf}/services/data/v62.0/sobjects/Account/{}", a["Id"].as_str().unwrap());
            let r = http.patch(url).bearer_auth(bearer).json(&serde_json::json!({"Plan_Tier__c": "Growth"})).send();
            assert!(r.await.unwrap().status().is_success());
        }
    });
    let first = report(&run(&cfg, &["sync", "attributes-to-pendo", "--json"]));
    assert_eq!(first["written"], 2, "only Accounts with a value to send: {first}");
    assert_eq!(first["failed"], 0, "{first}");
    let again = report(&run(&cfg, &["sync", "attributes-to-pendo", "--json"]));
    assert_eq!((again["written"].as_u64(), again["failed"].as_u64()), (Some(0), Some(0)), "{again}");

    let o = run(&cfg, &["sync", "attributes-to-pendo"]);
    let shown = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success() && shown.contains("succeeded"), "{shown}");
}
