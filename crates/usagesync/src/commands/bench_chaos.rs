//! `usagesync bench chaos`: the pipeline's guarantees, proven per template against the emulators.
//!
//! For each template the same world is built twice from one seed. The first gets a clean
//! reference run. The second is run with this binary killed at the pipeline's named points
//! (`USAGESYNC_TEST_CRASH_AT`: after gather, after plan, between a call and the store commit,
//! between the records of a group, before the outcomes are recorded) under 10% transient
//! faults and with every Salesforce session ended each second, then to completion; then a person edits what usagesync made and the state store is
//! deleted; a third world has its allocation spent by someone else just before the run's last write
//! calls. Each end state is compared record by record with the reference: duplicates, missing,
//! extra and differing records, and people's edits changed back, must all be zero.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;

use anyhow::{Context as _, Result, bail};
use serde::Serialize;
use serde_json::{Value, json};

use super::table;

const CRASH_ENV: &str = "USAGESYNC_TEST_CRASH_AT";

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
  chaos-people:
    template: contact-engagement
    schedule: "30 6 * * *"
    window_days: 30
    contacts:
      match: email
      fields:
        active_days: Person_Active_Days__c
        events: Person_Events__c
        minutes: Person_Minutes__c
        features_used: Person_Features__c
        guides_completed: Person_Guides__c
        last_active: Person_Last_Active__c
"#;

/// The Contact fields `chaos-people` writes, which the emulated org does not have of itself.
const PEOPLE_FIELDS: &[(&str, &str)] = &[
    ("Person_Active_Days__c", "double"),
    ("Person_Events__c", "double"),
    ("Person_Minutes__c", "double"),
    ("Person_Features__c", "double"),
    ("Person_Guides__c", "double"),
    ("Person_Last_Active__c", "datetime"),
];

const EXAMPLE: &str = include_str!("../../../../examples/usagesync.yaml");

/// What a template leaves in Salesforce, by a key that is the same in two worlds built from one
/// seed; more than one entry under a key is a duplicate.
type Snapshot = BTreeMap<String, Vec<Value>>;

enum What {
    /// Records made by key (`Usagesync_Key__c`), with what each points at.
    Made(&'static [&'static str]),
    /// `fields` of every `object` record, by its `key` field (skipped when all are empty).
    Fields { object: &'static str, key: &'static str, fields: &'static [&'static str] },
    /// `fields` of every Pendo account's metadata `group`, by account id (skipped when all are
    /// empty): what a Salesforce → Pendo template leaves.
    PendoMetadata { group: &'static str, fields: &'static [&'static str] },
    /// Each of these, keys prefixed by their place in the list.
    All(&'static [What]),
}

/// A person's edit usagesync must never change back: `field` set to `value` on up to five
/// records of `object` that have `made_by` (usagesync's key or the Pendo visitor id).
struct Edit {
    object: &'static str,
    made_by: &'static str,
    field: &'static str,
    value: &'static str,
}

struct Case {
    workflow: &'static str,
    what: What,
    /// Kill points, in the order a run passes them.
    points: &'static [&'static str],
    edit: Option<Edit>,
    /// The world gets NPS answers to write (see [`World::seed_nps_answers`]).
    answers: bool,
}

const PEOPLE_FIELD_NAMES: [&str; 6] = [
    PEOPLE_FIELDS[0].0,
    PEOPLE_FIELDS[1].0,
    PEOPLE_FIELDS[2].0,
    PEOPLE_FIELDS[3].0,
    PEOPLE_FIELDS[4].0,
    PEOPLE_FIELDS[5].0,
];

/// Accounts from which a first engagement run writes by Bulk API (about 1,600 changed
/// Accounts make Bulk's fixed calls cheaper than Collections), so the `bulk` point can land.
const BULK_SCALE: usize = 2_000;

/// The case's kill points that a world of `accounts` can reach.
fn points(case: &Case, accounts: usize) -> Vec<&'static str> {
    case.points.iter().copied().filter(|p| *p != "bulk" || accounts >= BULK_SCALE).collect()
}

