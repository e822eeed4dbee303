//! The chaos harness at small scale, for every batch template, through the real binary:
//! `usagesync bench chaos` kills each template's run at every point of the pipeline under 10%
//! transient faults, loses its store after people's edits and spends its allocation mid-run,
//! then compares each end state record by record with a clean reference run on the same world.
//! Here each template must come out with nothing missing, duplicated, differing or changed back,
//! no run left `running`, and a run killed at each point its pipeline has.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// A binary of its own, not a module of `it`: its kills under faults load the machine, and tests
// sharing a binary run side by side.

use std::process::Command;

use serde_json::Value;

fn chaos(workflow: &str, must_die_at: &[&str]) {
    chaos_with(workflow, must_die_at, &[]);
}

/// The same, plus three workers at once on one PostgreSQL store (`USAGESYNC_TEST_POSTGRES_URL`,
/// default the local test database; `USAGESYNC_SKIP_POSTGRES=1` skips it).
fn chaos_on_postgres(workflow: &str, must_die_at: &[&str]) {
    if std::env::var("USAGESYNC_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("USAGESYNC_SKIP_POSTGRES=1: skipped");
        return;
    }
    let url = std::env::var("USAGESYNC_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let row = chaos_with(workflow, must_die_at, &["--postgres", &url, "--workers", "3"]);
    assert!(row["worker_rounds"].as_u64().unwrap() >= 2, "{row}");
    assert!(row["busy"].as_u64().unwrap() > 0, "the workers met: {row}");
    assert_eq!(row["overlapping"], 0, "{row}");
}

fn chaos_with(workflow: &str, must_die_at: &[&str], extra: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_usagesync"))
        .args(["--json", "bench", "chaos", "--accounts", "300", "--kills", "6", "--workflows", workflow])
        .args(extra)
        .env_remove("USAGESYNC_CONFIG")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {text}"));
    let row = &rows[0];
    eprintln!("{row}");
    assert_eq!(row["workflow"], workflow);
    assert!(row["reference"].as_u64().unwrap() >= 3, "the world gives {workflow} something to write: {row}");
    for field in ["duplicates", "missing", "extra", "differing", "clobbered", "left_running"] {
        assert_eq!(row[field], 0, "{field}: {row}");
    }
    assert_eq!(row["spent_exit"], 4, "{row}");
    assert!(row["sessions_expired"].as_u64().unwrap() > 0, "runs met expired sessions: {row}");
    assert_eq!(row["problems"], serde_json::json!([]), "{row}");
    let died: Vec<&str> = row["died_at"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    for point in must_die_at {
        assert!(died.contains(point), "{workflow} was killed at {point}: {died:?}");
    }
    assert!(out.status.success(), "{text}");
    row.clone()
}

const CREATE_POINTS: &[&str] = &["gather", "plan", "create:1", "group"];

#[test]
fn drop_alerts_survive_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos("chaos-alerts", CREATE_POINTS);
}

#[test]
fn expansion_opportunities_survive_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos("chaos-expansion", CREATE_POINTS);
}

#[test]
fn engagement_scores_survive_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos("engagement", &["gather", "plan", "deliver:1", "record"]);
}

#[test]
fn new_contacts_survive_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos("new-users", &["gather", "plan", "create:1"]);
}

#[test]
fn account_attributes_reach_pendo_through_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos("attributes-to-pendo", &["gather", "plan", "record"]);
}

#[test]
fn trial_usage_survives_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos("trials", &["gather", "plan", "deliver:1"]);
}

#[test]
fn nps_answers_survive_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos("nps", &["gather", "deliver", "record"]);
}

#[test]
fn contact_engagement_survives_kills_faults_a_lost_store_and_a_spent_allocation() {
    chaos("chaos-people", &["gather", "plan", "deliver:1"]);
}

#[test]
fn drop_alerts_with_three_workers_on_one_postgres_store() {
    chaos_on_postgres("chaos-alerts", CREATE_POINTS);
}

#[test]
fn engagement_scores_with_three_workers_on_one_postgres_store() {
    chaos_on_postgres("engagement", &["gather", "plan", "deliver:1", "record"]);
}

#[test]
fn nps_answers_with_three_workers_on_one_postgres_store() {
    chaos_on_postgres("nps", &["gather", "deliver", "record"]);
}
