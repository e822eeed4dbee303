//! The store conformance suite: every check is written once against `Arc<dyn Store>` and the
//! `conformance!` macro runs it on SQLite (a fresh temp file) and on PostgreSQL (a fresh schema
//! in `USAGESYNC_TEST_POSTGRES_URL`, default `postgres://postgres@127.0.0.1:5432/test`).
//! `USAGESYNC_SKIP_POSTGRES=1` skips the PostgreSQL variants; otherwise an unreachable server
//! fails them, so CI cannot pass without having exercised PostgreSQL.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, NaiveDate, TimeZone, Utc};
use serde_json::json;

use super::*;

const DEFAULT_PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

async fn with_sqlite<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("state.db");
    let store = open(path.to_str().expect("utf-8 temp path")).await.expect("open SQLite store");
    assert_eq!(store.backend(), Backend::Sqlite);
    test(store).await;
}

async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<dyn Store>) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    with_postgres_schema(|url, schema| async move {
        let store = open_postgres_schema(&url, &schema).await.unwrap_or_else(|e| {
            panic!("PostgreSQL test database unavailable (set USAGESYNC_SKIP_POSTGRES=1 to skip): {e}")
        });
        assert_eq!(store.backend(), Backend::Postgres);
        test(store).await;
    })
    .await;
}

/// Runs `test` with a fresh schema name on the test server and drops the schema afterwards,
/// also when the test panics.
async fn with_postgres_schema<F, Fut>(test: F)
where
    F: FnOnce(String, String) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    if std::env::var("USAGESYNC_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("USAGESYNC_SKIP_POSTGRES=1: PostgreSQL variant skipped");
        return;
    }
    let url = std::env::var("USAGESYNC_TEST_POSTGRES_URL").unwrap_or_else(|_| DEFAULT_PG_URL.to_owned());
    let schema = format!("usagesync_test_{}", uuid::Uuid::now_v7().simple());
    // Run the body as its own task so a failing assertion still lets us drop the schema.
    let outcome = tokio::spawn(test(url.clone(), schema.clone())).await;
    let dropped = drop_postgres_schema(&url, &schema).await;
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
    dropped.expect("drop test schema");
}

macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::with_sqlite(super::$name).await
                }
            )+
        }
        mod postgres_backend {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::with_postgres(super::$name).await
                }
            )+
        }
    };
}

conformance!(
    runs_lifecycle,
    outcomes_filters_and_counts,
    outcomes_and_fingerprints_commit_together,
    outcomes_100k_batch,
    outcomes_changes_roundtrip_compactly,
    cursors_compare_and_set,
    kept_states_compare_and_set_on_the_version,
    id_map_pin_rule_and_review,
    id_map_100k,
    fingerprints_roundtrip,
    fingerprints_900k,
    failures_add_list_group,
    failures_claim_lease_resolve_retry,
    failures_concurrent_claimers,
    failures_dismissed_with_a_reason,
    budget_ledger,
    budget_concurrent_reservations_respect_cap,
    budget_reservations_of_dead_runs_are_released,
    idempotent_creates,
    creates_begun_and_committed_in_one_go,
    inbox_dedupes_and_drains,
    inbox_group_of_events_stored_in_one_go,
    inbox_claims_lease_and_take_over,
    inbox_claims_are_held_to_record_only_what_is_still_held,
    inbox_record_of_held_events_is_never_taken_over,
    inbox_claims_keep_a_visitor_and_account_with_one_worker,
    inbox_concurrent_claimers_never_share_an_event,
    run_claims_conflict_per_workflow,
    run_claim_marks_expired_lease_abandoned,
    run_sweep_marks_only_expired_leases,
    run_heartbeat_renews_the_lease,
    run_claimed_after_a_finish_starts_after_it,
    run_finish_after_abandoned_keeps_both_facts,
    run_concurrent_claims_start_exactly_one,
    retention_prunes_history_and_keeps_state,
    fingerprints_one_row_per_record_and_field,
    fingerprints_derived_from_their_values,
);

const LEASE: Duration = Duration::from_secs(60);

fn secs(at: DateTime<Utc>, s: i64) -> DateTime<Utc> {
    at + chrono::Duration::seconds(s)
}

async fn claim(store: &Arc<dyn Store>, workflow: &str, holder: &str, now: DateTime<Utc>) -> RunClaim {
    store.claim_run(&new_run(workflow, now), holder, LEASE, now, &move || now).await.unwrap()
}

fn started(claim: RunClaim) -> (RunId, Vec<Run>) {
    match claim {
        RunClaim::Started { id, abandoned } => (id, abandoned),
        RunClaim::Busy { holder, .. } => panic!("expected the claim to start, but {holder:?} holds the workflow"),
    }
}

async fn run_claims_conflict_per_workflow(store: Arc<dyn Store>) {
    let (a, abandoned) = started(claim(&store, "wf", "host-1:10", t(1, 0)).await);
    assert!(abandoned.is_empty());
    let run = store.get_run(a).await.unwrap().expect("claimed run exists");
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.holder.as_deref(), Some("host-1:10"));
    assert_eq!(run.heartbeat_at, Some(t(1, 0)));
    assert_eq!(run.lease_until, Some(t(1, 1)));

    match claim(&store, "wf", "host-2:20", secs(t(1, 0), 30)).await {
        RunClaim::Busy { holder, abandoned } => {
            assert_eq!(holder.id, a, "the busy answer names the live run");
            assert_eq!(holder.holder.as_deref(), Some("host-1:10"));
            assert!(abandoned.is_empty());
        }
        other => panic!("a second claim within the lease must be refused: {other:?}"),
    }
    assert_eq!(store.list_runs(Some("wf"), 0).await.unwrap().len(), 1, "a refused claim records nothing");

    // Other workflows, and runs without a lease (replays, the nps consumer), are independent.
    started(claim(&store, "other", "host-2:20", secs(t(1, 0), 30)).await);
    store.start_run(&new_run("wf", secs(t(1, 0), 31))).await.unwrap();

    let done = RunFinish { state: RunState::Succeeded, finished_at: secs(t(1, 0), 40), stats: json!({}), error: None };
    store.finish_run(a, &done).await.unwrap();
    let (b, _) = started(claim(&store, "wf", "host-2:20", secs(t(1, 0), 41)).await);
    assert_ne!(a, b, "a finished run frees its workflow at once");
    assert_eq!(store.get_run(a).await.unwrap().expect("run a").state, RunState::Succeeded);
}

async fn run_claim_marks_expired_lease_abandoned(store: Arc<dyn Store>) {
    let (dead, _) = started(claim(&store, "wf", "host-1:10", t(1, 0)).await);
    // Within the lease the holder is presumed alive.
    assert!(matches!(claim(&store, "wf", "host-2:20", secs(t(1, 0), 59)).await, RunClaim::Busy { .. }));
    // Past it, the next claim of any workflow marks it abandoned; the same workflow starts.
    let (next, abandoned) = started(claim(&store, "wf", "host-2:20", t(1, 2)).await);
    assert_eq!(abandoned.iter().map(|r| r.id).collect::<Vec<_>>(), vec![dead]);
    let run = store.get_run(dead).await.unwrap().expect("dead run");
    assert_eq!(run.state, RunState::Abandoned);
    assert_eq!(run.finished_at, Some(t(1, 2)));
    let error = run.error.expect("an abandoned run says why");
    assert!(error.contains("host-1:10") && error.contains("expired at 2026-11-27 01:01:00 UTC"), "{error}");
    assert!(error.contains("next run sends it again"), "{error}");
    assert_eq!(abandoned[0], store.get_run(dead).await.unwrap().expect("dead run"), "returned as stored");
    assert_eq!(store.get_run(next).await.unwrap().expect("next run").state, RunState::Running);

    // A claim of another workflow sweeps too.
    let (other, abandoned) = started(claim(&store, "wf-b", "host-1:11", t(2, 0)).await);
    assert_eq!(abandoned.iter().map(|r| r.id).collect::<Vec<_>>(), vec![next]);
    let (_, abandoned) = started(claim(&store, "wf-c", "host-1:12", t(3, 0)).await);
    assert_eq!(abandoned.iter().map(|r| r.id).collect::<Vec<_>>(), vec![other]);
}

async fn run_sweep_marks_only_expired_leases(store: Arc<dyn Store>) {
    let (a, _) = started(claim(&store, "wf-a", "host-1:10", t(1, 0)).await);
    let (b, _) = started(claim(&store, "wf-b", "host-1:10", secs(t(1, 0), 30)).await);
    let unleased = store.start_run(&new_run("wf-c", t(1, 0))).await.unwrap();
    let (finished, _) = started(claim(&store, "wf-d", "host-1:10", t(1, 0)).await);
    let done = RunFinish { state: RunState::Partial, finished_at: secs(t(1, 0), 5), stats: json!({}), error: None };
    store.finish_run(finished, &done).await.unwrap();

    assert!(store.sweep_expired_runs(secs(t(1, 0), 60)).await.unwrap().is_empty(), "a lease is live up to its end");
    let swept = store.sweep_expired_runs(secs(t(1, 0), 61)).await.unwrap();
    assert_eq!(swept.iter().map(|r| r.id).collect::<Vec<_>>(), vec![a]);
    assert!(swept.iter().all(|r| r.state == RunState::Abandoned));
    assert_eq!(store.get_run(b).await.unwrap().expect("b").state, RunState::Running);
    let swept = store.sweep_expired_runs(t(5, 0)).await.unwrap();
    assert_eq!(swept.iter().map(|r| r.id).collect::<Vec<_>>(), vec![b], "a swept run is not swept twice");
    assert!(store.sweep_expired_runs(t(6, 0)).await.unwrap().is_empty());
    assert_eq!(store.get_run(unleased).await.unwrap().expect("unleased").state, RunState::Running);
    let run = store.get_run(finished).await.unwrap().expect("finished");
    assert_eq!((run.state, run.error), (RunState::Partial, None), "finished runs are left alone");
}

// A run asked for while the previous one was finishing (its time read before the finish) takes
// the lease after that finish: history must not show it beginning before the finish it waited
// for, which would read as two live runs at once.
async fn run_claimed_after_a_finish_starts_after_it(store: Arc<dyn Store>) {
    let (a, _) = started(claim(&store, "wf", "host-1:10", t(1, 0)).await);
    let asked = secs(t(1, 0), 10);
    let done = RunFinish { state: RunState::Succeeded, finished_at: secs(t(1, 0), 11), stats: json!({}), error: None };
    store.finish_run(a, &done).await.unwrap();
    let took = secs(t(1, 0), 12);
    let claim = store.claim_run(&new_run("wf", asked), "host-2:20", LEASE, asked, &move || took).await.unwrap();
    let (b, _) = started(claim);
    let run = store.get_run(b).await.unwrap().expect("b");
    assert_eq!(run.started_at, took, "stamped when the lease was taken, after a's finish");
    assert_eq!(run.lease_until, Some(secs(t(1, 1), 10)), "the lease runs from the claim's now");
    // A clock read that is behind the request (another process's clock) never moves it back.
    let (c, _) = {
        let done = RunFinish { finished_at: secs(t(1, 0), 20), ..done.clone() };
        store.finish_run(b, &done).await.unwrap();
        let asked = secs(t(1, 0), 30);
        started(store.claim_run(&new_run("wf", asked), "host-2:20", LEASE, asked, &|| t(1, 0)).await.unwrap())
    };
    assert_eq!(store.get_run(c).await.unwrap().expect("c").started_at, secs(t(1, 0), 30));
}