const CREATE_POINTS: &[&str] = &["gather", "plan", "create:1", "group", "create:1", "record"];
const TASK_DONE: Edit = Edit { object: "Task", made_by: "Usagesync_Key__c", field: "Status", value: "Completed" };
/// A follow-up's priority lowered by the person working it: every field usagesync sets when it
/// makes the Task must stay as people left it, not just the ones it never sets (Status).
const TASK_LOWERED: Edit = Edit { object: "Task", made_by: "Usagesync_Key__c", field: "Priority", value: "Low" };

fn cases() -> Vec<Case> {
    vec![
        Case {
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
            // `bulk` is tried only in worlds where the plan writes by Bulk API (see BULK_SCALE).
            points: &["gather", "plan", "deliver:1", "bulk", "record"],
            edit: None,
            answers: false,
        },
        Case {
            workflow: "new-users",
            what: What::Fields {
                object: "Contact",
                key: "Pendo_Visitor_Id__c",
                fields: &["AccountId", "Email", "FirstName", "LastName", "Pendo_Last_Active__c"],
            },
            points: &["gather", "plan", "create:1", "record"],
            edit: Some(Edit {
                object: "Contact",
                made_by: "Pendo_Visitor_Id__c",
                field: "Title",
                value: "Head of Ops",
            }),
            answers: false,
        },
        Case {
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
            edit: None,
            answers: false,
        },
        Case {
            workflow: "attributes-to-pendo",
            what: What::PendoMetadata { group: "custom", fields: &["plan", "renewaldate", "csm"] },
            points: &["gather", "plan", "record"],
            edit: None,
            answers: false,
        },
        Case {
            workflow: "nps",
            what: What::All(&[
                What::Fields {
                    object: "Contact",
                    key: "Id",
                    fields: &["NPS_Score__c", "NPS_Comment__c", "NPS_Date__c"],
                },
                What::Fields { object: "Account", key: "Id", fields: &["Health_Score__c"] },
                What::Made(&["Task"]),
            ]),
            points: &["gather", "deliver", "record"],
            edit: Some(TASK_LOWERED),
            answers: true,
        },
        Case {
            workflow: "chaos-people",
            what: What::Fields { object: "Contact", key: "Id", fields: &PEOPLE_FIELD_NAMES },
            points: &["gather", "plan", "deliver:1", "record"],
            edit: None,
            answers: false,
        },
        Case {
            workflow: "chaos-alerts",
            what: What::Made(&["Case", "Task"]),
            points: CREATE_POINTS,
            edit: Some(TASK_DONE),
            answers: false,
        },
        Case {
            workflow: "chaos-expansion",
            what: What::Made(&["Opportunity", "Task"]),
            points: CREATE_POINTS,
            edit: Some(TASK_DONE),
            answers: false,
        },
    ]
}

/// One template's figures.
#[derive(Debug, Default, Serialize)]
pub struct Row {
    pub workflow: String,
    /// Records (or keys) the reference run left.
    pub reference: usize,
    pub reference_calls: u64,
    pub kills_tried: usize,
    /// The points at which a run died, in order.
    pub died_at: Vec<String>,
    /// Runs meant to be killed that failed under the faults before reaching their point
    /// (tried again).
    pub failed_before_point: usize,
    /// Runs after the kills until one exited 0 under faults.
    pub runs_to_finish: usize,
    pub duplicates: usize,
    pub missing: usize,
    pub extra: usize,
    pub differing: usize,
    /// People's edits changed back after the store was lost.
    pub clobbered: usize,
    /// Runs history still shows `running` once everything finished (killed runs must be
    /// `abandoned`), and how many were marked abandoned.
    pub left_running: usize,
    pub abandoned: usize,
    /// Salesforce sessions ended under the runs while they were killed and faulted.
    pub sessions_expired: u64,
    /// The exit code of the run whose allocation was spent mid-way (4: deferred).
    pub spent_exit: Option<i32>,
    /// With a PostgreSQL store: rounds of workers started together, runs refused because
    /// another held the workflow, and runs whose lifetimes overlapped (must be 0).
    pub worker_rounds: usize,
    pub busy: usize,
    pub overlapping: usize,
    /// Problems in words; empty when every guarantee held.
    pub problems: Vec<String>,
}

