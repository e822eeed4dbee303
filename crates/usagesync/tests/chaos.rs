//! The chaos harness for the record-creating templates, through the real binary against the
//! emulators: each template's run is killed at every named point of the pipeline (after gather,
//! after plan, between a create call and its commit, between the records of a group, before the
//! outcomes are recorded) under 10% transient faults, its state store is deleted after a person
//! edited what it made, and its allocation is spent mid-run; each end state is compared record
//! by record with a clean reference run on the same world: nothing missing, nothing twice,
//! nothing a person changed changed back.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};

use serde_json::{Value, json};

const ACCOUNTS: u32 = 300;
const CRASH_ENV: &str = "USAGESYNC_TEST_CRASH_AT";

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_usagesync"));
    c.env_remove("USAGESYNC_CONFIG").env_remove(CRASH_ENV);
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

fn emulators() -> Emulators {
    let mut child = bin()
        .args(["emulate", "--seed-salesforce", "--days", "30", "--accounts", &ACCOUNTS.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let salesforce = lines.next().unwrap().unwrap().strip_prefix("salesforce ").unwrap().to_owned();
    let pendo = lines.next().unwrap().unwrap().strip_prefix("pendo ").unwrap().to_owned();
    Emulators { child, salesforce, pendo }
}

/// The record-creating workflows, appended to the shipped example (whose own engagement,
/// new-users and trials workflows run as shipped).
const CREATING: &str = r#"
  chaos-alerts:
    template: engagement-drop-alert
    schedule: "0 7 * * *"
    window_days: 7
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    score:
      active_visitors: { weight: 0.5, target: 5 }
      active_days: { weight: 0.5, target: 5 }
    alert:
      below: 20
      drop_share: 0.5
      hysteresis: 10
      key_field: Usagesync_Key__c
      create_case: true
  chaos-expansion:
    template: expansion-opportunity
    schedule: "0 8 * * 1"
    window_days: 28
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
    expansion:
      milestones:
        - { name: heavy-use, sustained_usage: { min_daily_events: 40, days: 10 } }
        - { name: seats, seat_share: { seats_field: Contracted_Seats__c, min_share: 0.8 } }
      opportunity:
        name: "{account} - {milestone} expansion"
        type: "Existing Customer - Upgrade"
        stage: Prospecting
        close_in_days: 45
        amount_base: 1000
      key_field: Usagesync_Key__c
      task: true
"#;

type Snapshot = BTreeMap<String, Vec<Value>>;

/// What to compare for a template.
enum What {
    /// Records made by key (`Usagesync_Key__c`), with what each points at.
    Made(&'static [&'static str]),
    /// `fields` of every `object` record, by its `key` field (skipped when all are empty).
    Fields { object: &'static str, key: &'static str, fields: &'static [&'static str] },
}

/// A person's edit that usagesync must never change back: `field` set to `value` on records
/// of `object` that have `made_by` (usagesync's key or its Pendo visitor id).
struct Edit {
    object: &'static str,
    made_by: &'static str,
    field: &'static str,
    value: &'static str,
}

/// One template under chaos.
struct Case {
    workflow: &'static str,
    what: What,
    /// Kill points in the order a run passes them, and those a run must have died at.
    points: &'static [&'static str],
    must_die_at: &'static [&'static str],
    edit: Option<Edit>,
}

struct Sandbox {
    emu: Emulators,
    dir: tempfile::TempDir,
    config: PathBuf,
}