async fn run_heartbeat_renews_the_lease(store: Arc<dyn Store>) {
    let (a, _) = started(claim(&store, "wf", "host-1:10", t(1, 0)).await);
    assert!(store.renew_run_lease(a, "host-1:10", LEASE, secs(t(1, 0), 50)).await.unwrap());
    let run = store.get_run(a).await.unwrap().expect("a");
    assert_eq!(run.heartbeat_at, Some(secs(t(1, 0), 50)));
    assert_eq!(run.lease_until, Some(secs(t(1, 1), 50)));
    // Past the first lease but within the renewed one: still busy, nothing swept.
    match claim(&store, "wf", "host-2:20", secs(t(1, 1), 30)).await {
        RunClaim::Busy { holder, abandoned } => {
            assert_eq!(holder.id, a);
            assert!(abandoned.is_empty(), "a renewed lease is not expired");
        }
        other => panic!("the renewed lease must hold: {other:?}"),
    }
    assert!(!store.renew_run_lease(a, "host-2:20", LEASE, secs(t(1, 1), 31)).await.unwrap(), "only the holder renews");
    assert!(!store.renew_run_lease(RunId::new(), "host-1:10", LEASE, t(1, 2)).await.unwrap());
    store.sweep_expired_runs(t(1, 5)).await.unwrap();
    assert!(
        !store.renew_run_lease(a, "host-1:10", LEASE, t(1, 6)).await.unwrap(),
        "an abandoned run's lease cannot be renewed back"
    );
    assert_eq!(store.get_run(a).await.unwrap().expect("a").state, RunState::Abandoned);
}

async fn run_finish_after_abandoned_keeps_both_facts(store: Arc<dyn Store>) {
    let (a, _) = started(claim(&store, "wf", "host-1:10", t(1, 0)).await);
    store.sweep_expired_runs(t(1, 5)).await.unwrap();
    let stats = json!({"written": 7});
    let done = RunFinish { state: RunState::Succeeded, finished_at: t(1, 6), stats: stats.clone(), error: None };
    store.finish_run(a, &done).await.unwrap();
    let run = store.get_run(a).await.unwrap().expect("a");
    assert_eq!(run.state, RunState::Succeeded, "the real outcome is recorded");
    assert_eq!(run.stats, stats);
    let error = run.error.expect("the abandonment is kept");
    assert!(error.starts_with("abandoned: its worker host-1:10"), "{error}");
    assert!(error.contains("finished it at 2026-11-27 01:06:00 UTC as succeeded"), "{error}");

    // A run never abandoned keeps its own error only.
    let (b, _) = started(claim(&store, "wf", "host-1:10", t(2, 0)).await);
    let failed =
        RunFinish { state: RunState::Failed, finished_at: t(2, 1), stats: json!(null), error: Some("boom".into()) };
    store.finish_run(b, &failed).await.unwrap();
    assert_eq!(store.get_run(b).await.unwrap().expect("b").error.as_deref(), Some("boom"));
}

async fn run_concurrent_claims_start_exactly_one(store: Arc<dyn Store>) {
    for round in 0..5u32 {
        let workflow = format!("wf-{round}");
        let claims: Vec<_> = (0..8)
            .map(|i| {
                let store = Arc::clone(&store);
                let workflow = workflow.clone();
                tokio::spawn(async move { claim(&store, &workflow, &format!("host:{i}"), t(1, round)).await })
            })
            .collect();
        let mut started_ids = Vec::new();
        let mut busy_on = BTreeSet::new();
        for c in claims {
            match c.await.unwrap() {
                RunClaim::Started { id, .. } => started_ids.push(id),
                RunClaim::Busy { holder, .. } => {
                    busy_on.insert(holder.id);
                }
            }
        }
        assert_eq!(started_ids.len(), 1, "round {round}: exactly one of 8 concurrent claims starts");
        assert_eq!(busy_on, BTreeSet::from([started_ids[0]]), "every refused claim names the winner");
        assert_eq!(store.list_runs(Some(&workflow), 0).await.unwrap().len(), 1);
    }
}

async fn inbox_dedupes_and_drains(store: Arc<dyn Store>) {
    let event = |id: &str, at: DateTime<Utc>| InboxEvent {
        unique_id: id.into(),
        source: "pendo".into(),
        kind: "npsSubmitted".into(),
        received_at: at,
        body: serde_json::json!({"uniqueId": id, "properties": {"nps": {"rating": 3, "reason": "it's \\ \"slow\""}}}),
    };
    assert!(store.put_event(&event("b", t(1, 1))).await.unwrap());
    assert!(store.put_event(&event("a", t(1, 0))).await.unwrap());
    assert!(!store.put_event(&event("a", t(2, 0))).await.unwrap(), "a repeat delivery is stored once");
    let pending = store.pending_events(10).await.unwrap();
    assert_eq!(pending.iter().map(|e| e.unique_id.as_str()).collect::<Vec<_>>(), ["a", "b"], "oldest first");
    assert_eq!(pending[0], event("a", t(1, 0)), "the first delivery is the one kept, body intact");
    assert_eq!(store.inbox_counts().await.unwrap(), InboxCounts { received: 2, pending: 2 });
    assert_eq!(ids(&store.claim_events("w", LEASE, t(3, 0), 1).await.unwrap()), ["a"]);
    assert_eq!(mark(&store, "other", &["a".into()], t(3, 0)).await, 0, "only by its claimer");
    assert_eq!(mark(&store, "w", &["a".into(), "nope".into()], t(3, 0)).await, 1);
    assert_eq!(store.pending_events(10).await.unwrap().len(), 1);
    assert_eq!(store.inbox_counts().await.unwrap(), InboxCounts { received: 2, pending: 1 });
}

/// A group of deliveries (the receiver's group commit) is stored in one call: each told whether
/// it was new, a repeat of a stored event or of one earlier in the group stored once.
async fn inbox_group_of_events_stored_in_one_go(store: Arc<dyn Store>) {
    assert!(store.put_event(&nps_event("old", "v0", None, t(1, 0))).await.unwrap());
    let group: Vec<InboxEvent> = ["a", "old", "b", "a"].iter().map(|id| nps_event(id, "v1", None, t(1, 1))).collect();
    assert_eq!(store.put_events(&group).await.unwrap(), [true, false, true, false]);
    assert_eq!(store.put_events(&[]).await.unwrap(), Vec::<bool>::new());
    assert_eq!(store.inbox_counts().await.unwrap(), InboxCounts { received: 3, pending: 3 });
    let pending = store.pending_events(10).await.unwrap();
    assert_eq!(ids(&pending), ["old", "a", "b"]);
    assert_eq!(pending[0].received_at, t(1, 0), "the stored event is not overwritten by its repeat");
}

fn nps_event(id: &str, visitor: &str, account: Option<&str>, at: DateTime<Utc>) -> InboxEvent {
    let mut body = serde_json::json!({"uniqueId": id, "event": "npsSubmitted", "visitorId": visitor});
    if let Some(account) = account {
        body["accountId"] = serde_json::json!(account);
    }
    InboxEvent { unique_id: id.into(), source: "pendo".into(), kind: "npsSubmitted".into(), received_at: at, body }
}

fn ids(events: &[InboxEvent]) -> Vec<&str> {
    events.iter().map(|e| e.unique_id.as_str()).collect()
}

async fn inbox_claims_lease_and_take_over(store: Arc<dyn Store>) {
    for (i, v) in ["v1", "v2", "v3"].iter().enumerate() {
        let at = t(1, u32::try_from(i).unwrap());
        store.put_event(&nps_event(&format!("e{i}"), v, None, at)).await.unwrap();
    }
    assert_eq!(store.oldest_claimable_event(t(2, 0)).await.unwrap(), Some(t(1, 0)));
    let a = store.claim_events("a", LEASE, t(2, 0), 2).await.unwrap();
    assert_eq!(ids(&a), ["e0", "e1"], "oldest first, up to the limit");
    assert_eq!(store.oldest_claimable_event(t(2, 0)).await.unwrap(), Some(t(1, 2)), "claimed ones do not count");
    let b = store.claim_events("b", LEASE, t(2, 0), 10).await.unwrap();
    assert_eq!(ids(&b), ["e2"], "a live claim is never shared");
    let mut claimers = store.event_claimers(t(2, 0)).await.unwrap();
    claimers.sort();
    assert_eq!(claimers, ["a", "b"], "each live claimer once");
    assert!(store.claim_events("c", LEASE, t(2, 0), 10).await.unwrap().is_empty());
    assert_eq!(store.pending_depth(100).await.unwrap(), 3, "claimed events are still pending");
    assert_eq!(store.pending_depth(2).await.unwrap(), 2, "counted up to the cap");

    // a renews; b dies: after its lease, c takes b's event over, and b's renewal finds nothing.
    assert_eq!(store.renew_event_claims("a", LEASE, secs(t(2, 0), 50)).await.unwrap(), 2);
    let later = secs(t(2, 0), 61);
    let c = store.claim_events("c", LEASE, later, 10).await.unwrap();
    assert_eq!(ids(&c), ["e2"], "the lapsed claim is taken over, the renewed ones are not");
    let mut claimers = store.event_claimers(later).await.unwrap();
    claimers.sort();
    assert_eq!(claimers, ["a", "c"], "a lapsed claim is no longer live");
    assert_eq!(store.renew_event_claims("b", LEASE, later).await.unwrap(), 0, "b's claim was taken over");

    // Processed events are no longer held or claimable; released ones are claimable at once.
    assert_eq!(mark(&store, "c", &["e2".into()], later).await, 1);
    assert_eq!(store.renew_event_claims("c", LEASE, later).await.unwrap(), 0);
    store.release_event_claims("a").await.unwrap();
    let d = store.claim_events("d", LEASE, later, 10).await.unwrap();
    assert_eq!(ids(&d), ["e0", "e1"], "released, so taken at once");
    assert_eq!(mark(&store, "d", &["e0".into(), "e1".into()], later).await, 2);
    assert!(store.claim_events("d", LEASE, later, 10).await.unwrap().is_empty());
    assert_eq!(store.oldest_claimable_event(later).await.unwrap(), None);
    assert_eq!(store.pending_depth(100).await.unwrap(), 0);
}

/// Marks those of `unique_ids` that `claimer` still holds processed, recording nothing else;
/// returns how many.
async fn mark(store: &Arc<dyn Store>, claimer: &str, unique_ids: &[String], now: DateTime<Utc>) -> u64 {
    let processed = unique_ids.to_vec();
    let decide: DecideHeld = Box::new(move |_| HeldRecord { processed, ..HeldRecord::default() });
    store.record_held(claimer, "wf", unique_ids, now, decide).await.unwrap().marked
}

/// What a batch of `run` records for its held events: an outcome, a written record and a
/// handled key each (the event id is the key), a refusal for `refused` if held, and the held
/// events processed.
fn record_for(run: RunId, refused: &'static str) -> DecideHeld {
    Box::new(move |held| {
        let mut keys: Vec<String> = held.iter().filter(|k| k.as_str() != refused).cloned().collect();
        keys.sort();
        HeldRecord {
            run: Some(run),
            start: Some(new_run("wf", t(2, 0))),
            outcomes: keys.iter().map(|k| outcome(k, None, Action::Updated)).collect(),
            written: keys.iter().map(|k| ("Account".to_owned(), k.clone())).collect(),
            failures: held.contains(refused).then(|| failure(refused, "REFUSED", run)).into_iter().collect(),
            committed: keys.iter().map(|k| (k.clone(), "handled".to_owned())).collect(),
            processed: held.iter().cloned().collect(),
        }
    })
}