/// Runs the harness over the templates named in `only` (all when empty) with `kills` kills
/// each; exit 0 when every guarantee held, 1 otherwise.
pub async fn chaos(
    accounts: usize,
    kills: usize,
    only: &[String],
    postgres: Option<&str>,
    workers: usize,
    json: bool,
) -> Result<u8> {
    if !engine::testhook::ENABLED {
        bail!(
            "this build has no crash points, so the harness cannot kill runs at them: build it with \
             `cargo build --release -p usagesync --features chaos` (test builds have them)"
        );
    }
    let cases: Vec<Case> =
        cases().into_iter().filter(|c| only.is_empty() || only.iter().any(|o| o == c.workflow)).collect();
    if cases.is_empty() {
        let names: Vec<&str> = self::cases().iter().map(|c| c.workflow).collect();
        bail!("no such workflow in the chaos harness; it has {}", names.join(", "));
    }
    let mut rows = Vec::new();
    for case in &cases {
        if !json {
            eprintln!("{}: reference world, then {kills} kills under faults at {accounts} accounts…", case.workflow);
        }
        let mut row = run_case(case, accounts, kills).await?;
        if let Some(url) = postgres {
            if !json {
                eprintln!("{}: {workers} workers at once on one PostgreSQL store…", case.workflow);
            }
            workers_phase(case, accounts, kills, url, workers, &mut row).await?;
        }
        rows.push(row);
    }
    let clean = rows.iter().all(|r| r.problems.is_empty());
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        let body: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                vec![
                    r.workflow.clone(),
                    r.reference.to_string(),
                    format!("{}/{}", r.died_at.len(), r.kills_tried),
                    r.runs_to_finish.to_string(),
                    r.duplicates.to_string(),
                    r.missing.to_string(),
                    (r.extra + r.differing).to_string(),
                    r.clobbered.to_string(),
                    format!("{}/{}", r.left_running, r.abandoned),
                    if r.worker_rounds == 0 { "-".into() } else { format!("{}/{}", r.busy, r.overlapping) },
                    r.spent_exit.map_or("-".into(), |c| c.to_string()),
                    if r.problems.is_empty() { "ok".into() } else { r.problems.join("; ") },
                ]
            })
            .collect();
        table::print(
            &[
                "workflow",
                "records",
                "kills landed",
                "runs to finish",
                "duplicates",
                "missing",
                "extra/differing",
                "edits undone",
                "running/abandoned",
                "busy/overlapping",
                "spent → exit",
                "verdict",
            ],
            &body,
        );
    }
    Ok(if clean { 0 } else { 1 })
}