impl Sandbox {
    fn new() -> Sandbox {
        let emu = emulators();
        let dir = tempfile::tempdir().unwrap();
        let example = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
            .unwrap()
            .replace("http://127.0.0.1:8443", &emu.salesforce)
            .replace("http://127.0.0.1:8444", &emu.pendo)
            .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("state.db").display()));
        let text = format!("{}\n{CREATING}", example.trim_end());
        let config = dir.path().join("usagesync.yaml");
        std::fs::write(&config, text).unwrap();
        Sandbox { emu, dir, config }
    }

    fn sync(&self, workflow: &str, crash_at: Option<&str>) -> Output {
        let mut c = bin();
        c.arg("--config")
            .arg(&self.config)
            .args(["sync", workflow, "--json"])
            .env("SF_CLIENT_SECRET", "emulator-secret")
            .env("PENDO_INTEGRATION_KEY", "emulator-integration-key");
        if let Some(point) = crash_at {
            c.env(CRASH_ENV, point);
        }
        c.output().unwrap()
    }

    fn admin(&self, path: &str, body: Value) {
        let url = format!("{}/__emulator/{path}", self.emu.salesforce);
        block_on(async {
            reqwest::Client::new().put(url).json(&body).send().await.unwrap().error_for_status().unwrap()
        });
    }

    fn records(&self, object: &str) -> Vec<Value> {
        let url = format!("{}/__emulator/records/{object}", self.emu.salesforce);
        block_on(async { reqwest::get(url).await.unwrap().json::<Vec<Value>>().await.unwrap() })
    }

    /// What a template leaves in Salesforce, by a key that is the same in two worlds built from
    /// one seed; more than one entry under a key is a duplicate.
    fn snapshot(&self, what: &What) -> Snapshot {
        match what {
            What::Made(objects) => self.made(objects),
            What::Fields { object, key, fields } => {
                let mut out = Snapshot::new();
                for r in self.records(object) {
                    let Some(k) = r[*key].as_str() else { continue };
                    let values: BTreeMap<&str, Value> = fields.iter().map(|f| (*f, r[*f].clone())).collect();
                    if values.values().all(Value::is_null) {
                        continue;
                    }
                    out.entry(k.to_owned()).or_default().push(json!(values));
                }
                out
            }
        }
    }

    /// Every record usagesync made, by its key: the object and what it points at (a record it
    /// made is named by that record's key, so two worlds compare).
    fn made(&self, objects: &[&str]) -> Snapshot {
        let mut rows = Vec::new();
        for object in objects {
            rows.extend(self.records(object).into_iter().map(|r| ((*object).to_owned(), r)));
        }
        let key_of: BTreeMap<String, String> = rows
            .iter()
            .filter_map(|(_, r)| Some((r["Id"].as_str()?.to_owned(), r["Usagesync_Key__c"].as_str()?.to_owned())))
            .collect();
        let mut out = Snapshot::new();
        for (object, r) in &rows {
            let Some(key) = r["Usagesync_Key__c"].as_str() else { continue };
            let parent = ["WhatId", "AccountId"].iter().find_map(|f| r[*f].as_str()).unwrap_or_default();
            let parent = key_of.get(parent).cloned().unwrap_or_else(|| parent.to_owned());
            out.entry(key.to_owned()).or_default().push(json!([object, parent]));
        }
        out
    }

    /// A person edits a field of up to five records usagesync made or writes to.
    fn person_edits(&self, edit: &Edit) -> Vec<String> {
        let Edit { object, made_by, field, value } = edit;
        let token = self.token();
        let ids: Vec<String> = self
            .records(object)
            .iter()
            .filter(|r| r[*made_by].is_string())
            .take(5)
            .map(|r| r["Id"].as_str().unwrap().to_owned())
            .collect();
        for id in &ids {
            let url = format!("{}/services/data/v62.0/sobjects/{object}/{id}", self.emu.salesforce);
            block_on(async {
                reqwest::Client::new()
                    .patch(url)
                    .bearer_auth(&token)
                    .json(&json!({ *field: value }))
                    .send()
                    .await
                    .unwrap()
                    .error_for_status()
                    .unwrap()
            });
        }
        ids
    }

    fn token(&self) -> String {
        let url = format!("{}/services/oauth2/token", self.emu.salesforce);
        let form = [
            ("grant_type", "client_credentials"),
            ("client_id", "usagesync-emulator"),
            ("client_secret", "emulator-secret"),
        ];
        let body: Value = block_on(async {
            reqwest::Client::new().post(url).form(&form).send().await.unwrap().json().await.unwrap()
        });
        body["access_token"].as_str().unwrap().to_owned()
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(f)
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn report(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(o)))
}

