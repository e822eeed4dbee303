//! nps-realtime end to end, through the real daemon binary against `usagesync emulate`: a
//! webhook lands on its Contact (by visitor-id field or by email), recomputes the Account's
//! health score and gives a detractor one follow-up Task; a response whose webhook never came is
//! found by pollEvents reconciliation; and events pending at SIGTERM are written at the next
//! start. Also new users in seconds: a `visitorFirstSeen` webhook makes the person's Contact
//! without waiting for the new-users poll.

use super::support::{bin, emulate, eventually, request};

use std::io::{BufRead, BufReader, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// How long the daemon may take to write what it was sent.
const WAIT: Duration = Duration::from_secs(30);

fn records(sf: &str, object: &str) -> Vec<Value> {
    let (status, body) = request(sf, "GET", &format!("/__emulator/records/{object}"), None);
    assert_eq!(status, 200, "{body}");
    body.as_array().cloned().unwrap_or_default()
}

fn record(sf: &str, object: &str, id: &str) -> Value {
    records(sf, object).into_iter().find(|r| r["Id"] == id).unwrap_or(Value::Null)
}

fn seed(sf: &str, object: &str, rows: Value) -> Vec<String> {
    let (status, body) = request(sf, "POST", &format!("/__emulator/records/{object}"), Some(&rows));
    assert_eq!(status, 200, "{body}");
    body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

fn fire(pendo: &str, body: Value) -> Value {
    let (status, reply) = request(pendo, "POST", "/__emulator/webhooks/fire", Some(&body));
    assert!((200..300).contains(&status), "{status} {reply}");
    reply
}

fn subscribe(pendo: &str, daemon: &str, events: &[&str]) {
    let config = json!({"url": format!("{daemon}/webhooks/pendo"), "events": events, "backoffMs": 100});
    let (status, reply) = request(pendo, "PUT", "/__emulator/webhooks", Some(&config));
    assert_eq!(status, 200, "{reply}");
}

fn start_daemon(cfg: &Path) -> (Child, String) {
    let mut daemon = bin()
        .arg("--config")
        .arg(cfg)
        .args(["run", "--listen", "127.0.0.1:0", "--grace-seconds", "30"])
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(daemon.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    (daemon, url)
}

fn stop(mut daemon: Child) {
    assert!(Command::new("kill").args(["-TERM", &daemon.id().to_string()]).status().unwrap().success());
    assert_eq!(daemon.wait().unwrap().code(), Some(0));
}

fn follow_ups_for(sf: &str, contact: &str) -> Vec<Value> {
    records(sf, "Task").into_iter().filter(|t| t["WhoId"] == contact).collect()
}

#[test]
fn webhooks_polls_and_restarts_each_land_exactly_once() {
    let emu = emulate(&["--seed-salesforce", "--days", "10", "--accounts", "15"]);
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());

    // A fresh Account with known engagement, and Contacts keyed by Pendo visitor id.
    let owner = records(&sf, "Account")[0]["OwnerId"].as_str().unwrap().to_owned();
    let account =
        seed(&sf, "Account", json!([{"Name": "NPS Test Co", "OwnerId": owner, "Pendo_Engagement_Score__c": 60}]))
            .remove(0);
    let contacts = seed(
        &sf,
        "Contact",
        json!([
            {"LastName": "Detractor", "AccountId": account, "Pendo_Visitor_Id__c": "nps-v1"},
            {"LastName": "Promoter", "AccountId": account, "Pendo_Visitor_Id__c": "nps-v2"},
            {"LastName": "Unheard", "AccountId": account, "Pendo_Visitor_Id__c": "nps-v3"},
            {"LastName": "Late", "AccountId": account, "Pendo_Visitor_Id__c": "nps-v4"},
        ]),
    );
    // A generated visitor whose Contact has the same email in other letter case.
    let (_, visitors) = request(&pendo, "GET", "/__emulator/visitors", None);
    let all_contacts = records(&sf, "Contact");
    let (by_email_visitor, by_email_contact) = visitors
        .as_array()
        .unwrap()
        .iter()
        .find_map(|v| {
            let email = v["metadata"]["agent"]["email"].as_str()?;
            let hits: Vec<&Value> = all_contacts
                .iter()
                .filter(|c| c["Email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(email)))
                .collect();
            let contact = hits.first()?;
            (hits.len() == 1 && contact["Email"].as_str() != Some(email))
                .then(|| (v["visitorId"].as_str().unwrap().to_owned(), contact["Id"].as_str().unwrap().to_owned()))
        })
        .expect("a generated visitor with a differently cased Contact email");

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usagesync.yaml");
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()))
        .replace("    enabled: true ", "    enabled: false ");
    // Reconciliation every two seconds (croner takes an optional seconds field).
    std::fs::write(&cfg, example.replace("schedule: \"*/15 * * * *\"", "schedule: \"*/2 * * * * *\"")).unwrap();

    let (daemon, url) = start_daemon(&cfg);
    subscribe(&pendo, &url, &[]);
    let detractor = fire(
        &pendo,
        json!({"event": "npsSubmitted", "visitorId": "nps-v1", "accountId": "nps-acct", "rating": 3, "reason": "exports are slow"}),
    );
    // Delivered three times: one response all the same.
    fire(
        &pendo,
        json!({"event": "npsSubmitted", "visitorId": "nps-v2", "accountId": "nps-acct", "rating": 10, "reason": "love it", "repeat": 3}),
    );
    fire(&pendo, json!({"event": "npsSubmitted", "visitorId": by_email_visitor, "accountId": "nps-acct", "rating": 9}));
    eventually("the webhook responses reach their Contacts", WAIT, || {
        let c1 = record(&sf, "Contact", &contacts[0]);
        let c2 = record(&sf, "Contact", &contacts[1]);
        let c3 = record(&sf, "Contact", &by_email_contact);
        (c1["NPS_Score__c"] != 3.0 || c2["NPS_Score__c"] != 10.0 || c3["NPS_Score__c"] != 9.0)
            .then(|| format!("{c1}\n{c2}\n{c3}"))
    });
    let c1 = record(&sf, "Contact", &contacts[0]);
    assert_eq!(c1["NPS_Comment__c"], "exports are slow");
    let sent = detractor["payload"]["timestamp"].as_i64().unwrap();
    let date = chrono::DateTime::parse_from_str(c1["NPS_Date__c"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f%z").unwrap();
    assert_eq!(date.timestamp(), sent);
    // One promoter, one detractor: NPS 0 → 50; engagement 60; equal weights.
    eventually("the health score follows", WAIT, || {
        let a = record(&sf, "Account", &account);
        (a["Health_Score__c"] != 55.0).then(|| a.to_string())
    });
    eventually("the detractor gets a Task", WAIT, || {
        let tasks = follow_ups_for(&sf, &contacts[0]);
        (tasks.len() != 1).then(|| format!("{tasks:?}"))
    });
    let task = &follow_ups_for(&sf, &contacts[0])[0];
    assert_eq!(task["OwnerId"], owner.as_str(), "the account owner's");
    assert_eq!(task["WhatId"], account.as_str());
    assert_eq!(task["Priority"], "High");
    assert!(task["Usagesync_Key__c"].as_str().unwrap().starts_with("usagesync:nps:nps:nps-v1:"), "{task}");
    assert!(follow_ups_for(&sf, &contacts[1]).is_empty(), "a promoter gets no follow-up");

    // A response whose webhook never came: only pollEvents has it.
    subscribe(&pendo, &url, &["guideDisplayed"]);
    let silent =
        fire(&pendo, json!({"event": "npsSubmitted", "visitorId": "nps-v3", "accountId": "nps-acct", "rating": 2}));
    assert_eq!(silent["delivered"], false, "{silent}");
    eventually("reconciliation finds the response", WAIT, || {
        let c = record(&sf, "Contact", &contacts[2]);
        (c["NPS_Score__c"] != 2.0).then(|| c.to_string())
    });
    // p1, d2 of 3 → NPS -33.3 → 33.3; (33.3 + 60) / 2.
    eventually("the health score follows the reconciled response", WAIT, || {
        let a = record(&sf, "Account", &account);
        (a["Health_Score__c"] != 46.7).then(|| a.to_string())
    });
    // Two more reconciliation passes re-read the same rows: still one Task per response.
    let last_run = || request(&url, "GET", "/healthz", None).1["workflows"]["nps"]["last_run"].clone();
    let mut runs = vec![last_run()];
    eventually("two more reconciliation runs", WAIT, || {
        let now = last_run();
        if runs.last() != Some(&now) {
            runs.push(now);
        }
        (runs.len() < 3).then(|| format!("{runs:?}"))
    });
    assert_eq!(follow_ups_for(&sf, &contacts[0]).len(), 1);
    assert_eq!(follow_ups_for(&sf, &contacts[2]).len(), 1);
    let (_, metrics) = request(&url, "GET", "/healthz", None);
    assert_eq!(metrics["workflows"]["nps"]["last_state"], "succeeded", "{metrics}");
    // The two answers that came by webhook were timed from receipt to processing (the third
    // came by the poll: not a webhook).
    let text = metrics_text(&url);
    let lagged: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("usagesync_webhook_processing_lag_seconds_count "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no lag count in:\n{text}"));
    assert!(lagged >= 2.0, "{text}");
    stop(daemon);

    // SIGTERM while a response waits in its batching window: it stays pending, and the next
    // start writes it. No reconciliation in between (a yearly schedule).
    let slow = example
        .replace("schedule: \"*/15 * * * *\"", "schedule: \"0 0 1 1 *\"")
        .replace("batch_window_ms: 250", "batch_window_ms: 5000");
    std::fs::write(&cfg, &slow).unwrap();
    let (daemon, url) = start_daemon(&cfg);
    subscribe(&pendo, &url, &[]);
    fire(&pendo, json!({"event": "npsSubmitted", "visitorId": "nps-v4", "accountId": "nps-acct", "rating": 5}));
    eventually("the webhook is stored", WAIT, || {
        let (_, m) = request(&url, "GET", "/healthz", None);
        let text = metrics_text(&url);
        (!text.lines().any(|l| l == "usagesync_webhook_queue_depth 1")).then(|| format!("{m}\n{text}"))
    });
    stop(daemon);
    assert!(record(&sf, "Contact", &contacts[3])["NPS_Score__c"].is_null(), "written before the window closed");
    std::fs::write(&cfg, example.replace("schedule: \"*/15 * * * *\"", "schedule: \"0 0 1 1 *\"")).unwrap();
    let (daemon, _) = start_daemon(&cfg);
    eventually("the pending response is written after the restart", WAIT, || {
        let c = record(&sf, "Contact", &contacts[3]);
        (c["NPS_Score__c"] != 5.0 || follow_ups_for(&sf, &contacts[3]).len() != 1).then(|| c.to_string())
    });
    stop(daemon);
    assert_eq!(follow_ups_for(&sf, &contacts[0]).len(), 1, "still one Task for the first detractor");
}

/// A `visitorFirstSeen` webhook starts the new-users workflow at once (its poll is set to once a
/// year here, so only the webhook can have made the Contact); a second delivery makes no second
/// Contact; the runs are recorded with trigger `webhook`.
#[test]
fn a_first_seen_webhook_makes_the_contact_without_waiting_for_the_poll() {
    let emu = emulate(&["--seed-salesforce", "--days", "10", "--accounts", "15"]);
    let (sf, pendo) = (emu.salesforce.clone(), emu.pendo.clone());
    let account = records(&sf, "Account").into_iter().find(|a| a["Pendo_Account_Id__c"].is_string()).unwrap();
    let pendo_account = account["Pendo_Account_Id__c"].as_str().unwrap().to_owned();

    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("usagesync.yaml");
    let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()))
        .replace("    enabled: true ", "    enabled: false ");
    let yearly = example.replacen("schedule: \"*/15 * * * *\"", "schedule: \"0 0 1 1 *\"", 1);
    assert_ne!(yearly, example, "the new-users poll is slowed down");
    std::fs::write(&cfg, yearly).unwrap();
    let (daemon, url) = start_daemon(&cfg);
    subscribe(&pendo, &url, &[]);

    let now_ms = chrono::Utc::now().timestamp_millis();
    let visitor = json!({"visitors": [{"visitorId": "fresh-v1", "accountId": pendo_account, "metadata": {
        "auto": {"firstvisit": now_ms, "lastvisit": now_ms},
        "agent": {"email": "fresh.person@first-seen.test", "full_name": "Fresh Person"}}}]});
    let (status, reply) = request(&pendo, "POST", "/__emulator/seed", Some(&visitor));
    assert_eq!(status, 200, "{reply}");
    let made = |sf: &str| -> Vec<Value> {
        records(sf, "Contact").into_iter().filter(|c| c["Pendo_Visitor_Id__c"] == "fresh-v1").collect()
    };
    assert!(made(&sf).is_empty());
    fire(&pendo, json!({"event": "visitorFirstSeen", "visitorId": "fresh-v1", "accountId": pendo_account}));
    eventually("the first-seen visitor becomes a Contact", WAIT, || {
        let c = made(&sf);
        (c.len() != 1).then(|| format!("{c:?}"))
    });
    let contact = made(&sf).remove(0);
    assert_eq!(contact["AccountId"], account["Id"], "{contact}");
    assert_eq!(contact["Email"], "fresh.person@first-seen.test", "{contact}");

    // Delivered again (a retry, or a second webhook): the run makes nothing twice.
    fire(&pendo, json!({"event": "visitorFirstSeen", "visitorId": "fresh-v1", "accountId": pendo_account}));
    let runs = || -> Vec<Value> {
        let o = bin()
            .arg("--config")
            .arg(&cfg)
            .args(["--json", "runs", "--workflow", "new-users"])
            .env("SF_CLIENT_SECRET", "emulator-secret")
            .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout).unwrap_or_default()
    };
    eventually("a second run after the second delivery", WAIT, || {
        let r = runs();
        (r.len() < 2 || r.iter().any(|r| r["state"] == "running")).then(|| format!("{r:?}"))
    });
    assert!(runs().iter().all(|r| r["trigger"] == "webhook"), "{:?}", runs());
    assert_eq!(made(&sf).len(), 1);
    stop(daemon);
}

/// The daemon's /metrics text.
fn metrics_text(url: &str) -> String {
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}