async fn run_case(case: &Case, accounts: usize, kills: usize) -> Result<Row> {
    let workflow = case.workflow;
    let mut row = Row { workflow: workflow.to_owned(), kills_tried: kills, ..Row::default() };

    let clean = World::new(case, accounts).await?;
    let (code, first) = clean.sync(workflow, None).await?;
    if code != Some(0) {
        bail!("the reference run of {workflow} exited {code:?}: {first}");
    }
    let reference = clean.snapshot(&case.what).await?;
    row.reference = reference.len();
    row.reference_calls =
        first["api_calls"].as_object().map_or(0, |m| m.values().filter_map(Value::as_u64).sum::<u64>());
    // The read-back after writing comes last; the spent allocation below must meet the writes.
    let verify_calls = first["api_calls"]["verify"].as_u64().unwrap_or(0);
    drop(clean);

    // Killed at the points in turn, under transient faults, then run to completion.
    let world = World::new(case, accounts).await?;
    world
        .admin("faults", json!({"seed": 7, "unableToLockRow": 0.1, "serverUnavailable": 0.1, "dropConnection": 0.1}))
        .await?;
    // Sessions end every second as well, so runs meet expired tokens mid-way and must log in again.
    let expiring = world.expire_sessions_every(std::time::Duration::from_secs(1));
    let points = points(case, accounts);
    for k in 0..kills {
        let point = points[k % points.len()];
        // Under faults a run may fail before it reaches the point (and says so); it is tried
        // again, up to three times, so that every point is met.
        for _ in 0..3 {
            let (code, out) = world.sync(workflow, Some(point)).await?;
            if code != Some(0) && out.to_string().contains("aborting at point") {
                row.died_at.push(point.to_owned());
                break;
            }
            row.failed_before_point += usize::from(code != Some(0));
        }
    }
    let mut finished = false;
    for _ in 0..12 {
        row.runs_to_finish += 1;
        let (code, out) = world.sync(workflow, None).await?;
        match code {
            Some(0) => {
                finished = true;
                break;
            }
            // Failed or deferred records say so, and the next run sends them.
            Some(1 | 3 | 4) => {}
            other => row.problems.push(format!("a run under faults exited {other:?}: {out}")),
        }
    }
    if !finished {
        row.problems.push(format!("not finished after {} runs under faults", row.runs_to_finish));
    }
    expiring.abort();
    row.sessions_expired = expiring.await_count().await;
    world.admin("faults", json!({})).await?;
    let (code, out) = world.sync(workflow, None).await?;
    if code != Some(0) || out["written"].as_u64().unwrap_or(0) != 0 {
        row.problems.push(format!("the run after the faults still had work or failed (exit {code:?}): {out}"));
    }
    compare(&reference, &world.snapshot(&case.what).await?, "after kills and faults", &mut row);
    let runs = world.runs().await?;
    row.left_running = runs.iter().filter(|r| r["state"] == "running").count();
    row.abandoned = runs.iter().filter(|r| r["state"] == "abandoned").count();
    if row.left_running > 0 {
        row.problems.push(format!("{} runs left running in history", row.left_running));
    }
    if row.abandoned < row.died_at.len() {
        row.problems.push(format!("{} killed runs, {} marked abandoned", row.died_at.len(), row.abandoned));
    }

    // A person edits what usagesync made; the store is lost; the next run must adopt what it
    // finds and change back nothing a person did.
    let edited = match &case.edit {
        Some(edit) => Some((edit, world.person_edits(edit).await?)),
        None => None,
    };
    let db = world.dir.path().join("state.db");
    std::fs::remove_file(&db).with_context(|| format!("Failed to delete {}", db.display()))?;
    let (code, out) = world.sync(workflow, None).await?;
    if code != Some(0) {
        row.problems.push(format!("the run on a new store exited {code:?}: {out}"));
    }
    compare(&reference, &world.snapshot(&case.what).await?, "after the store was lost", &mut row);
    if let Some((edit, ids)) = edited {
        if ids.is_empty() {
            row.problems.push(format!("no {} to edit", edit.object));
        }
        let rows = world.records(edit.object).await?;
        for id in &ids {
            let now = rows.iter().find(|r| r["Id"] == id.as_str()).map(|r| r[edit.field].clone());
            if now != Some(json!(edit.value)) {
                row.clobbered += 1;
            }
        }
    }
    drop(world);

    // The allocation spent by someone else just before the run's last write calls.
    let world = World::new(case, accounts).await?;
    let spend_after = row.reference_calls.saturating_sub(verify_calls + 2).max(1);
    world.admin("limits", json!({"DailyApiRequests": {"SpentAfter": spend_after}})).await?;
    let (code, out) = world.sync(workflow, None).await?;
    row.spent_exit = code;
    if code != Some(4) || out["state"] != "deferred" || out["failed"].as_u64().unwrap_or(0) != 0 {
        row.problems.push(format!("a spent allocation must defer, not fail (exit {code:?}): {out}"));
    }
    world.admin("limits", json!({"DailyApiRequests": {"Remaining": 1_000_000}})).await?;
    let (code, out) = world.sync(workflow, None).await?;
    if code != Some(0) {
        row.problems.push(format!("the run after the allocation came back exited {code:?}: {out}"));
    }
    compare(&reference, &world.snapshot(&case.what).await?, "after a spent allocation", &mut row);
    Ok(row)
}