/// Runs until a run exits 0 (transient faults may fail a few), at most `tries` times.
fn until_done(s: &Sandbox, workflow: &str, tries: usize) -> Value {
    for _ in 0..tries {
        let out = s.sync(workflow, None);
        if out.status.success() {
            return report(&out);
        }
        let code = out.status.code();
        // Failed or deferred records say so, and the next run sends them.
        assert!(matches!(code, Some(1 | 3 | 4)), "only outcomes that say so: {code:?} {}", text(&out));
    }
    panic!("{workflow} did not finish in {tries} runs under faults");
}

fn assert_same(reference: &Snapshot, got: &Snapshot) {
    let twice: Vec<_> = got.iter().filter(|(_, v)| v.len() > 1).collect();
    assert!(twice.is_empty(), "records made twice: {twice:?}");
    let missing: Vec<_> = reference.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(missing.is_empty(), "records missing: {missing:?}");
    let extra: Vec<_> = got.keys().filter(|k| !reference.contains_key(*k)).collect();
    assert!(extra.is_empty(), "records the reference run did not make: {extra:?}");
    assert_eq!(reference, got, "the same records with the same values");
}

fn chaos(case: &Case) {
    let workflow = case.workflow;
    let clean = Sandbox::new();
    let first = clean.sync(workflow, None);
    assert!(first.status.success(), "{}", text(&first));
    let reference_report = report(&first);
    let reference = clean.snapshot(&case.what);
    let written = reference_report["written"].as_u64().unwrap();
    assert!(written >= 3, "the world gives {workflow} something to write: {reference_report}");
    if let What::Made(objects) = case.what {
        assert_eq!(reference.len() as u64, written * objects.len() as u64, "{reference:?}");
    }
    let reference_calls: u64 =
        reference_report["api_calls"].as_object().unwrap().values().map(|v| v.as_u64().unwrap()).sum();
    drop(clean);

    // Killed at every point, under transient faults, then run to completion.
    let s = Sandbox::new();
    s.admin("faults", json!({"seed": 7, "unableToLockRow": 0.1, "serverUnavailable": 0.1, "dropConnection": 0.1}));
    let mut killed = Vec::new();
    for point in case.points {
        let out = s.sync(workflow, Some(point));
        if !out.status.success() && text(&out).contains("aborting at point") {
            killed.push(*point);
        }
    }
    for must in case.must_die_at {
        assert!(killed.contains(must), "{workflow}: the run died at {must}: {killed:?}");
    }
    let done = until_done(&s, workflow, 12);
    eprintln!(
        "{workflow}: reference {written} written, {} keys, {reference_calls} calls; killed at {killed:?}; the run under faults {}",
        reference.len(),
        done["state"]
    );
    s.admin("faults", json!({}));
    let settled = s.sync(workflow, None);
    assert!(settled.status.success(), "{}", text(&settled));
    assert_eq!(report(&settled)["written"], 0, "nothing left to write: {}", text(&settled));
    assert_same(&reference, &s.snapshot(&case.what));

    // A person edits what usagesync made; the state store is lost; the next run adopts what it
    // finds and changes back nothing a person did.
    let edited = case.edit.as_ref().map(|e| (e, s.person_edits(e)));
    std::fs::remove_file(s.dir.path().join("state.db")).unwrap();
    let rebuilt = s.sync(workflow, None);
    assert!(rebuilt.status.success(), "{}", text(&rebuilt));
    assert_same(&reference, &s.snapshot(&case.what));
    if let Some((edit, ids)) = edited {
        assert!(!ids.is_empty(), "something to edit");
        let rows = s.records(edit.object);
        for id in &ids {
            let r = rows.iter().find(|r| r["Id"] == id.as_str()).unwrap();
            assert_eq!(r[edit.field], edit.value, "a person's edit stays: {r}");
        }
    }
    drop(s);

    // The allocation is spent by someone else just before the run's last calls: what is left
    // is deferred (exit 4), never refused, and the next run completes it.
    let s = Sandbox::new();
    s.admin("limits", json!({"DailyApiRequests": {"SpentAfter": reference_calls - 2}}));
    let spent = s.sync(workflow, None);
    assert_eq!(spent.status.code(), Some(4), "{}", text(&spent));
    let r = report(&spent);
    assert_eq!(r["state"], "deferred", "{r}");
    // Spent during the writes: the rest is counted as deferred; during the reads: the whole
    // run is, and it says why.
    match r.get("error") {
        Some(e) => assert!(e.as_str().unwrap().contains("REQUEST_LIMIT_EXCEEDED"), "{r}"),
        None => {
            assert_eq!(r["failed"], 0, "{r}");
            assert!(r["deferred"].as_u64().unwrap() > 0, "{r}");
        }
    }
    s.admin("limits", json!({"DailyApiRequests": {"Remaining": 100000}}));
    let rest = s.sync(workflow, None);
    assert!(rest.status.success(), "{}", text(&rest));
    assert_same(&reference, &s.snapshot(&case.what));
}