/// The record stage checks the claim and records in one transaction: of a batch whose claim
/// lapsed and was partly taken over, its claimer records (outcomes, failures settled,
/// idempotency keys, events processed) only what it still holds, and the taker the rest.
async fn inbox_claims_are_held_to_record_only_what_is_still_held(store: Arc<dyn Store>) {
    for (i, v) in ["v1", "v2", "v3"].iter().enumerate() {
        let at = t(1, u32::try_from(i).unwrap());
        store.put_event(&nps_event(&format!("e{i}"), v, None, at)).await.unwrap();
    }
    // Earlier runs left a refusal open for e0 and e2.
    let earlier = store.start_run(&new_run("wf", t(1, 0))).await.unwrap();
    store.add_failures(&[failure("e0", "OLD", earlier), failure("e2", "OLD", earlier)]).await.unwrap();
    assert_eq!(ids(&store.claim_events("a", LEASE, t(2, 0), 10).await.unwrap()), ["e0", "e1", "e2"]);

    // a stalls past its lease; b takes two of its events over.
    let lapsed = secs(t(2, 0), 61);
    assert_eq!(ids(&store.claim_events("b", LEASE, lapsed, 2).await.unwrap()), ["e0", "e1"]);
    let asked: Vec<String> = ["e0", "e1", "e2", "nope"].iter().map(|s| (*s).to_owned()).collect();
    let (run_a, run_b) = (RunId::new(), RunId::new());
    let a = store.record_held("a", "wf", &asked, lapsed, record_for(run_a, "e1")).await.unwrap();
    assert_eq!(a.held, HashSet::from(["e2".to_owned()]), "only what a still holds");
    assert_eq!(a.marked, 1, "a marks only e2");
    let keys = |outcomes: Vec<RecordOutcome>| outcomes.into_iter().map(|o| o.key).collect::<Vec<_>>();
    assert_eq!(keys(store.run_outcomes(run_a, &all(0)).await.unwrap()), ["e2"]);
    let mut claimers = store.event_claimers(lapsed).await.unwrap();
    claimers.sort();
    assert_eq!(claimers, ["b"], "a left b's claims alone");
    assert_eq!(ids(&store.pending_events(10).await.unwrap()), ["e0", "e1"]);
    let live = |status| FailureFilter { workflow: Some("wf".into()), status: Some(status), error_code: None, limit: 0 };
    let open = store.list_failures(&live(FailureStatus::Open)).await.unwrap();
    assert_eq!(open.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(), ["e0"], "a resolved e2's refusal only");
    for key in ["e0", "e1"] {
        assert_eq!(store.begin_create(key, "wf", lapsed).await.unwrap(), CreateState::New, "{key} is not a's");
        store.abandon_create(key).await.unwrap();
    }

    // b records its two: e0 written (its refusal resolved), e1 refused.
    let b = store.record_held("b", "wf", &asked, lapsed, record_for(run_b, "e1")).await.unwrap();
    assert_eq!(b.held, HashSet::from(["e0".to_owned(), "e1".to_owned()]));
    assert_eq!(b.marked, 2);
    assert_eq!(keys(store.run_outcomes(run_b, &all(0)).await.unwrap()), ["e0"]);
    let open = store.list_failures(&live(FailureStatus::Open)).await.unwrap();
    assert_eq!(open.iter().map(|f| (f.key.as_str(), f.run)).collect::<Vec<_>>(), [("e1", run_b)]);
    for key in ["e0", "e2"] {
        let committed = CreateState::Committed { salesforce_id: "handled".into() };
        assert_eq!(store.begin_create(key, "wf", lapsed).await.unwrap(), committed, "{key} committed once");
    }
    assert_eq!(store.pending_depth(10).await.unwrap(), 0);

    // Processed: held no more.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(None));
    let decide: DecideHeld = {
        let seen = std::sync::Arc::clone(&seen);
        Box::new(move |held| {
            *seen.lock().unwrap() = Some(held.len());
            HeldRecord::default()
        })
    };
    let c = store.record_held("b", "wf", &asked, lapsed, decide).await.unwrap();
    assert!(c.held.is_empty(), "processed: held no more");
    assert_eq!((*seen.lock().unwrap(), c.marked), (Some(0), 0), "asked with nothing held, marks nothing");
}

/// No worker takes a batch over while its claimer is recording it, however long that takes:
/// a takeover waits for the record (SQLite) or passes over its events (PostgreSQL), and then
/// finds them processed.
async fn inbox_record_of_held_events_is_never_taken_over(store: Arc<dyn Store>) {
    let tag = uuid::Uuid::now_v7().simple().to_string();
    let events: Vec<String> = (0..3).map(|i| format!("held-{tag}-{i}")).collect();
    for (i, id) in events.iter().enumerate() {
        store.put_event(&nps_event(id, &format!("v{i}"), None, t(1, 0))).await.unwrap();
    }
    assert_eq!(store.claim_events("a", LEASE, t(2, 0), 10).await.unwrap().len(), 3);
    let stall = crate::testhook::stall_at("record-held", &events[0]);
    let recording = {
        let (store, events) = (Arc::clone(&store), events.clone());
        tokio::spawn(async move { store.record_held("a", "wf", &events, t(2, 0), record_for(RunId::new(), "")).await })
    };
    stall.reached().await;
    // a is held between its check and its record, a whole lease and more.
    let mut taking = {
        let store = Arc::clone(&store);
        tokio::spawn(async move { store.claim_events("b", LEASE, t(3, 0), 10).await })
    };
    let early = tokio::time::timeout(Duration::from_millis(300), &mut taking).await;
    stall.release();
    let taken = match early {
        Ok(taken) => taken,
        Err(_) => taking.await,
    };
    assert!(taken.unwrap().unwrap().is_empty(), "nothing taken over while a records");
    let recorded = recording.await.unwrap().unwrap();
    assert_eq!(recorded.held.len(), 3);
    assert_eq!(recorded.marked, 3);
    assert_eq!(store.pending_depth(10).await.unwrap(), 0);
}

async fn inbox_claims_keep_a_visitor_and_account_with_one_worker(store: Arc<dyn Store>) {
    store.put_event(&nps_event("old", "v1", Some("acme"), t(1, 0))).await.unwrap();
    let a = store.claim_events("a", LEASE, t(2, 0), 10).await.unwrap();
    assert_eq!(ids(&a), ["old"]);
    // A newer answer of v1 (from a poll row: no account), one of another visitor of acme, and
    // one of an unrelated visitor arrive while a holds v1 and acme.
    store.put_event(&nps_event("new", "v1", None, t(1, 1))).await.unwrap();
    store.put_event(&nps_event("colleague", "v2", Some("acme"), t(1, 2))).await.unwrap();
    store.put_event(&nps_event("other", "v3", Some("globex"), t(1, 3))).await.unwrap();
    let b = store.claim_events("b", LEASE, t(2, 0), 10).await.unwrap();
    assert_eq!(ids(&b), ["other"], "v1's and acme's events wait for a's claim to end");
    // a may take more of what it holds the keys of.
    let more = store.claim_events("a", LEASE, t(2, 0), 10).await.unwrap();
    assert_eq!(ids(&more), ["new", "colleague"]);
    assert_eq!(mark(&store, "a", &["old".into()], t(2, 1)).await, 1);
    store.release_event_claims("a").await.unwrap();
    let c = store.claim_events("c", LEASE, t(2, 1), 10).await.unwrap();
    assert_eq!(ids(&c), ["new", "colleague"], "free once a is done with them");
}

async fn inbox_concurrent_claimers_never_share_an_event(store: Arc<dyn Store>) {
    for i in 0..200u32 {
        let at = t(1, 0) + chrono::Duration::milliseconds(i64::from(i));
        let visitor = format!("v{}", i % 50);
        store.put_event(&nps_event(&format!("e{i:03}"), &visitor, None, at)).await.unwrap();
    }
    let claimers: Vec<_> = (0..4)
        .map(|w| {
            let store = Arc::clone(&store);
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = store.claim_events(&format!("w{w}"), LEASE, t(2, 0), 7).await.unwrap();
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|e| (e.unique_id, e.body["visitorId"].clone())));
                }
            })
        })
        .collect();
    let mut seen = BTreeSet::new();
    let mut visitors: BTreeMap<String, usize> = BTreeMap::new();
    for (w, task) in claimers.into_iter().enumerate() {
        for (id, visitor) in task.await.unwrap() {
            assert!(seen.insert(id.clone()), "{id} claimed twice");
            let owner = *visitors.entry(visitor.to_string()).or_insert(w);
            assert_eq!(owner, w, "visitor {visitor} claimed by two workers");
        }
    }
    assert_eq!(seen.len(), 200, "every event claimed once");
}

fn t(h: u32, m: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 27, h, m, 0).single().expect("valid time")
}

fn day() -> NaiveDate {
    NaiveDate::from_ymd_opt(2026, 11, 27).expect("valid day")
}

fn new_run(workflow: &str, started_at: DateTime<Utc>) -> NewRun {
    NewRun {
        workflow: workflow.into(),
        template: "engagement".into(),
        dry_run: false,
        started_at,
        trigger: "cli".into(),
    }
}

fn outcome(key: &str, sf: Option<&str>, action: Action) -> RecordOutcome {
    RecordOutcome {
        object: "Account".into(),
        key: key.into(),
        salesforce_id: sf.map(Into::into),
        action,
        changes: vec![FieldChange {
            field: "Usage__c".into(),
            before: Some(json!(1)),
            after: json!({"n": 2, "s": "it's \"q\" \\ ü"}),
        }],
        error_code: (action == Action::Failed).then(|| "FIELD_INTEGRITY_EXCEPTION".into()),
        message: (action == Action::Failed).then(|| "bad value".into()),
    }
}

fn all(limit: u32) -> OutcomeFilter {
    OutcomeFilter { limit, ..Default::default() }
}

async fn runs_lifecycle(store: Arc<dyn Store>) {
    let a = store.start_run(&new_run("wf-a", t(1, 0))).await.unwrap();
    let b = store.start_run(&new_run("wf-b", t(2, 0))).await.unwrap();
    let c = store.start_run(&new_run("wf-a", t(3, 0))).await.unwrap();

    let run = store.get_run(a).await.unwrap().expect("run a exists");
    assert_eq!(run.state, RunState::Running);
    assert_eq!(run.workflow, "wf-a");
    assert_eq!(run.started_at, t(1, 0));
    assert_eq!(run.finished_at, None);
    assert_eq!(run.stats, json!({}));

    let stats = json!({"created": 3, "api_calls": {"collections": 2}, "elapsed_ms": 1234});
    store
        .finish_run(
            a,
            &RunFinish {
                state: RunState::Partial,
                finished_at: t(1, 5),
                stats: stats.clone(),
                error: Some("2 records failed".into()),
            },
        )
        .await
        .unwrap();
    let run = store.get_run(a).await.unwrap().expect("run a exists");
    assert_eq!(run.state, RunState::Partial);
    assert_eq!(run.finished_at, Some(t(1, 5)));
    assert_eq!(run.stats, stats);
    assert_eq!(run.error.as_deref(), Some("2 records failed"));

    let ids: Vec<RunId> = store.list_runs(None, 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![c, b, a], "newest first");
    let ids: Vec<RunId> = store.list_runs(Some("wf-a"), 10).await.unwrap().iter().map(|r| r.id).collect();
    assert_eq!(ids, vec![c, a]);
    assert_eq!(store.list_runs(None, 1).await.unwrap().len(), 1);
    assert_eq!(store.list_runs(None, 0).await.unwrap().len(), 3, "0 means no limit");

    assert_eq!(store.get_run(RunId::new()).await.unwrap(), None);
    let err = store
        .finish_run(
            RunId::new(),
            &RunFinish { state: RunState::Succeeded, finished_at: t(4, 0), stats: json!({}), error: None },
        )
        .await;
    assert!(matches!(err, Err(StoreError::Invalid { .. })), "{err:?}");
}