/// Several workers on one PostgreSQL store: each round starts `workers` syncs of the workflow
/// at once (all but the last with a kill point), under faults; then runs to completion. The
/// lease must let exactly one run at a time, and the end state must equal the reference.
async fn workers_phase(
    case: &Case,
    accounts: usize,
    kills: usize,
    url: &str,
    workers: usize,
    row: &mut Row,
) -> Result<()> {
    let workflow = case.workflow;
    let schema = format!("chaos_{:016x}", rand::random::<u64>());
    // Created and migrated once here, so the workers do not race to migrate it.
    drop(engine::store::open_postgres_schema(url, &schema).await?);
    let separator = if url.contains('?') { '&' } else { '?' };
    let store = format!("{url}{separator}options=-c%20search_path%3D{schema}");
    let result = async {
        let clean = World::new(case, accounts).await?;
        let (code, out) = clean.sync(workflow, None).await?;
        if code != Some(0) {
            bail!("the reference run of {workflow} exited {code:?}: {out}");
        }
        let reference = clean.snapshot(&case.what).await?;
        drop(clean);
        let world = World::with_store(case, accounts, Some(&store)).await?;
        world
            .admin(
                "faults",
                json!({"seed": 11, "unableToLockRow": 0.1, "serverUnavailable": 0.1, "dropConnection": 0.1}),
            )
            .await?;
        let points = points(case, accounts);
        let rounds = kills.div_ceil(workers.saturating_sub(1).max(1)).max(2);
        let mut k = 0;
        for _ in 0..rounds {
            row.worker_rounds += 1;
            let mut runs = Vec::new();
            for w in 0..workers {
                let point = (w + 1 < workers).then(|| {
                    k += 1;
                    points[(k - 1) % points.len()]
                });
                runs.push(world.sync(workflow, point));
            }
            for result in futures_util::future::join_all(runs).await {
                let (code, out) = result?;
                if code == Some(1) && out.to_string().contains("is already running") {
                    row.busy += 1;
                }
            }
        }
        for _ in 0..12 {
            let (code, _) = world.sync(workflow, None).await?;
            if code == Some(0) {
                break;
            }
        }
        world.admin("faults", json!({})).await?;
        let (code, out) = world.sync(workflow, None).await?;
        if code != Some(0) || out["written"].as_u64().unwrap_or(0) != 0 {
            row.problems.push(format!("workers: the last run still had work or failed (exit {code:?}): {out}"));
        }
        compare(&reference, &world.snapshot(&case.what).await?, "with several workers", row);
        let runs = world.runs().await?;
        let running = runs.iter().filter(|r| r["state"] == "running").count();
        if running > 0 {
            row.problems.push(format!("workers: {running} runs left running"));
        }
        let overlaps = overlapping(&runs);
        row.overlapping = overlaps.len();
        if !overlaps.is_empty() {
            row.problems.push(format!(
                "workers: {} runs overlapped another live run: {}",
                overlaps.len(),
                overlaps.join("; ")
            ));
        }
        if row.busy == 0 {
            row.problems.push("workers: no run was ever refused, so they never met".into());
        }
        Ok(())
    }
    .await;
    engine::store::drop_postgres_schema(url, &schema).await?;
    result
}

/// Runs (not abandoned ones, whose process is gone) that started before the previous one
/// ended, each named with both runs' ids, states and times, so a failure shows by how much.
fn overlapping(runs: &[Value]) -> Vec<String> {
    let time = |v: &Value| v.as_str().and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
    let mut spans: Vec<_> = runs
        .iter()
        .filter(|r| r["state"] != "abandoned" && r["dry_run"] != true)
        .filter_map(|r| Some((time(&r["started_at"])?, time(&r["finished_at"])?, r)))
        .collect();
    spans.sort_by_key(|(start, end, _)| (*start, *end));
    let describe = |r: &Value| format!("{} {} {}..{}", r["id"], r["state"], r["started_at"], r["finished_at"]);
    spans
        .windows(2)
        .filter(|w| w[1].0 < w[0].1)
        .map(|w| {
            format!(
                "{} began {} us before {} ended",
                describe(w[1].2),
                (w[0].1 - w[1].0).num_microseconds().unwrap_or(i64::MAX),
                describe(w[0].2)
            )
        })
        .collect()
}