const CREATE_POINTS: &[&str] = &["gather", "plan", "create:1", "group", "create:1", "record"];
const TASK_DONE: Edit = Edit { object: "Task", made_by: "Usagesync_Key__c", field: "Status", value: "Completed" };

#[test]
fn drop_alerts_survive_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos(&Case {
        workflow: "chaos-alerts",
        what: What::Made(&["Case", "Task"]),
        points: CREATE_POINTS,
        must_die_at: &["gather", "plan", "create:1", "group"],
        edit: Some(TASK_DONE),
    });
}

#[test]
fn expansion_opportunities_survive_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos(&Case {
        workflow: "chaos-expansion",
        what: What::Made(&["Opportunity", "Task"]),
        points: CREATE_POINTS,
        must_die_at: &["gather", "plan", "create:1", "group"],
        edit: Some(TASK_DONE),
    });
}

#[test]
fn engagement_scores_survive_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos(&Case {
        workflow: "engagement",
        what: What::Fields {
            object: "Account",
            key: "Id",
            fields: &[
                "Pendo_Active_Visitors__c",
                "Pendo_Active_Days__c",
                "Pendo_Events__c",
                "Pendo_Minutes__c",
                "Pendo_Feature_Adoption__c",
                "Pendo_Guide_Completion__c",
                "Pendo_Last_Active__c",
                "Pendo_Engagement_Score__c",
            ],
        },
        points: &["gather", "plan", "deliver:1", "record"],
        must_die_at: &["gather", "plan", "deliver:1", "record"],
        edit: None,
    });
}

#[test]
fn new_contacts_survive_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos(&Case {
        workflow: "new-users",
        what: What::Fields {
            object: "Contact",
            key: "Pendo_Visitor_Id__c",
            fields: &["AccountId", "Email", "FirstName", "LastName", "Pendo_Last_Active__c"],
        },
        points: &["gather", "plan", "create:1", "record"],
        must_die_at: &["gather", "plan", "create:1"],
        edit: Some(Edit { object: "Contact", made_by: "Pendo_Visitor_Id__c", field: "Title", value: "Head of Ops" }),
    });
}

#[test]
fn trial_usage_survives_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos(&Case {
        workflow: "trials",
        what: What::Fields {
            object: "Opportunity",
            key: "Id",
            fields: &[
                "StageName",
                "Trial_Active_Users__c",
                "Trial_Features_Explored__c",
                "Trial_Guides_Completed__c",
                "Trial_Last_Active__c",
                "Trial_Drop_Off_Step__c",
            ],
        },
        points: &["gather", "plan", "deliver:1", "record"],
        must_die_at: &["gather", "plan", "deliver:1"],
        edit: None,
    });
}