async fn outcomes_filters_and_counts(store: Arc<dyn Store>) {
    let run = store.start_run(&new_run("wf", t(1, 0))).await.unwrap();
    let other = store.start_run(&new_run("wf", t(1, 1))).await.unwrap();
    let outcomes = vec![
        outcome("acme-1", Some("001AAA000000001"), Action::Updated),
        outcome("100%_off", Some("001AAA000000002"), Action::Created),
        outcome("100x off", None, Action::Skipped),
        outcome("back\\slash 'quoted' \"dq\"", Some("001BBB000000003"), Action::Failed),
        outcome("ÄÖÜ Großhandel", None, Action::Unchanged),
        outcome("日本-株式会社", None, Action::Deferred),
        outcome("drift-1", Some("001CCC000000004"), Action::Drifted),
    ];
    store.record_outcomes(run, &outcomes, &[]).await.unwrap();
    store.record_outcomes(other, &[outcome("acme-1", None, Action::Updated)], &[]).await.unwrap();

    assert_eq!(store.run_outcomes(run, &all(100)).await.unwrap(), outcomes, "insertion order");
    assert_eq!(store.run_outcomes(run, &OutcomeFilter::default()).await.unwrap(), outcomes, "limit 0 means no limit");

    let search = |s: &str| OutcomeFilter { search: Some(s.into()), limit: 100, ..Default::default() };
    let keys = |v: Vec<RecordOutcome>| v.into_iter().map(|o| o.key).collect::<Vec<_>>();
    assert_eq!(keys(store.run_outcomes(run, &search("ACME")).await.unwrap()), ["acme-1"]);
    // `%` and `_` are literal characters, not wildcards.
    assert_eq!(keys(store.run_outcomes(run, &search("0%_")).await.unwrap()), ["100%_off"]);
    assert_eq!(keys(store.run_outcomes(run, &search("%")).await.unwrap()), ["100%_off"]);
    assert_eq!(keys(store.run_outcomes(run, &search("_")).await.unwrap()), ["100%_off"]);
    assert_eq!(keys(store.run_outcomes(run, &search("k\\s")).await.unwrap()), ["back\\slash 'quoted' \"dq\""]);
    assert_eq!(keys(store.run_outcomes(run, &search("'QUOTED' \"")).await.unwrap()), ["back\\slash 'quoted' \"dq\""]);
    // Unicode case folding, not just ASCII.
    assert_eq!(
        keys(store.run_outcomes(run, &search("äöü gross")).await.unwrap()),
        Vec::<String>::new(),
        "ß is not ss: substring, not collation"
    );
    assert_eq!(keys(store.run_outcomes(run, &search("äöü groß")).await.unwrap()), ["ÄÖÜ Großhandel"]);
    assert_eq!(keys(store.run_outcomes(run, &search("株式")).await.unwrap()), ["日本-株式会社"]);
    // The Salesforce id is searched too, case-insensitively.
    assert_eq!(keys(store.run_outcomes(run, &search("001bbb")).await.unwrap()), ["back\\slash 'quoted' \"dq\""]);
    assert_eq!(keys(store.run_outcomes(run, &search("001aaa")).await.unwrap()).len(), 2);
    assert!(store.run_outcomes(run, &search("nothing")).await.unwrap().is_empty());

    let by_action = OutcomeFilter { action: Some(Action::Failed), limit: 100, ..Default::default() };
    let failed = store.run_outcomes(run, &by_action).await.unwrap();
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].error_code.as_deref(), Some("FIELD_INTEGRITY_EXCEPTION"));

    let page = OutcomeFilter { limit: 2, offset: 2, ..Default::default() };
    assert_eq!(keys(store.run_outcomes(run, &page).await.unwrap()), ["100x off", outcomes[3].key.as_str()]);

    let counts = store.outcome_counts(run).await.unwrap();
    let expected: BTreeMap<Action, u64> = Action::ALL.iter().map(|a| (*a, 1)).collect();
    assert_eq!(counts, expected);
    assert_eq!(store.outcome_counts(other).await.unwrap(), BTreeMap::from([(Action::Updated, 1)]));
    assert!(store.outcome_counts(RunId::new()).await.unwrap().is_empty());
}

async fn outcomes_and_fingerprints_commit_together(store: Arc<dyn Store>) {
    let run = store.start_run(&new_run("wf", t(1, 0))).await.unwrap();
    let fp = |key: &str, v: u64| FingerprintPut {
        value: None,
        scope: "engagement:Account".into(),
        key: key.into(),
        field: "Usage__c".into(),
        fingerprint: v,
        written_at: t(1, 0),
    };
    store.record_outcomes(run, &[outcome("a", Some("001A"), Action::Updated)], &[fp("001A", 7)]).await.unwrap();
    let fps = store.fingerprints("engagement:Account").await.unwrap();
    assert_eq!(fps.get("001A", "Usage__c"), Some(7));

    // Outcomes for a run that does not exist violate the foreign key: the fingerprints written
    // in the same call must roll back with them.
    let err = store
        .record_outcomes(RunId::new(), &[outcome("b", Some("001B"), Action::Updated)], &[fp("001B", 8), fp("001A", 9)])
        .await;
    assert!(matches!(err, Err(StoreError::Query { .. })), "{err:?}");
    let fps = store.fingerprints("engagement:Account").await.unwrap();
    assert_eq!(fps.len(), 1);
    assert_eq!(fps.get("001A", "Usage__c"), Some(7));
}

async fn outcomes_100k_batch(store: Arc<dyn Store>) {
    let n = 100_000;
    let (record, read) = bench::outcomes(store.as_ref(), n).await.unwrap();
    eprintln!("{:?}: {n} outcomes recorded in {record:?}, read in {read:?}", store.backend());
    let runs = store.list_runs(Some("bench"), 1).await.unwrap();
    let counts = store.outcome_counts(runs[0].id).await.unwrap();
    assert_eq!(counts, BTreeMap::from([(Action::Updated, n as u64)]));
    let started = Instant::now();
    let page = OutcomeFilter { limit: 50, offset: 50, ..Default::default() };
    let second_page = store.run_outcomes(runs[0].id, &page).await.unwrap();
    let page_time = started.elapsed();
    assert_eq!(second_page.len(), 50);
    assert_eq!(second_page[0].key, "pendo-account-50");
    let started = Instant::now();
    let search = OutcomeFilter { search: Some("PENDO-ACCOUNT-99999".into()), limit: 10, ..Default::default() };
    let found = store.run_outcomes(runs[0].id, &search).await.unwrap();
    let search_time = started.elapsed();
    eprintln!("{:?}: page 2 of {n} outcomes in {page_time:?}, search in {search_time:?}", store.backend());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].salesforce_id.as_deref(), Some("001000000000099999"));
    assert!(record < Duration::from_secs(60), "recording {n} outcomes took {record:?}");
}