fn compare(reference: &Snapshot, got: &Snapshot, when: &str, row: &mut Row) {
    let duplicates = got.values().filter(|v| v.len() > 1).count();
    let missing = reference.keys().filter(|k| !got.contains_key(*k)).count();
    let extra = got.keys().filter(|k| !reference.contains_key(*k)).count();
    let differing = reference.iter().filter(|(k, v)| got.get(*k).is_some_and(|g| g.len() == 1 && g != *v)).count();
    row.duplicates += duplicates;
    row.missing += missing;
    row.extra += extra;
    row.differing += differing;
    if duplicates + missing + extra + differing > 0 {
        let example = reference
            .iter()
            .find(|(k, v)| got.get(*k) != Some(*v))
            .map(|(k, v)| format!("{k}: reference {v:?}, got {:?}", got.get(k)))
            .or_else(|| got.keys().find(|k| !reference.contains_key(*k)).map(|k| format!("{k}: not in the reference")))
            .unwrap_or_default();
        row.problems.push(format!(
            "{when}: {duplicates} duplicated, {missing} missing, {extra} extra, {differing} differing (e.g. {example})"
        ));
    }
}

/// Sessions being ended in the background; `abort` stops it, awaiting gives how many ended.
struct Expiring {
    task: tokio::task::JoinHandle<()>,
    count: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Expiring {
    fn abort(&self) {
        self.task.abort();
    }

    async fn await_count(self) -> u64 {
        let _ = self.task.await;
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }
}

/// One emulated world with its own config and state store.
struct World {
    emulators: super::emulate::Child,
    dir: tempfile::TempDir,
    config: PathBuf,
    http: reqwest::Client,
}

impl World {
    async fn new(case: &Case, accounts: usize) -> Result<World> {
        World::with_store(case, accounts, None).await
    }

    /// A world for `case` whose state store is `store` (a SQLite file in its directory when `None`).
    async fn with_store(case: &Case, accounts: usize, store: Option<&str>) -> Result<World> {
        let emulators = super::emulate::in_child(accounts, 30).await?;
        let dir = tempfile::tempdir().context("Failed to make a temporary directory")?;
        let store = store.map_or_else(|| format!("sqlite://{}", dir.path().join("state.db").display()), str::to_owned);
        let example = EXAMPLE
            .replace("http://127.0.0.1:8443", &emulators.salesforce)
            .replace("http://127.0.0.1:8444", &emulators.pendo)
            .replace("sqlite://usagesync.db", &store);
        let config = dir.path().join("usagesync.yaml");
        std::fs::write(&config, format!("{}\n{CREATING}", example.trim_end()))
            .with_context(|| format!("Failed to write {}", config.display()))?;
        let http = reqwest::Client::new();
        for (name, kind) in PEOPLE_FIELDS {
            let url = format!("{}/__emulator/fields/Contact", emulators.salesforce);
            http.post(url).json(&json!({"name": name, "type": kind})).send().await?.error_for_status()?;
        }
        let world = World { emulators, dir, config, http };
        if case.answers {
            world.seed_nps_answers().await?;
        }
        Ok(world)
    }

    /// Runs `usagesync sync WORKFLOW --json` (killed at `crash_at` if given): the exit code and
    /// the report, or the output as text when it is not one.
    async fn sync(&self, workflow: &str, crash_at: Option<&str>) -> Result<(Option<i32>, Value)> {
        let exe = std::env::current_exe().context("Failed to find this executable")?;
        let mut c = tokio::process::Command::new(exe);
        c.arg("--config")
            .arg(&self.config)
            .args(["sync", workflow, "--json"])
            .env("SF_CLIENT_SECRET", "emulator-secret")
            .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
            .env_remove(CRASH_ENV)
            .env_remove("USAGESYNC_CONFIG")
            .stdin(Stdio::null());
        if let Some(point) = crash_at {
            c.env(CRASH_ENV, point);
        }
        let out = c.output().await.context("Failed to run usagesync sync")?;
        let report = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
            Value::String(format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
        });
        Ok((out.status.code(), report))
    }

    /// Every run in the world's history, as `usagesync runs --json` lists them.
    async fn runs(&self) -> Result<Vec<Value>> {
        let exe = std::env::current_exe().context("Failed to find this executable")?;
        let out = tokio::process::Command::new(exe)
            .arg("--config")
            .arg(&self.config)
            .args(["--json", "runs", "--limit", "0"])
            .env("SF_CLIENT_SECRET", "emulator-secret")
            .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
            .env_remove("USAGESYNC_CONFIG")
            .output()
            .await
            .context("Failed to run usagesync runs")?;
        serde_json::from_slice(&out.stdout)
            .with_context(|| format!("usagesync runs printed no JSON: {}", String::from_utf8_lossy(&out.stderr)))
    }

    /// Ends every Salesforce session each `every` until aborted; the task's count of sessions
    /// ended is kept in a shared cell, read once it stops.
    fn expire_sessions_every(&self, every: std::time::Duration) -> Expiring {
        let url = format!("{}/__emulator/sessions/expire", self.emulators.salesforce);
        let http = self.http.clone();
        let count = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = count.clone();
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tick.tick().await;
                if let Ok(r) = http.post(&url).send().await
                    && let Ok(v) = r.json::<Value>().await
                {
                    counted.fetch_add(v["expired"].as_u64().unwrap_or(0), std::sync::atomic::Ordering::Relaxed);
                }
            }
        });
        Expiring { task, count }
    }

    /// NPS answers (a rating, then a reason) from the first 40 visitors, half an hour before the
    /// harness started: the same in every world of one harness run, and inside reconciliation's
    /// first look-back, so `sync nps` finds and writes them.
    async fn seed_nps_answers(&self) -> Result<()> {
        static BASE: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
        let base = *BASE.get_or_init(|| chrono::Utc::now().timestamp_millis() - 30 * 60 * 1000);
        let key = [("x-pendo-integration-key", "emulator-integration-key")];
        let pendo = &self.emulators.pendo;
        let get = |url: String| self.http.get(url).header(key[0].0, key[0].1).send();
        let guides: Value = get(format!("{pendo}/api/v1/guide")).await?.error_for_status()?.json().await?;
        let polls_of = |g: &Value| g["polls"].as_array().cloned().unwrap_or_default();
        let kind = |p: &Value| p["attributes"]["type"].as_str().map(str::to_owned);
        let Some(guide) = guides
            .as_array()
            .and_then(|gs| gs.iter().find(|g| polls_of(g).first().and_then(kind).as_deref() == Some("NPSRating")))
        else {
            bail!("the generated Pendo world has no NPS guide");
        };
        let poll = |t: &str| polls_of(guide).iter().find(|p| kind(p).as_deref() == Some(t)).map(|p| p["id"].clone());
        let (rating, reason) = (poll("NPSRating"), poll("NPSReason"));
        let visitors: Value = get(format!("{pendo}/__emulator/visitors")).await?.error_for_status()?.json().await?;
        let visitors =
            visitors.as_array().cloned().or_else(|| visitors["visitors"].as_array().cloned()).unwrap_or_default();
        let mut events = Vec::new();
        for (i, v) in visitors.iter().take(40).enumerate() {
            let auto = &v["metadata"]["auto"];
            let at = base + i64::try_from(i).unwrap_or(0) * 1_000;
            let event = |poll: &Option<Value>, response: Value, at: i64| {
                json!({"guideId": guide["id"], "visitorId": auto["id"], "accountId": auto["accountid"], "time": at,
                    "type": "pollResponse", "pollId": poll, "response": response})
            };
            events.push(event(&rating, json!(i % 11), at));
            if reason.is_some() {
                events.push(event(&reason, json!(format!("reason {i}")), at + 5_000));
            }
        }
        let url = format!("{pendo}/__emulator/seed");
        self.http.post(url).json(&json!({"guideEvents": events})).send().await?.error_for_status()?;
        Ok(())
    }

    async fn admin(&self, path: &str, body: Value) -> Result<()> {
        let url = format!("{}/__emulator/{path}", self.emulators.salesforce);
        self.http.put(url).json(&body).send().await?.error_for_status()?;
        Ok(())
    }

    async fn records(&self, object: &str) -> Result<Vec<Value>> {
        let url = format!("{}/__emulator/records/{object}", self.emulators.salesforce);
        Ok(self.http.get(url).send().await?.error_for_status()?.json().await?)
    }

    async fn snapshot(&self, what: &What) -> Result<Snapshot> {
        let mut out = Snapshot::new();
        match what {
            What::All(parts) => {
                for (i, part) in parts.iter().enumerate() {
                    let inner = Box::pin(self.snapshot(part)).await?;
                    out.extend(inner.into_iter().map(|(k, v)| (format!("{i}:{k}"), v)));
                }
            }
            What::Made(objects) => {
                let mut rows = Vec::new();
                for object in *objects {
                    rows.extend(self.records(object).await?.into_iter().map(|r| (*object, r)));
                }
                // A record's parent is named by its key when usagesync made it, so two worlds
                // whose generated Ids differ still compare.
                let key_of: BTreeMap<&str, &str> = rows
                    .iter()
                    .filter_map(|(_, r)| Some((r["Id"].as_str()?, r["Usagesync_Key__c"].as_str()?)))
                    .collect();
                for (object, r) in &rows {
                    let Some(key) = r["Usagesync_Key__c"].as_str() else { continue };
                    let parent = ["WhatId", "AccountId"].iter().find_map(|f| r[*f].as_str()).unwrap_or_default();
                    let parent = key_of.get(parent).copied().unwrap_or(parent);
                    out.entry(key.to_owned()).or_default().push(json!([object, parent]));
                }
            }
            What::PendoMetadata { group, fields } => {
                let url = format!("{}/__emulator/accounts", self.emulators.pendo);
                let v: Value = self.http.get(url).send().await?.error_for_status()?.json().await?;
                let list = v.as_array().cloned().or_else(|| v["accounts"].as_array().cloned()).unwrap_or_default();
                for a in list {
                    let Some(id) = a["accountId"].as_str().or_else(|| a["id"].as_str()) else { continue };
                    let values: BTreeMap<&str, Value> =
                        fields.iter().map(|f| (*f, a["metadata"][*group][*f].clone())).collect();
                    if values.values().all(Value::is_null) {
                        continue;
                    }
                    out.entry(id.to_owned()).or_default().push(json!(values));
                }
            }
            What::Fields { object, key, fields } => {
                for r in self.records(object).await? {
                    let Some(k) = r[*key].as_str() else { continue };
                    let values: BTreeMap<&str, Value> = fields.iter().map(|f| (*f, r[*f].clone())).collect();
                    if values.values().all(Value::is_null) {
                        continue;
                    }
                    out.entry(k.to_owned()).or_default().push(json!(values));
                }
            }
        }
        Ok(out)
    }

    /// A person's edit through the REST API, as the integration user's colleagues make them.
    async fn person_edits(&self, edit: &Edit) -> Result<Vec<String>> {
        let token: Value = self
            .http
            .post(format!("{}/services/oauth2/token", self.emulators.salesforce))
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", "usagesync-emulator"),
                ("client_secret", "emulator-secret"),
            ])
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let token = token["access_token"].as_str().context("no access token from the emulator")?.to_owned();
        let ids: Vec<String> = self
            .records(edit.object)
            .await?
            .iter()
            .filter(|r| r[edit.made_by].is_string())
            .filter_map(|r| r["Id"].as_str().map(str::to_owned))
            .take(5)
            .collect();
        for id in &ids {
            let url = format!("{}/services/data/v62.0/sobjects/{}/{id}", self.emulators.salesforce, edit.object);
            self.http
                .patch(url)
                .bearer_auth(&token)
                .json(&json!({ edit.field: edit.value }))
                .send()
                .await?
                .error_for_status()?;
        }
        Ok(ids)
    }
}