/// Changes are stored as [field id, before, after] with interned names: every shape of change
/// must read back as it was given, across calls and runs that share and add field names.
async fn outcomes_changes_roundtrip_compactly(store: Arc<dyn Store>) {
    let change = |field: &str, before: Option<serde_json::Value>, after: serde_json::Value| FieldChange {
        field: field.into(),
        before,
        after,
    };
    let with = |key: &str, changes: Vec<FieldChange>| RecordOutcome {
        changes,
        ..outcome(key, Some("001AAA000000001"), Action::Updated)
    };
    let first = vec![
        with(
            "a",
            vec![
                change("Events__c", Some(json!(3)), json!(4.5)),
                change("Score__c", None, json!("high")),
                change("Note__c", Some(json!([1, 2])), json!(null)),
                change("Ünïcödé__c", Some(json!({"k": "v"})), json!(true)),
            ],
        ),
        with("b", vec![]),
        with("c", vec![change("Events__c", None, json!(0))]),
    ];
    let a = store.start_run(&new_run("wf", t(1, 0))).await.unwrap();
    store.record_outcomes(a, &first, &[]).await.unwrap();
    let second =
        vec![with("a", vec![change("Score__c", Some(json!("high")), json!("low")), change("New__c", None, json!(1))])];
    let b = store.start_run(&new_run("wf", t(2, 0))).await.unwrap();
    store.record_outcomes(b, &second, &[]).await.unwrap();
    store.record_outcomes(a, &second, &[]).await.unwrap();

    let mut both = first.clone();
    both.extend(second.clone());
    assert_eq!(store.run_outcomes(a, &all(100)).await.unwrap(), both);
    assert_eq!(store.run_outcomes(b, &all(100)).await.unwrap(), second);
    // A null before means "not known", as it always read.
    let unknown = vec![with("d", vec![change("Events__c", Some(json!(null)), json!(1))])];
    store.record_outcomes(b, &unknown, &[]).await.unwrap();
    let read = store.run_outcomes(b, &OutcomeFilter { offset: 1, limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(read[0].changes, vec![change("Events__c", None, json!(1))]);
}

async fn cursors_compare_and_set(store: Arc<dyn Store>) {
    assert_eq!(store.cursor("wf", "events").await.unwrap(), None);
    assert!(!store.advance_cursor("wf", "events", Some("x".into()), "y".into()).await.unwrap());
    assert_eq!(store.cursor("wf", "events").await.unwrap(), None);
    assert!(store.advance_cursor("wf", "events", None, "2026-11-01".into()).await.unwrap());
    assert!(
        !store.advance_cursor("wf", "events", None, "2026-11-02".into()).await.unwrap(),
        "a second first writer is stale"
    );
    assert!(
        !store.advance_cursor("wf", "events", Some("2026-10-01".into()), "2026-11-03".into()).await.unwrap(),
        "a writer that read an old value is stale"
    );
    assert_eq!(store.cursor("wf", "events").await.unwrap().as_deref(), Some("2026-11-01"));
    assert!(store.advance_cursor("wf", "events", Some("2026-11-01".into()), "2026-11-02".into()).await.unwrap());
    assert_eq!(store.cursor("wf", "events").await.unwrap().as_deref(), Some("2026-11-02"));
    // Cursors are per workflow and name.
    assert_eq!(store.cursor("wf", "accounts").await.unwrap(), None);
    assert_eq!(store.cursor("other", "events").await.unwrap(), None);
    let odd = "it's a \"cursor\" \\ with % and _ ✓";
    assert!(store.advance_cursor("wf", odd, None, odd.into()).await.unwrap());
    assert_eq!(store.cursor("wf", odd).await.unwrap().as_deref(), Some(odd));
}

async fn kept_states_compare_and_set_on_the_version(store: Arc<dyn Store>) {
    let read = || async { store.kept_state("wf", "engagement").await.unwrap() };
    assert_eq!(read().await, None);
    assert!(!store.keep_state("wf", "engagement", Some(1), vec![1]).await.unwrap(), "no state to be at a version");
    assert_eq!(read().await, None);
    assert!(store.keep_state("wf", "engagement", None, vec![0, 1, 2]).await.unwrap(), "the first write wins");
    let (first, bytes) = read().await.unwrap();
    assert_eq!(bytes, vec![0, 1, 2]);
    assert!(!store.keep_state("wf", "engagement", None, vec![9]).await.unwrap(), "a second first writer is stale");
    // Two runs read the first version: the first to write wins, the other changes nothing.
    // Megabytes of every byte value, as a deflated state is.
    let state: Vec<u8> = (0..3_000_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    assert!(store.keep_state("wf", "engagement", Some(first), state.clone()).await.unwrap());
    assert!(!store.keep_state("wf", "engagement", Some(first), vec![7]).await.unwrap(), "a stale writer loses");
    let (second, bytes) = read().await.unwrap();
    assert_ne!(second, first);
    assert!(bytes == state, "the winner's bytes are kept whole");
    // Only the version is compared: the same bytes from a writer that read an older version
    // are still stale, and a writer at the current version wins whatever it writes.
    assert!(store.keep_state("wf", "engagement", Some(second), state.clone()).await.unwrap());
    assert!(!store.keep_state("wf", "engagement", Some(second), state).await.unwrap(), "same bytes, stale version");
    let (third, _) = read().await.unwrap();
    assert!(store.keep_state("wf", "engagement", Some(third), Vec::new()).await.unwrap());
    assert_eq!(read().await.map(|(_, bytes)| bytes), Some(Vec::new()));
    // Kept per workflow and name, apart from cursors of the same name.
    assert_eq!(store.kept_state("wf", "other").await.unwrap(), None);
    assert_eq!(store.kept_state("other", "engagement").await.unwrap(), None);
    assert_eq!(store.cursor("wf", "engagement").await.unwrap(), None);
    // State, not history: never pruned.
    let later = crate::clock::written_at() + chrono::Duration::days(3650);
    store.prune_history(later, PRUNE_BATCH, false).await.unwrap();
    assert!(read().await.is_some());
    assert_eq!(store.store_size().await.unwrap().rows["kept_states"], 1);
}

fn entry(workflow: &str, pendo_id: &str, status: MatchStatus, sf: Option<&str>) -> IdMapEntry {
    IdMapEntry {
        workflow: workflow.into(),
        pendo_id: pendo_id.into(),
        status,
        salesforce_id: sf.map(Into::into),
        rule: Some("domain".into()),
        candidates: match status {
            MatchStatus::Ambiguous => vec!["001X".into(), "001Y".into()],
            _ => vec![],
        },
        pinned: false,
        checked_at: t(1, 0),
    }
}

async fn id_map_pin_rule_and_review(store: Arc<dyn Store>) {
    let entries = [
        entry("wf", "p1", MatchStatus::Matched, Some("001A")),
        entry("wf", "p2", MatchStatus::Ambiguous, None),
        entry("wf", "p3", MatchStatus::Unmatched, None),
        entry("wf", "p'4\\%", MatchStatus::Matched, Some("001D")),
        entry("other", "p1", MatchStatus::Unmatched, None),
    ];
    store.put_id_map(&mut entries.iter().cloned()).await.unwrap();
    let map = store.id_map("wf").await.unwrap();
    assert_eq!(map.len(), 4);
    assert!(map.contains(&entries[1]), "candidates round-trip");

    let review: Vec<(String, String)> =
        store.id_map_review(None).await.unwrap().into_iter().map(|e| (e.workflow, e.pendo_id)).collect();
    assert_eq!(review, [("other".into(), "p1".into()), ("wf".into(), "p2".into()), ("wf".into(), "p3".into())]);
    assert_eq!(store.id_map_review(Some("wf")).await.unwrap().len(), 2);

    // A person pins p2; automatic matching must not undo it.
    store.pin_match("wf", "p2", "001PIN").await.unwrap();
    let later = IdMapEntry { checked_at: t(2, 0), ..entry("wf", "p2", MatchStatus::Unmatched, None) };
    store
        .put_id_map(&mut [later.clone(), entry("wf", "p1", MatchStatus::Matched, Some("001A2"))].into_iter())
        .await
        .unwrap();
    let map: HashMap<String, IdMapEntry> =
        store.id_map("wf").await.unwrap().into_iter().map(|e| (e.pendo_id.clone(), e)).collect();
    assert_eq!(map["p2"].status, MatchStatus::Matched);
    assert_eq!(map["p2"].salesforce_id.as_deref(), Some("001PIN"));
    assert!(map["p2"].pinned);
    assert_eq!(map["p1"].salesforce_id.as_deref(), Some("001A2"), "unpinned entries update");
    assert_eq!(store.id_map_review(Some("wf")).await.unwrap().len(), 1);

    // An incoming pinned entry does replace a pin.
    let repin = IdMapEntry { pinned: true, ..entry("wf", "p2", MatchStatus::Matched, Some("001NEW")) };
    store.put_id_map(&mut std::iter::once(repin.clone())).await.unwrap();
    let map = store.id_map("wf").await.unwrap();
    assert!(map.contains(&repin));

    // Pinning a never-seen account creates the entry.
    store.pin_match("wf", "p9", "001NINE").await.unwrap();
    // After unpinning, automatic matching takes over again.
    store.unpin_match("wf", "p2").await.unwrap();
    store.put_id_map(&mut std::iter::once(later.clone())).await.unwrap();
    let map: HashMap<String, IdMapEntry> =
        store.id_map("wf").await.unwrap().into_iter().map(|e| (e.pendo_id.clone(), e)).collect();
    assert_eq!(map["p2"], later);
    assert_eq!(map["p9"].salesforce_id.as_deref(), Some("001NINE"));
    assert!(map["p9"].pinned);
    assert_eq!(map["p'4\\%"].salesforce_id.as_deref(), Some("001D"));
}

async fn id_map_100k(store: Arc<dyn Store>) {
    let n = 100_000;
    let entries: Vec<IdMapEntry> = (0..n)
        .map(|i| entry("big", &format!("pendo-{i:06}"), MatchStatus::Matched, Some(&format!("001{i:015}"))))
        .collect();
    // Two accounts given twice, the later entry the one kept: once within a statement's batch
    // (PostgreSQL refuses two rows for one key in one statement) and once across batches.
    let again = |i: usize, sf: &str| entry("big", &format!("pendo-{i:06}"), MatchStatus::Matched, Some(sf));
    let mut puts = entries.clone();
    puts.insert(6, again(5, "001SAMEBATCH"));
    puts.push(again(0, "001LASTBATCH"));
    let started = Instant::now();
    store.put_id_map(&mut puts.into_iter()).await.unwrap();
    let put = started.elapsed();
    let started = Instant::now();
    let loaded = store.id_map("big").await.unwrap();
    let load = started.elapsed();
    eprintln!("{:?}: {n} id map entries put in {put:?}, loaded in {load:?}", store.backend());
    assert_eq!(loaded.len(), n);
    assert_eq!(loaded[n - 1], entries[n - 1]);
    assert_eq!(loaded[0].salesforce_id.as_deref(), Some("001LASTBATCH"));
    assert_eq!(loaded[5].salesforce_id.as_deref(), Some("001SAMEBATCH"));
    assert_eq!(loaded[6], entries[6]);
}

async fn fingerprints_roundtrip(store: Arc<dyn Store>) {
    let put = |scope: &str, key: &str, field: &str, fp: u64| FingerprintPut {
        value: Some(serde_json::json!({"fp": fp.to_string(), "text": "it's \\ \"v\""})),
        scope: scope.into(),
        key: key.into(),
        field: field.into(),
        fingerprint: fp,
        written_at: t(1, 0),
    };
    store
        .put_fingerprints(&[
            put("s", "001A", "F1", 1),
            put("s", "001A", "F2", u64::MAX),
            put("s", "001B", "F1", 1 << 63),
            put("s", "001B", "F1", (1 << 63) + 5), // same row twice in one batch: last wins
            put("s", "it's \\ %_ ü", "F1", 42),
            put("t", "001A", "F1", 3),
        ])
        .await
        .unwrap();
    let fps = store.fingerprints("s").await.unwrap();
    assert_eq!(fps.len(), 4);
    assert_eq!(fps.get("001A", "F1"), Some(1));
    assert_eq!(fps.get("001A", "F2"), Some(u64::MAX));
    assert_eq!(fps.get("001B", "F1"), Some((1 << 63) + 5));
    assert_eq!(fps.get("it's \\ %_ ü", "F1"), Some(42));
    assert_eq!(fps.get("001B", "F2"), None);
    let values = store.written_values("s", &["001A".into(), "001B".into(), "nope".into()]).await.unwrap();
    let mut a = values["001A"].clone();
    a.sort_by(|x, y| x.0.cmp(&y.0));
    assert_eq!(a[0], ("F1".to_owned(), serde_json::json!({"fp": "1", "text": "it's \\ \"v\""})));
    assert_eq!(a[1].0, "F2");
    assert_eq!(values["001B"][0].1["fp"], ((1u64 << 63) + 5).to_string(), "the last write of a batch wins");
    assert!(!values.contains_key("nope"));

    // Keys as odd as text gets: SQLite keeps every character (a NUL too); PostgreSQL refuses a
    // NUL in text, and says so.
    let nul = store.put_fingerprints(&[put("u", "a\0b", "F1", 5), put("u", "a\0c", "F1", 6)]).await;
    store.put_fingerprints(&[put("u", "tab\t\u{1F600}\u{1}\"\\", "F1", 7)]).await.unwrap();
    let fps = store.fingerprints("u").await.unwrap();
    assert_eq!(fps.get("tab\t\u{1F600}\u{1}\"\\", "F1"), Some(7));
    match store.backend() {
        Backend::Sqlite => {
            nul.unwrap();
            assert_eq!(fps.len(), 3);
            assert_eq!((fps.get("a\0b", "F1"), fps.get("a\0c", "F1")), (Some(5), Some(6)));
        }
        Backend::Postgres => {
            assert!(nul.is_err(), "{nul:?}");
            assert_eq!(fps.len(), 1);
        }
    }

    store.put_fingerprints(&[put("s", "001A", "F1", 10)]).await.unwrap();
    store.forget_fingerprints("s", "001B").await.unwrap();
    let fps = store.fingerprints("s").await.unwrap();
    assert_eq!(fps.len(), 3);
    assert_eq!(fps.get("001A", "F1"), Some(10));
    assert_eq!(fps.get("001B", "F1"), None);
    assert_eq!(store.fingerprints("t").await.unwrap().len(), 1, "scopes are separate");
    assert!(store.fingerprints("none").await.unwrap().is_empty());
}

/// Puts whose fingerprint is the hash of the value written beside it, as every write's are,
/// alongside puts with no value or another fingerprint.
fn derivable_puts() -> Vec<FingerprintPut> {
    let values = [json!(42), json!(50.5), json!(0.0), json!("Ünïcödé \"q\" \\"), json!({"b": [1, null], "a": true})];
    let mut puts: Vec<FingerprintPut> = values
        .iter()
        .enumerate()
        .map(|(i, v)| FingerprintPut {
            scope: "wf:Account".into(),
            key: format!("001{i}"),
            field: "F".into(),
            fingerprint: crate::change::fingerprint(v),
            written_at: t(1, 0),
            value: Some(v.clone()),
        })
        .collect();
    puts.push(FingerprintPut { value: None, fingerprint: 7, ..puts[0].clone() });
    puts.push(FingerprintPut { key: "001X".into(), fingerprint: 8, ..puts[1].clone() });
    puts
}

async fn fingerprints_derived_from_their_values(store: Arc<dyn Store>) {
    let puts = derivable_puts();
    store.put_fingerprints(&puts).await.unwrap();
    let fps = store.fingerprints("wf:Account").await.unwrap();
    assert_eq!(fps.len(), 6);
    for p in &puts[1..] {
        assert_eq!(fps.get(&p.key, "F"), Some(p.fingerprint), "{p:?}");
    }
    // A write without a value keeps the fingerprint given; so does one that is not the value's.
    assert_eq!(fps.get("0010", "F"), Some(7));
    assert_eq!(fps.get("001X", "F"), Some(8));
}

/// What a write stores (every value's fingerprint is its hash) takes no fingerprint column.
#[tokio::test]
async fn fingerprints_of_values_are_not_stored_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(path.to_str().unwrap()).await.unwrap();
    store.put_fingerprints(&derivable_puts()).await.unwrap();
    drop(store);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let (derived, kept): (i64, i64) =
        sqlx::query_as("SELECT sum(fingerprint IS NULL), sum(fingerprint IS NOT NULL) FROM fingerprints")
            .fetch_one(&pool)
            .await
            .unwrap();
    pool.close().await;
    // 0010 was overwritten by the put without a value; 0011..0014 derive theirs.
    assert_eq!((derived, kept), (4, 2));
}

async fn fingerprints_900k(store: Arc<dyn Store>) {
    let n = 900_000;
    let (put, load) = bench::fingerprints(store.as_ref(), n).await.unwrap();
    // Timings are printed for the record, never asserted: tests do not judge speed.
    eprintln!("{:?}: {n} fingerprints put in {put:?}, loaded in {load:?}", store.backend());
}

fn failure(key: &str, code: &str, run: RunId) -> NewFailure {
    NewFailure {
        workflow: "wf".into(),
        run,
        object: "Account".into(),
        key: key.into(),
        salesforce_id: Some(format!("001{key}")),
        payload: json!({"Usage__c": 5, "Note__c": "it's \"x\""}),
        error_code: code.into(),
        message: format!("{code} on {key}"),
        fields: vec!["Usage__c".into()],
    }
}

async fn failures_add_list_group(store: Arc<dyn Store>) {
    let run = RunId::new();
    store
        .add_failures(&[
            failure("k1", "FIELD_INTEGRITY_EXCEPTION", run),
            failure("k2", "FIELD_INTEGRITY_EXCEPTION", run),
            failure("k3", "INVALID_CROSS_REFERENCE_KEY", run),
        ])
        .await
        .unwrap();
    // k1 fails again (also twice within one batch): still one open row, attempts bumped,
    // payload and error replaced.
    let mut again = failure("k1", "STRING_TOO_LONG", run);
    again.payload = json!({"Usage__c": 6});
    store.add_failures(&[again.clone(), again.clone()]).await.unwrap();

    let listed = store.list_failures(&FailureFilter::default()).await.unwrap();
    assert_eq!(listed.len(), 3, "limit 0 means no limit");
    let k1 = &listed[0];
    assert_eq!(k1.key, "k1");
    assert_eq!(k1.attempts, 3);
    assert_eq!(k1.error_code, "STRING_TOO_LONG");
    assert_eq!(k1.payload, json!({"Usage__c": 6}));
    assert_eq!(k1.status, FailureStatus::Open);
    assert_eq!(k1.fields, vec!["Usage__c".to_owned()]);
    assert_eq!(k1.leased_until, None);
    assert!(k1.last_failed_at >= k1.first_failed_at);
    assert_eq!(listed[1].payload, failure("k2", "", run).payload);

    let by_code = store
        .list_failures(&FailureFilter {
            error_code: Some("FIELD_INTEGRITY_EXCEPTION".into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(by_code.iter().map(|f| f.key.as_str()).collect::<Vec<_>>(), ["k2"]);
    let none = store
        .list_failures(&FailureFilter { workflow: Some("other".into()), limit: 100, ..Default::default() })
        .await
        .unwrap();
    assert!(none.is_empty());
    assert_eq!(
        store
            .list_failures(&FailureFilter { status: Some(FailureStatus::Open), limit: 2, ..Default::default() })
            .await
            .unwrap()
            .len(),
        2
    );

    let groups = store.failure_groups(None).await.unwrap();
    assert_eq!(
        groups,
        vec![
            ("FIELD_INTEGRITY_EXCEPTION".into(), "FIELD_INTEGRITY_EXCEPTION on k2".into(), 1),
            ("INVALID_CROSS_REFERENCE_KEY".into(), "INVALID_CROSS_REFERENCE_KEY on k3".into(), 1),
            ("STRING_TOO_LONG".into(), "STRING_TOO_LONG on k1".into(), 1),
        ]
    );
    store.resolve_failure(listed[1].id, t(3, 0)).await.unwrap();
    let groups = store.failure_groups(Some("wf")).await.unwrap();
    assert_eq!(groups.len(), 2, "resolved failures leave the groups");
    assert!(store.failure_groups(Some("other")).await.unwrap().is_empty());
}

async fn failures_claim_lease_resolve_retry(store: Arc<dyn Store>) {
    let run = RunId::new();
    store.add_failures(&[failure("k1", "A", run), failure("k2", "A", run), failure("k3", "B", run)]).await.unwrap();
    let ids: Vec<i64> = store
        .list_failures(&FailureFilter { limit: 10, ..Default::default() })
        .await
        .unwrap()
        .iter()
        .map(|f| f.id)
        .collect();
    let lease = Duration::from_secs(600);

    let by_code = store.claim_failures(&FailureSelector::Code("B".into()), "w1", lease, t(1, 0), 10).await.unwrap();
    assert_eq!(by_code.len(), 1);
    assert_eq!(by_code[0].key, "k3");
    assert_eq!(by_code[0].status, FailureStatus::Replaying);
    assert_eq!(by_code[0].leased_until, Some(t(1, 10)));

    let by_id =
        store.claim_failures(&FailureSelector::Ids(vec![ids[1], ids[2]]), "w1", lease, t(1, 0), 10).await.unwrap();
    assert_eq!(by_id.iter().map(|f| f.id).collect::<Vec<_>>(), [ids[1]], "k3 is leased");

    let rest = store
        .claim_failures(&FailureSelector::All { workflow: Some("wf".into()) }, "w2", lease, t(1, 5), 10)
        .await
        .unwrap();
    assert_eq!(rest.iter().map(|f| f.id).collect::<Vec<_>>(), [ids[0]]);
    assert!(
        store
            .claim_failures(&FailureSelector::All { workflow: None }, "w2", lease, t(1, 9), 10)
            .await
            .unwrap()
            .is_empty(),
        "every lease is live"
    );

    // A worker died: its leases (until 1:10) expire and another worker reclaims them.
    let reclaimed =
        store.claim_failures(&FailureSelector::All { workflow: None }, "w3", lease, t(1, 10), 2).await.unwrap();
    assert_eq!(reclaimed.iter().map(|f| f.id).collect::<Vec<_>>(), [ids[1], ids[2]], "limit 2");
    assert!(reclaimed.iter().all(|f| f.leased_until == Some(t(1, 20))));

    store.resolve_failure(ids[1], t(1, 11)).await.unwrap();
    store.fail_again(ids[2], "C", "still broken", t(1, 12)).await.unwrap();
    let all = store.list_failures(&FailureFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(all[1].status, FailureStatus::Resolved);
    assert_eq!(all[1].leased_until, None);
    assert_eq!(all[2].status, FailureStatus::Open);
    assert_eq!(all[2].attempts, 2);
    assert_eq!(all[2].error_code, "C");
    assert_eq!(all[2].message, "still broken");
    assert_eq!(all[2].last_failed_at, t(1, 12));
    assert_eq!(all[2].leased_until, None);

    // While k1 is replaying, the next run fails it again: a new open failure appears. When the
    // replay fails too, the two fold into one open failure.
    store.add_failures(&[failure("k1", "D", run)]).await.unwrap();
    store.fail_again(ids[0], "E", "replay failed", t(1, 13)).await.unwrap();
    let k1: Vec<Failure> = store
        .list_failures(&FailureFilter { limit: 10, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .filter(|f| f.key == "k1")
        .collect();
    assert_eq!(k1.len(), 1, "{k1:?}");
    assert_eq!(k1[0].status, FailureStatus::Open);
    assert_eq!(k1[0].attempts, 3);
    assert_eq!(k1[0].error_code, "E");

    assert!(store.resolve_failure(999_999, t(2, 0)).await.is_err());
    assert!(store.fail_again(999_999, "X", "x", t(2, 0)).await.is_err());
}

async fn failures_dismissed_with_a_reason(store: Arc<dyn Store>) {
    let run = RunId::new();
    store
        .add_failures(&[
            failure("k1", "A", run),
            failure("k2", "A", run),
            failure("k3", "B", run),
            failure("k4", "B", run),
        ])
        .await
        .unwrap();
    let ids: Vec<i64> =
        store.list_failures(&FailureFilter::default()).await.unwrap().into_iter().map(|f| f.id).collect();
    // k4 is being replayed: a dismissal passes over it.
    let claimed = store.claim_failures(&FailureSelector::Ids(vec![ids[3]]), "w", LEASE, t(1, 0), 10).await.unwrap();
    assert_eq!(claimed.len(), 1);

    let by_id =
        store.dismiss_failures(&FailureSelector::Ids(vec![ids[0]]), "account being merged", t(1, 1)).await.unwrap();
    assert_eq!(by_id, vec![ids[0]]);
    let by_code = store.dismiss_failures(&FailureSelector::Code("B".into()), "known", t(1, 2)).await.unwrap();
    assert_eq!(by_code, vec![ids[2]], "the replaying one is left alone");
    assert!(store.dismiss_failures(&FailureSelector::Ids(vec![ids[0]]), "again", t(1, 3)).await.unwrap().is_empty());

    let dismissed = store
        .list_failures(&FailureFilter { status: Some(FailureStatus::Dismissed), ..Default::default() })
        .await
        .unwrap();
    assert_eq!(dismissed.iter().map(|f| f.id).collect::<Vec<_>>(), vec![ids[0], ids[2]]);
    assert_eq!(dismissed[0].reason.as_deref(), Some("account being merged"));
    let groups = store.failure_groups(None).await.unwrap();
    assert_eq!(groups, vec![("A".to_owned(), "A on k2".to_owned(), 1)], "dismissed ones are not open");
    // Dismissed rows are never claimed for replay.
    let all = store.claim_failures(&FailureSelector::All { workflow: None }, "w2", LEASE, t(1, 0), 10).await.unwrap();
    assert_eq!(all.iter().map(|f| f.id).collect::<Vec<_>>(), vec![ids[1]]);

    // The same refusal recurring stays dismissed (one row, attempts move on); another code opens
    // a new failure, and a dismissal never blocks a later one of that code.
    store.add_failures(&[failure("k1", "A", run)]).await.unwrap();
    let k1 = |all: &[crate::store::Failure]| all.iter().filter(|f| f.key == "k1").cloned().collect::<Vec<_>>();
    let now = store.list_failures(&FailureFilter::default()).await.unwrap();
    assert_eq!(k1(&now).len(), 1);
    assert_eq!((k1(&now)[0].status, k1(&now)[0].attempts), (FailureStatus::Dismissed, 2));
    store.add_failures(&[failure("k1", "C", run)]).await.unwrap();
    store.add_failures(&[failure("k1", "A", run)]).await.unwrap();
    let now = store.list_failures(&FailureFilter::default()).await.unwrap();
    let open: Vec<_> = k1(&now).into_iter().filter(|f| f.status == FailureStatus::Open).collect();
    assert_eq!(open.len(), 1, "one open failure per record: {now:?}");
    assert_eq!((open[0].error_code.as_str(), open[0].attempts), ("A", 2));
}

async fn failures_concurrent_claimers(store: Arc<dyn Store>) {
    let run = RunId::new();
    let n = 300;
    let failures: Vec<NewFailure> = (0..n).map(|i| failure(&format!("k{i}"), "A", run)).collect();
    store.add_failures(&failures).await.unwrap();
    let claimer = |worker: &'static str| {
        let store = store.clone();
        tokio::spawn(async move {
            let mut got = Vec::new();
            loop {
                let batch = store
                    .claim_failures(
                        &FailureSelector::All { workflow: None },
                        worker,
                        Duration::from_secs(600),
                        t(1, 0),
                        7,
                    )
                    .await
                    .unwrap();
                if batch.is_empty() {
                    return got;
                }
                got.extend(batch.into_iter().map(|f| f.id));
            }
        })
    };
    let (a, b) = (claimer("w1"), claimer("w2"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let sa: BTreeSet<i64> = a.iter().copied().collect();
    let sb: BTreeSet<i64> = b.iter().copied().collect();
    assert_eq!(sa.len(), a.len(), "no row twice to one claimer");
    assert!(sa.is_disjoint(&sb), "no row to both claimers");
    assert_eq!(sa.len() + sb.len(), n, "every row claimed");
}

async fn budget_ledger(store: Arc<dyn Store>) {
    let d = day();
    assert!(store.reserve_budget(d, "wf-a", 600, 1000, t(1, 0)).await.unwrap());
    assert!(store.reserve_budget(d, "wf-b", 400, 1000, t(1, 0)).await.unwrap());
    assert!(!store.reserve_budget(d, "wf-b", 1, 1000, t(1, 0)).await.unwrap(), "cap reached");
    // Settling releases the reservation and records what was really spent.
    store.settle_budget(d, "wf-a", 600, 250, t(1, 30)).await.unwrap();
    store.settle_budget(d, "wf-a", 0, 50, t(3, 15)).await.unwrap();
    assert!(store.reserve_budget(d, "wf-b", 300, 1000, t(2, 0)).await.unwrap());
    assert!(!store.reserve_budget(d, "wf-b", 1, 1000, t(2, 0)).await.unwrap());
    store.settle_budget(d, "wf-b", 700, 100, t(3, 45)).await.unwrap();
    // Over-release clamps at zero.
    store.settle_budget(d, "wf-b", 5, 0, t(4, 0)).await.unwrap();
    store.observe_org_usage(d, 12_000, 100_000, t(3, 0)).await.unwrap();
    store.observe_org_usage(d, 15_000, 100_000, t(4, 0)).await.unwrap();
    store.observe_org_usage(d, 11_000, 100_000, t(2, 0)).await.unwrap(); // stale, ignored

    let b = store.budget_day(d).await.unwrap();
    assert_eq!(
        b,
        BudgetDay {
            day: d,
            reserved: 0,
            spent: 400,
            by_workflow: BTreeMap::from([("wf-a".into(), 300), ("wf-b".into(), 100)]),
            org_used: Some(15_000),
            org_max: Some(100_000),
            observed_at: Some(t(4, 0)),
        }
    );
    assert_eq!(store.spent_per_hour(d).await.unwrap(), vec![(1, 250), (3, 150)]);

    let other = d.succ_opt().expect("next day");
    assert!(store.reserve_budget(other, "wf-a", 1000, 1000, t(23, 0)).await.unwrap(), "days are separate");
    let empty = store.budget_day(d.pred_opt().expect("previous day")).await.unwrap();
    assert_eq!((empty.reserved, empty.spent, empty.org_used), (0, 0, None));
    assert!(store.spent_per_hour(other).await.unwrap().is_empty());
    assert!(store.reserve_budget(d, "wf", u64::MAX, u64::MAX, t(1, 0)).await.is_err());
}

async fn budget_reservations_of_dead_runs_are_released(store: Arc<dyn Store>) {
    let d = day();
    // A run of wf-a reserved 600 and died; wf-b holds 300 of its own.
    assert!(store.reserve_budget(d, "wf-a", 600, 1000, t(1, 0)).await.unwrap());
    assert!(store.reserve_budget(d, "wf-b", 300, 1000, t(1, 0)).await.unwrap());
    assert!(!store.reserve_budget(d, "wf-a", 200, 1000, t(1, 5)).await.unwrap(), "the dead run's share blocks");
    assert_eq!(store.release_reservations(d, "wf-a").await.unwrap(), 600);
    assert_eq!(store.release_reservations(d, "wf-a").await.unwrap(), 0, "released once");
    assert_eq!(store.release_reservations(d, "never-ran").await.unwrap(), 0);
    assert_eq!(store.budget_day(d).await.unwrap().reserved, 300, "wf-b keeps its reservation");
    assert!(store.reserve_budget(d, "wf-a", 700, 1000, t(1, 10)).await.unwrap());
    // A stalled holder settling late clamps at zero rather than going negative.
    store.settle_budget(d, "wf-a", 900, 10, t(1, 20)).await.unwrap();
    let b = store.budget_day(d).await.unwrap();
    assert_eq!((b.reserved, b.spent), (300, 10));
}

async fn budget_concurrent_reservations_respect_cap(store: Arc<dyn Store>) {
    let d = day();
    let cap = 500;
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let workflow = format!("wf-{}", i % 3);
                let mut granted = 0u64;
                for _ in 0..15 {
                    if store.reserve_budget(d, &workflow, 7, cap, t(1, 0)).await.unwrap() {
                        granted += 7;
                    }
                }
                granted
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    let b = store.budget_day(d).await.unwrap();
    assert_eq!(b.reserved, total, "the ledger agrees with what was granted");
    assert!(total <= cap, "{total} reserved over a cap of {cap}");
    assert_eq!(total, cap / 7 * 7, "and no grant was refused while there was room");
}

/// Keys settled in bulk read back as committed, whether they were new, begun (pending) or
/// committed before (then with the id given now); keys begun in bulk get what one
/// `begin_create` each would give, in their order.
async fn creates_begun_and_committed_in_one_go(store: Arc<dyn Store>) {
    assert_eq!(store.begin_create("pending", "wf", t(1, 0)).await.unwrap(), CreateState::New);
    assert_eq!(store.begin_create("done", "wf", t(1, 0)).await.unwrap(), CreateState::New);
    store.commit_create("done", "00T000000000001", t(1, 0)).await.unwrap();
    let keys = ["new", "pending", "done"].map(|k| (k.to_owned(), "handled".to_owned()));
    store.commit_creates("wf", &keys, t(2, 0)).await.unwrap();
    store.commit_creates("wf", &[], t(2, 0)).await.unwrap();
    assert_eq!(store.begin_creates(&[], "wf", t(2, 0)).await.unwrap(), []);
    assert_eq!(store.begin_create("waiting", "wf", t(1, 0)).await.unwrap(), CreateState::New);
    let keys = ["new", "waiting", "fresh"].map(str::to_owned);
    let handled = CreateState::Committed { salesforce_id: "handled".into() };
    assert_eq!(
        store.begin_creates(&keys, "wf", t(2, 1)).await.unwrap(),
        [handled.clone(), CreateState::Pending { since: t(1, 0) }, CreateState::New],
        "in the order of the keys, as begin_create one by one"
    );
    assert_eq!(store.begin_create("fresh", "wf", t(2, 2)).await.unwrap(), CreateState::Pending { since: t(2, 1) });
    for key in ["new", "pending", "done"] {
        assert_eq!(
            store.begin_create(key, "wf", t(3, 0)).await.unwrap(),
            CreateState::Committed { salesforce_id: "handled".into() },
            "{key}"
        );
        store.abandon_create(key).await.unwrap();
        assert!(matches!(store.begin_create(key, "wf", t(3, 0)).await.unwrap(), CreateState::Committed { .. }));
    }
}

async fn idempotent_creates(store: Arc<dyn Store>) {
    let key = "wf:Task:pendo-1:2026-11-27 'q' \\ ü";
    assert_eq!(store.begin_create(key, "wf", t(1, 0)).await.unwrap(), CreateState::New);
    assert_eq!(store.begin_create(key, "wf", t(1, 5)).await.unwrap(), CreateState::Pending { since: t(1, 0) });
    store.commit_create(key, "00T000000000001", t(1, 6)).await.unwrap();
    assert_eq!(
        store.begin_create(key, "wf", t(2, 0)).await.unwrap(),
        CreateState::Committed { salesforce_id: "00T000000000001".into() }
    );
    store.abandon_create(key).await.unwrap();
    assert!(
        matches!(store.begin_create(key, "wf", t(2, 0)).await.unwrap(), CreateState::Committed { .. }),
        "a committed create is never forgotten"
    );

    assert_eq!(store.begin_create("k2", "wf", t(1, 0)).await.unwrap(), CreateState::New);
    store.abandon_create("k2").await.unwrap();
    assert_eq!(store.begin_create("k2", "wf", t(1, 1)).await.unwrap(), CreateState::New);
    assert!(store.commit_create("never-begun", "001", t(1, 0)).await.is_err());

    // Concurrent beginners: exactly one gets New.
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.begin_create("race", "wf", t(1, 0)).await.unwrap() })
        })
        .collect();
    let mut news = 0;
    for task in tasks {
        if task.await.unwrap() == CreateState::New {
            news += 1;
        }
    }
    assert_eq!(news, 1);
}

#[tokio::test]
async fn opens_memory_and_url_forms() {
    let store = open("sqlite::memory:").await.unwrap();
    assert_eq!(store.backend(), Backend::Sqlite);
    let run = store.start_run(&new_run("wf", t(1, 0))).await.unwrap();
    assert!(store.get_run(run).await.unwrap().is_some(), "one in-memory database across calls");

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("nested.db");
    let url = format!("sqlite://{}", path.display());
    let store = open(&url).await.unwrap();
    store.start_run(&new_run("wf", t(1, 0))).await.unwrap();
    drop(store);
    // Reopening migrates nothing new and keeps the data.
    let store = open(path.to_str().unwrap()).await.unwrap();
    assert_eq!(store.list_runs(None, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn open_errors_name_the_location_without_the_password() {
    let missing = "/nonexistent-dir-usagesync/state.db";
    let err = open(missing).await.err().expect("cannot create a file in a missing directory");
    assert!(matches!(err, StoreError::Open { .. }));
    assert!(err.to_string().contains(missing), "{err}");

    // Port 1 on localhost refuses connections.
    let err = open("postgres://app:hunter2@127.0.0.1:1/x").await.err().expect("nothing listens on port 1");
    let text = err.to_string();
    assert!(text.contains("postgres://app:***@127.0.0.1:1/x"), "{text}");
    assert!(!text.contains("hunter2"), "{text}");
}

#[tokio::test]
async fn unknown_enum_text_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let store = open(path.to_str().unwrap()).await.unwrap();
    let run = store.start_run(&new_run("wf", t(1, 0))).await.unwrap();
    drop(store);
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    sqlx::query("UPDATE runs SET state = 'exploded'").execute(&pool).await.unwrap();
    pool.close().await;
    let store = open(path.to_str().unwrap()).await.unwrap();
    let err = store.get_run(run).await.expect_err("unknown state");
    assert!(matches!(err, StoreError::Corrupt { what: "run state", .. }), "{err:?}");
    assert!(err.to_string().contains("exploded"), "{err}");
}

/// Two stores on one database stand in for two processes: each has its own connections.
async fn reserve_from_two_stores(a: Arc<dyn Store>, b: Arc<dyn Store>) {
    let d = day();
    let cap = 300;
    let tasks: Vec<_> = [a.clone(), b, a.clone(), a.clone()]
        .into_iter()
        .enumerate()
        .map(|(i, store)| {
            tokio::spawn(async move {
                let mut granted = 0u64;
                for _ in 0..20 {
                    if store.reserve_budget(d, &format!("wf-{i}"), 11, cap, t(1, 0)).await.unwrap() {
                        granted += 11;
                    }
                }
                granted
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.unwrap();
    }
    assert_eq!(total, cap / 11 * 11);
    assert_eq!(a.budget_day(d).await.unwrap().reserved, total);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_cap_holds_across_stores_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let a = open(path.to_str().unwrap()).await.unwrap();
    let b = open(path.to_str().unwrap()).await.unwrap();
    reserve_from_two_stores(a, b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budget_cap_holds_across_stores_postgres() {
    with_postgres_schema(|url, schema| async move {
        let a = open_postgres_schema(&url, &schema).await.unwrap();
        let b = open_postgres_schema(&url, &schema).await.unwrap();
        reserve_from_two_stores(a, b).await;
    })
    .await;
}

/// A run of `workflow` started at `at`, finished an hour later as `state`, with `outcomes`
/// outcomes recorded.
async fn finished_run(
    store: &Arc<dyn Store>,
    workflow: &str,
    at: DateTime<Utc>,
    state: RunState,
    dry_run: bool,
    outcomes: usize,
) -> RunId {
    let id = store.start_run(&NewRun { dry_run, ..new_run(workflow, at) }).await.unwrap();
    let rows: Vec<RecordOutcome> =
        (0..outcomes).map(|i| outcome(&format!("acct-{i}"), Some(&format!("001{i:015}")), Action::Updated)).collect();
    store.record_outcomes(id, &rows, &[]).await.unwrap();
    let finish = RunFinish { state, finished_at: secs(at, 3_600), stats: json!({}), error: None };
    store.finish_run(id, &finish).await.unwrap();
    id
}

async fn retention_prunes_history_and_keeps_state(store: Arc<dyn Store>) {
    // Failure times are written with the wall clock, so the cutoff is set from it.
    let cutoff = crate::clock::written_at() + chrono::Duration::days(1);
    let old = cutoff - chrono::Duration::days(10);
    let hours = |h: i64| secs(old, h * 3_600);
    let recent = secs(cutoff, 3_600);

    let r1 = finished_run(&store, "wf", hours(0), RunState::Succeeded, false, 2_000).await;
    let r2 = finished_run(&store, "wf", hours(2), RunState::Failed, false, 3).await;
    let r3 = finished_run(&store, "wf", hours(4), RunState::Succeeded, false, 0).await;
    let running = store.start_run(&new_run("wf", hours(6))).await.unwrap();
    let cited = finished_run(&store, "wf", hours(8), RunState::Partial, false, 2).await;
    let r5 = finished_run(&store, "wf", recent, RunState::Succeeded, false, 1).await;
    // A workflow quiet since: its newest run and its newest real success stay, however old.
    let q0 = finished_run(&store, "quiet", hours(0), RunState::Failed, false, 1).await;
    let q1 = finished_run(&store, "quiet", hours(2), RunState::Succeeded, false, 1).await;
    let d1 = finished_run(&store, "quiet", hours(4), RunState::Succeeded, true, 1).await;
    let q2 = finished_run(&store, "quiet", hours(6), RunState::Failed, false, 1).await;

    // Failures: one open (citing `cited`), one replaying, one dismissed, one resolved.
    store
        .add_failures(&[
            failure("k-open", "A", cited),
            failure("k-replaying", "A", cited),
            failure("k-dismissed", "B", r2),
            failure("k-resolved", "C", r2),
        ])
        .await
        .unwrap();
    let listed = store.list_failures(&FailureFilter { limit: 10, ..Default::default() }).await.unwrap();
    let id_of = |key: &str| listed.iter().find(|f| f.key == key).map(|f| f.id).unwrap();
    let lease = Duration::from_secs(600);
    let now = crate::clock::written_at();
    let claimed = store
        .claim_failures(&FailureSelector::Ids(vec![id_of("k-replaying"), id_of("k-resolved")]), "w", lease, now, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    store.resolve_failure(id_of("k-resolved"), now).await.unwrap();
    store.dismiss_failures(&FailureSelector::Code("B".into()), "known", now).await.unwrap();

    // Webhook events: one processed long ago, one still pending from long ago.
    store.put_event(&nps_event("done", "v1", Some("a1"), hours(0))).await.unwrap();
    store.put_event(&nps_event("pending", "v2", Some("a2"), hours(0))).await.unwrap();
    assert_eq!(ids(&store.claim_events("w", LEASE, hours(1), 1).await.unwrap()), ["done"]);
    assert_eq!(mark(&store, "w", &["done".into()], hours(1)).await, 1);

    // The budget ledger of an old day and of the cutoff's day.
    let old_day = old.date_naive();
    store.reserve_budget(old_day, "wf", 5, 100, hours(0)).await.unwrap();
    store.settle_budget(old_day, "wf", 5, 3, hours(0)).await.unwrap();
    store.observe_org_usage(old_day, 10, 1_000, hours(0)).await.unwrap();
    store.settle_budget(cutoff.date_naive(), "wf", 0, 2, cutoff).await.unwrap();

    // State a later run decides with: fingerprints and the create ledger.
    let fp = FingerprintPut {
        scope: "wf:Account".into(),
        key: "001A".into(),
        field: "Usage__c".into(),
        fingerprint: 7,
        written_at: hours(0),
        value: Some(json!(7)),
    };
    store.put_fingerprints(std::slice::from_ref(&fp)).await.unwrap();
    assert_eq!(store.begin_create("create-1", "wf", hours(0)).await.unwrap(), CreateState::New);
    store.commit_create("create-1", "006A", hours(0)).await.unwrap();
    assert_eq!(store.begin_create("create-2", "wf", hours(0)).await.unwrap(), CreateState::New);

    let before = store.store_size().await.unwrap();
    let expected = Pruned { runs: 5, outcomes: 2_000 + 3 + 1 + 1, failures: 1, inbox_events: 1, budget_rows: 4 };
    let counted = store.prune_history(cutoff, 500, true).await.unwrap();
    assert_eq!(counted, expected, "a dry run counts");
    assert_eq!(store.store_size().await.unwrap().rows, before.rows, "and deletes nothing");

    let pruned = store.prune_history(cutoff, 500, false).await.unwrap();
    assert_eq!(pruned, expected);
    assert_eq!(store.prune_history(cutoff, 500, false).await.unwrap(), Pruned::default(), "a second prune finds none");

    let mut kept: Vec<RunId> = store.list_runs(None, 0).await.unwrap().iter().map(|r| r.id).collect();
    kept.sort();
    let mut want = vec![running, cited, r5, q1, q2];
    want.sort();
    assert_eq!(kept, want, "pruned r1 {r1}, r2 {r2}, r3 {r3}, q0 {q0}, d1 {d1}");
    assert!(store.run_outcomes(r1, &all(0)).await.unwrap().is_empty());
    assert_eq!(store.run_outcomes(cited, &all(0)).await.unwrap().len(), 2);
    assert_eq!(store.get_run(running).await.unwrap().map(|r| r.state), Some(RunState::Running));

    let mut statuses: Vec<(String, FailureStatus)> = store
        .list_failures(&FailureFilter { limit: 0, ..Default::default() })
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.key, f.status))
        .collect();
    statuses.sort();
    assert_eq!(
        statuses,
        [
            ("k-dismissed".to_owned(), FailureStatus::Dismissed),
            ("k-open".to_owned(), FailureStatus::Open),
            ("k-replaying".to_owned(), FailureStatus::Replaying),
        ]
    );
    assert_eq!(store.inbox_counts().await.unwrap(), InboxCounts { received: 1, pending: 1 });
    let old_ledger = store.budget_day(old_day).await.unwrap();
    assert_eq!((old_ledger.spent, old_ledger.org_used), (0, None));
    assert_eq!(store.budget_day(cutoff.date_naive()).await.unwrap().spent, 2, "the cutoff's day stays");
    assert_eq!(store.fingerprints("wf:Account").await.unwrap().get("001A", "Usage__c"), Some(7));
    assert_eq!(
        store.begin_create("create-1", "wf", recent).await.unwrap(),
        CreateState::Committed { salesforce_id: "006A".into() }
    );
    assert!(matches!(store.begin_create("create-2", "wf", recent).await.unwrap(), CreateState::Pending { .. }));

    // SQLite files are created in incremental auto-vacuum mode: the freed pages go back.
    let released = store.reclaim_space(false).await.unwrap();
    let after = store.store_size().await.unwrap();
    match store.backend() {
        Backend::Sqlite => {
            assert!(released > 0, "2,000 outcomes freed pages");
            assert_eq!(after.free_bytes, 0);
            assert!(after.bytes < before.bytes, "{} < {}", after.bytes, before.bytes);
        }
        Backend::Postgres => assert_eq!(released, 0),
    }
    assert!(store.prune_history(cutoff, 0, false).await.is_err(), "a batch of no rows is refused");
}

/// Fingerprints are state, not history: a record's field keeps one row however many runs wrote
/// it, so they grow with the records synced, never with the runs.
async fn fingerprints_one_row_per_record_and_field(store: Arc<dyn Store>) {
    let records = 50;
    let fields = ["F1", "F2", "F3"];
    for day in 0..5u64 {
        let run = store.start_run(&new_run("wf", secs(t(1, 0), (day * 86_400) as i64))).await.unwrap();
        let outcomes: Vec<RecordOutcome> =
            (0..records).map(|i| outcome(&format!("a{i}"), Some(&format!("001{i}")), Action::Updated)).collect();
        let puts: Vec<FingerprintPut> = (0..records)
            .flat_map(|i| {
                fields.iter().map(move |f| FingerprintPut {
                    scope: "wf:Account".into(),
                    key: format!("001{i}"),
                    field: (*f).into(),
                    fingerprint: day * 1_000 + i,
                    written_at: t(1, 0),
                    value: Some(json!(day)),
                })
            })
            .collect();
        store.record_outcomes(run, &outcomes, &puts).await.unwrap();
    }
    let size = store.store_size().await.unwrap();
    assert_eq!(size.rows["fingerprints"], records * fields.len() as u64);
    assert_eq!(size.rows["outcomes"], records * 5, "outcomes are per run (history)");
    let fps = store.fingerprints("wf:Account").await.unwrap();
    assert_eq!(fps.get("0017", "F2"), Some(4_007), "the last run's fingerprint");
}
