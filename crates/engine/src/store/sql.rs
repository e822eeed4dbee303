//! The one implementation of the store traits, over SQLite and PostgreSQL alike: every
//! statement is written once here, in SQL both databases accept (`$n` placeholders, `CAST`
//! rather than `::`, `CASE` rather than `GREATEST`), and [`super::dialect`] supplies what truly
//! differs. Opening, pooling and migrating stay with each backend (`sqlite.rs`, `postgres.rs`):
//! the migrations stay two directories because sqlx records each applied file's checksum (an
//! existing database must find them unchanged) and their column types differ by design.
//!
//! Where the two backends used to do one thing two ways, the way both databases accept was
//! kept: one `UPDATE … WHERE id IN (SELECT … LIMIT n [FOR UPDATE SKIP LOCKED])` claim form, the
//! retrying `begin_create`, the lock-then-merge `fail_again`, and a sweep that re-checks each
//! lease; under SQLite's single writer these give the results the old SQLite code gave.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt;
use uuid::Uuid;

use super::dialect::{Column, DbRow, Dialect, Pool, Stmt, Tx};
use super::{
    Action, Backend, BudgetDay, BudgetStore, CreateState, CursorStore, DecideHeld, Failure, FailureFilter,
    FailureSelector, FailureStatus, FailureStore, FingerprintPut, FingerprintStore, Fingerprints, IdMapEntry,
    IdMapStore, IdempotencyStore, InboxCounts, InboxEvent, InboxStore, MatchStatus, NewFailure, NewRun, OutcomeFilter,
    Pruned, RecordOutcome, Recorded, RetentionStore, Run, RunClaim, RunFinish, RunId, RunState, RunStore, Store,
    StoreError, StoreFuture, StoreSize, abandoned_error, decode_page, encode_pages, finished_after_abandoned,
    fp_from_db, fp_to_db, from_db_count, from_json_text, json_text, last_per_key, lease_until, outcome_fields,
    outcome_matches, search_term, to_db_count,
};

/// The state store in an SQLite or PostgreSQL database.
#[derive(Debug, Clone)]
pub struct SqlStore {
    pool: Pool,
}

impl SqlStore {
    pub(super) fn new(pool: Pool) -> Self {
        SqlStore { pool }
    }

    fn dialect(&self) -> Dialect {
        Dialect::of(&self.pool)
    }
}

fn run_from_row(row: &DbRow) -> Result<Run, StoreError> {
    Ok(Run {
        id: RunId(row.get::<Uuid>("id")?),
        workflow: row.get("workflow")?,
        template: row.get("template")?,
        dry_run: row.get("dry_run")?,
        trigger: row.get("trigger")?,
        state: RunState::parse(&row.get::<String>("state")?)?,
        started_at: row.time("run started_at", "started_at")?,
        finished_at: row.opt_time("run finished_at", "finished_at")?,
        stats: row.json("run stats", "stats")?,
        error: row.get("error")?,
        holder: row.get("holder")?,
        heartbeat_at: row.opt_time("run heartbeat_at", "heartbeat_at")?,
        lease_until: row.opt_time("run lease_until", "lease_until")?,
    })
}

/// Marks the running runs whose lease expired before `now` abandoned, inside the caller's
/// write transaction, and returns those it marked. Each update re-checks state and lease, so a
/// concurrent sweep or a renewal that committed first wins, and rows are taken in id order so
/// two sweepers never wait on each other in a cycle.
async fn sweep_expired(tx: &mut Tx, now: DateTime<Utc>) -> Result<Vec<Run>, StoreError> {
    const OP: &str = "sweep expired runs";
    let rows = tx
        .query("SELECT * FROM runs WHERE state = $1 AND lease_until < $2 ORDER BY id")
        .bind(RunState::Running.as_str())
        .bind_time(now)
        .fetch_all(OP)
        .await?;
    let mut abandoned = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut run = run_from_row(row)?;
        let Some(until) = run.lease_until else { continue };
        let error = abandoned_error(run.holder.as_deref(), until);
        let marked = tx
            .query(
                "UPDATE runs SET state = $1, finished_at = $2, error = $3 \
                 WHERE id = $4 AND state = $5 AND lease_until < $2",
            )
            .bind(RunState::Abandoned.as_str())
            .bind_time(now)
            .bind(error.as_str())
            .bind(run.id.0)
            .bind(RunState::Running.as_str())
            .execute(OP)
            .await?
            == 1;
        if marked {
            run.state = RunState::Abandoned;
            run.finished_at = Some(now);
            run.error = Some(error);
            abandoned.push(run);
        }
    }
    Ok(abandoned)
}

/// A write that names its row by key changed nothing: the caller named a row that is not there.
fn changed_one(changed: u64, what: &'static str, detail: impl FnOnce() -> String) -> Result<(), StoreError> {
    if changed == 0 {
        return Err(StoreError::Invalid { what, detail: detail() });
    }
    Ok(())
}

fn id_map_from_row(row: &DbRow) -> Result<IdMapEntry, StoreError> {
    Ok(IdMapEntry {
        workflow: row.get("workflow")?,
        pendo_id: row.get("pendo_id")?,
        status: MatchStatus::parse(&row.get::<String>("status")?)?,
        salesforce_id: row.get("salesforce_id")?,
        rule: row.get("rule")?,
        candidates: from_json_text("id map candidates", row.str("candidates")?)?,
        pinned: row.get("pinned")?,
        checked_at: row.time("id map checked_at", "checked_at")?,
    })
}

fn failure_from_row(row: &DbRow) -> Result<Failure, StoreError> {
    let attempts = row.int("attempts")?;
    Ok(Failure {
        id: row.get("id")?,
        workflow: row.get("workflow")?,
        run: RunId(row.get::<Uuid>("run_id")?),
        object: row.get("object")?,
        key: row.get("key")?,
        salesforce_id: row.get("salesforce_id")?,
        payload: row.json("failure payload", "payload")?,
        error_code: row.get("error_code")?,
        message: row.get("message")?,
        fields: from_json_text("failure fields", row.str("fields")?)?,
        status: FailureStatus::parse(&row.get::<String>("status")?)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt { what: "failure attempts", detail: format!("{attempts}") })?,
        first_failed_at: row.time("failure first_failed_at", "first_failed_at")?,
        last_failed_at: row.time("failure last_failed_at", "last_failed_at")?,
        leased_until: row.opt_time("failure leased_until", "leased_until")?,
        reason: row.get("reason")?,
    })
}

fn inbox_event_from_row(row: &DbRow) -> Result<InboxEvent, StoreError> {
    Ok(InboxEvent {
        unique_id: row.get("unique_id")?,
        source: row.get("source")?,
        kind: row.get("kind")?,
        received_at: row.time("inbox.received_at", "received_at")?,
        body: row.json("inbox.body", "body")?,
    })
}

const FAILURE_COLUMNS: &str = "id, workflow, run_id, object, key, salesforce_id, payload, \
     error_code, message, fields, status, attempts, first_failed_at, last_failed_at, leased_until, reason";

/// The refusal a person dismissed, recurring: the dismissed row takes the attempt and stays
/// dismissed, unless the record has a live failure already (which then takes it).
const DISMISSED_AGAIN: &str = "UPDATE failures SET attempts = attempts + 1, last_failed_at = $6, run_id = $5 \
     WHERE workflow = $1 AND object = $2 AND key = $3 AND error_code = $4 AND status = 'dismissed' \
     AND NOT EXISTS (SELECT 1 FROM failures l WHERE l.workflow = $1 AND l.object = $2 AND l.key = $3 \
       AND l.status IN ('open', 'replaying'))";

/// The statement's condition for a failure selector, its argument bound at `param`.
fn selector_condition(dialect: Dialect, selector: &FailureSelector, param: &str) -> String {
    match selector {
        FailureSelector::All { .. } => format!("(CAST({param} AS TEXT) IS NULL OR workflow = {param})"),
        FailureSelector::Ids(_) => dialect.in_list("id", param),
        FailureSelector::Code(_) => format!("error_code = {param}"),
    }
}

/// Binds a failure selector's argument (see [`selector_condition`]).
fn bind_selector<'c>(stmt: Stmt<'c>, selector: &FailureSelector) -> Result<Stmt<'c>, StoreError> {
    Ok(match selector {
        FailureSelector::All { workflow } => stmt.bind(workflow.as_deref()),
        FailureSelector::Ids(ids) => stmt.bind_list(ids)?,
        FailureSelector::Code(code) => stmt.bind(code.as_str()),
    })
}

/// The ids of field names in outcome changes, adding the names not seen before. Concurrent
/// writers of one new name both end with the same id: the second insert does nothing.
async fn intern_fields(tx: &mut Tx, dialect: Dialect, names: &[String]) -> Result<HashMap<String, i64>, StoreError> {
    const OP: &str = "intern field names";
    if names.is_empty() {
        return Ok(HashMap::new());
    }
    let columns = [Column::Text(names.iter().map(String::as_str).collect())];
    tx.insert_batch(OP, "INSERT INTO field_names (name)", &columns, names.len(), " ON CONFLICT (name) DO NOTHING")
        .await?;
    let sql = format!("SELECT id, name FROM field_names WHERE {}", dialect.in_list("name", "$1"));
    let rows = tx.query(sqlx::AssertSqlSafe(sql)).bind_list(names)?.fetch_all(OP).await?;
    rows.iter().map(|row| Ok((row.get::<String>("name")?, row.int("id")?))).collect()
}

/// The name of an interned field id.
fn field_name(fields: &HashMap<i64, String>, id: i64) -> Result<&str, StoreError> {
    fields
        .get(&id)
        .map(String::as_str)
        .ok_or_else(|| StoreError::Corrupt { what: "fingerprint field", detail: format!("unknown field id {id}") })
}

/// Every interned field name by id, for reading outcome changes and fingerprints.
async fn field_names(pool: &Pool) -> Result<HashMap<i64, String>, StoreError> {
    let rows = pool.query("SELECT id, name FROM field_names").fetch_all("read field names").await?;
    rows.iter().map(|row| Ok((row.int("id")?, row.get::<String>("name")?))).collect()
}

/// The ids of fingerprint scopes, adding the names not seen before, each scope's write time
/// moved on to the latest of `puts`.
async fn intern_scopes(
    tx: &mut Tx,
    dialect: Dialect,
    puts: &[&FingerprintPut],
) -> Result<HashMap<String, i64>, StoreError> {
    const OP: &str = "intern fingerprint scopes";
    let mut latest: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    for p in puts {
        let at = latest.entry(p.scope.as_str()).or_insert(p.written_at);
        *at = (*at).max(p.written_at);
    }
    if latest.is_empty() {
        return Ok(HashMap::new());
    }
    let columns = [Column::Text(latest.keys().copied().collect()), Column::Time(latest.values().copied().collect())];
    tx.insert_batch(
        OP,
        "INSERT INTO fingerprint_scopes (name, written_at)",
        &columns,
        latest.len(),
        " ON CONFLICT (name) DO UPDATE SET written_at = CASE WHEN excluded.written_at > fingerprint_scopes.written_at \
         THEN excluded.written_at ELSE fingerprint_scopes.written_at END",
    )
    .await?;
    let names: Vec<&str> = latest.keys().copied().collect();
    let sql = format!("SELECT id, name FROM fingerprint_scopes WHERE {}", dialect.in_list("name", "$1"));
    let rows = tx.query(sqlx::AssertSqlSafe(sql)).bind_list(&names)?.fetch_all(OP).await?;
    rows.iter().map(|row| Ok((row.get::<String>("name")?, row.int("id")?))).collect()
}

/// A fingerprint as stored beside the value's JSON text: NULL when it is that text's hash, as
/// it is for every value a write stores, so a row keeps the value and not both.
fn stored_fingerprint(fingerprint: u64, value: Option<&str>) -> Option<i64> {
    match value {
        Some(text) if crate::change::fingerprint_text(text) == fingerprint => None,
        _ => Some(fp_to_db(fingerprint)),
    }
}

/// A stored fingerprint (see [`stored_fingerprint`]).
fn read_fingerprint(fingerprint: Option<i64>, value: Option<&str>) -> Result<u64, StoreError> {
    match (fingerprint, value) {
        (Some(fp), _) => Ok(fp_from_db(fp)),
        (None, Some(text)) => Ok(crate::change::fingerprint_text(text)),
        (None, None) => {
            Err(StoreError::Corrupt { what: "fingerprint", detail: "neither a fingerprint nor a value".into() })
        }
    }
}

/// The id of a fingerprint scope, None when nothing was ever written under it.
async fn scope_id(pool: &Pool, scope: &str) -> Result<Option<i64>, StoreError> {
    let row = pool
        .query("SELECT id FROM fingerprint_scopes WHERE name = $1")
        .bind(scope)
        .fetch_optional("read fingerprint scope")
        .await?;
    row.map(|row| row.int("id")).transpose()
}

/// Upserts fingerprints in the caller's transaction; the last of several puts for one
/// (scope, key, field) wins, as a multi-row upsert may not touch one row twice on PostgreSQL.
/// Rows hold the scope's and the field's ids: their names, repeated on every row, were half of
/// a row's bytes; and no fingerprint where it is the hash of the value (see
/// [`stored_fingerprint`]).
async fn upsert_fingerprints(tx: &mut Tx, dialect: Dialect, puts: &[FingerprintPut]) -> Result<(), StoreError> {
    let puts = last_per_key(puts, |p| (&p.scope, &p.key, &p.field));
    if puts.is_empty() {
        return Ok(());
    }
    let scopes = intern_scopes(tx, dialect, &puts).await?;
    let names: std::collections::BTreeSet<&str> = puts.iter().map(|p| p.field.as_str()).collect();
    let names: Vec<String> = names.into_iter().map(str::to_owned).collect();
    let fields = intern_fields(tx, dialect, &names).await?;
    let id = |map: &HashMap<String, i64>, name: &str| {
        map.get(name).copied().ok_or_else(|| StoreError::Invalid {
            what: "put fingerprints",
            detail: format!("{name:?} has no interned id"),
        })
    };
    let scope_ids = puts.iter().map(|p| id(&scopes, &p.scope)).collect::<Result<Vec<_>, _>>()?;
    let field_ids = puts.iter().map(|p| id(&fields, &p.field)).collect::<Result<Vec<_>, _>>()?;
    let values: Vec<Option<String>> = puts.iter().map(|p| p.value.as_ref().map(serde_json::Value::to_string)).collect();
    let columns = [
        Column::Int(scope_ids),
        Column::Text(puts.iter().map(|p| p.key.as_str()).collect()),
        Column::Int(field_ids),
        Column::OptInt(
            puts.iter().zip(&values).map(|(p, v)| stored_fingerprint(p.fingerprint, v.as_deref())).collect(),
        ),
        Column::OptText(values.iter().map(Option::as_deref).collect()),
    ];
    tx.insert_batch(
        "put fingerprints",
        "INSERT INTO fingerprints (scope_id, key, field_id, fingerprint, value)",
        &columns,
        puts.len(),
        " ON CONFLICT (scope_id, key, field_id) DO UPDATE SET fingerprint = excluded.fingerprint, \
         value = excluded.value",
    )
    .await?;
    Ok(())
}

/// Id map entries made and written at a time (see [`IdMapStore::put_id_map`]): one PostgreSQL
/// statement's batch, three SQLite statements.
const ID_MAP_CHUNK: usize = 10_000;

const INSERT_RUN: &str = "INSERT INTO runs (id, workflow, template, dry_run, trigger, state, started_at, stats) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, '{}')";

/// Binds a new run, `Running`, to [`INSERT_RUN`].
fn bind_new_run<'c>(stmt: Stmt<'c>, id: RunId, run: &NewRun) -> Stmt<'c> {
    stmt.bind(id.0)
        .bind(run.workflow.clone())
        .bind(run.template.clone())
        .bind(run.dry_run)
        .bind(run.trigger.clone())
        .bind(RunState::Running.as_str())
        .bind_time(run.started_at)
}

/// Appends `outcomes` to `run` in the caller's transaction, in compressed pages.
async fn append_outcomes(
    tx: &mut Tx,
    dialect: Dialect,
    run: RunId,
    outcomes: &[RecordOutcome],
    op: &'static str,
) -> Result<(), StoreError> {
    let fields = intern_fields(tx, dialect, &outcome_fields(outcomes)).await?;
    for page in encode_pages(outcomes, &fields)? {
        tx.query("INSERT INTO outcome_pages (run_id, rows, actions, codec, body) VALUES ($1, $2, $3, $4, $5)")
            .bind(run.0)
            .bind(page.rows)
            .bind(page.actions)
            .bind(super::CODEC_DEFLATE)
            .bind(page.body)
            .execute(op)
            .await?;
    }
    Ok(())
}

/// [`FailureStore::settle_failures`] in the caller's transaction.
async fn settle_failures_in(
    tx: &mut Tx,
    dialect: Dialect,
    workflow: &str,
    written: &[(String, String)],
    failures: &[NewFailure],
    now: DateTime<Utc>,
    op: &'static str,
) -> Result<(), StoreError> {
    if !written.is_empty() {
        // A workflow has few live failures: read them and resolve those written (still live:
        // unlocked, so settling batches of other workers never wait on each other here).
        let rows = tx
            .query("SELECT id, object, key FROM failures WHERE workflow = $1 AND status IN ('open', 'replaying')")
            .bind(workflow)
            .fetch_all(op)
            .await?;
        let written: HashSet<(&str, &str)> = written.iter().map(|(o, k)| (o.as_str(), k.as_str())).collect();
        let mut resolved = Vec::new();
        for row in &rows {
            if written.contains(&(row.str("object")?, row.str("key")?)) {
                resolved.push(row.get::<i64>("id")?);
            }
        }
        if !resolved.is_empty() {
            let sql = format!(
                "UPDATE failures SET status = 'resolved', leased_until = NULL, leased_by = NULL, resolved_at = $1 \
                 WHERE {} AND status IN ('open', 'replaying')",
                dialect.in_list("id", "$2")
            );
            tx.query(sqlx::AssertSqlSafe(sql)).bind_time(now).bind_list(&resolved)?.execute(op).await?;
        }
    }
    let stamp = crate::clock::written_at();
    // One statement per failure: a batch may name the same record twice, and each repeat must
    // bump the attempts of the row the first one opened.
    for f in failures {
        let fields = json_text("failure fields", &f.fields)?;
        let still_dismissed = tx
            .query(DISMISSED_AGAIN)
            .bind(f.workflow.as_str())
            .bind(f.object.as_str())
            .bind(f.key.as_str())
            .bind(f.error_code.as_str())
            .bind(f.run.0)
            .bind_time(stamp)
            .execute(op)
            .await?;
        if still_dismissed > 0 {
            continue;
        }
        tx.query(
            "INSERT INTO failures (workflow, run_id, object, key, salesforce_id, payload, \
             error_code, message, fields, status, attempts, first_failed_at, last_failed_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'open', 1, $10, $10) \
             ON CONFLICT (workflow, object, key) WHERE status = 'open' DO UPDATE SET \
             run_id = excluded.run_id, salesforce_id = excluded.salesforce_id, \
             payload = excluded.payload, error_code = excluded.error_code, \
             message = excluded.message, fields = excluded.fields, \
             attempts = failures.attempts + 1, last_failed_at = excluded.last_failed_at",
        )
        .bind(f.workflow.as_str())
        .bind(f.run.0)
        .bind(f.object.as_str())
        .bind(f.key.as_str())
        .bind(f.salesforce_id.as_deref())
        .bind_json(&f.payload)
        .bind(f.error_code.as_str())
        .bind(f.message.as_str())
        .bind(fields.as_str())
        .bind_time(stamp)
        .execute(op)
        .await?;
    }
    Ok(())
}

/// [`IdempotencyStore::commit_creates`] in the caller's transaction.
async fn commit_keys(
    tx: &mut Tx,
    workflow: &str,
    done: &[(String, String)],
    now: DateTime<Utc>,
    op: &'static str,
) -> Result<(), StoreError> {
    if done.is_empty() {
        return Ok(());
    }
    let n = done.len();
    let columns = [
        Column::Text(done.iter().map(|(k, _)| k.as_str()).collect()),
        Column::Text(vec![workflow; n]),
        Column::Text(vec!["committed"; n]),
        Column::Text(done.iter().map(|(_, id)| id.as_str()).collect()),
        Column::Time(vec![now; n]),
        Column::Time(vec![now; n]),
    ];
    tx.insert_batch(
        op,
        "INSERT INTO idempotency (key, workflow, state, salesforce_id, created_at, updated_at)",
        &columns,
        n,
        " ON CONFLICT (key) DO UPDATE SET state = 'committed', salesforce_id = excluded.salesforce_id, \
         updated_at = excluded.updated_at",
    )
    .await?;
    Ok(())
}

impl Store for SqlStore {
    fn backend(&self) -> Backend {
        self.pool.backend()
    }
}

impl RunStore for SqlStore {
    fn start_run(&self, run: &NewRun) -> StoreFuture<'_, RunId> {
        let run = run.clone();
        Box::pin(async move {
            let id = RunId::new();
            bind_new_run(self.pool.query(INSERT_RUN), id, &run).execute("start run").await?;
            Ok(id)
        })
    }

    fn record_outcomes<'a>(
        &'a self,
        run: RunId,
        outcomes: &'a [RecordOutcome],
        fingerprints: &'a [FingerprintPut],
    ) -> StoreFuture<'a, ()> {
        const OP: &str = "record outcomes";
        Box::pin(async move {
            let mut tx = self.pool.begin_write(OP).await?;
            append_outcomes(&mut tx, self.dialect(), run, outcomes, OP).await?;
            upsert_fingerprints(&mut tx, self.dialect(), fingerprints).await?;
            tx.commit(OP).await
        })
    }

    fn finish_run(&self, run: RunId, finish: &RunFinish) -> StoreFuture<'_, ()> {
        let finish = finish.clone();
        Box::pin(async move {
            let after_abandoned = finished_after_abandoned(&finish);
            // One statement, so a concurrent sweep either precedes it (and the abandonment text
            // is kept) or follows it (and finds the run no longer running).
            let done = self
                .pool
                .query(
                    "UPDATE runs SET state = $1, finished_at = $2, stats = $3, \
                     error = CASE WHEN state = $6 THEN coalesce(error, '') || $7 ELSE $4 END WHERE id = $5",
                )
                .bind(finish.state.as_str())
                .bind_time(finish.finished_at)
                .bind_json(&finish.stats)
                .bind(finish.error)
                .bind(run.0)
                .bind(RunState::Abandoned.as_str())
                .bind(after_abandoned)
                .execute("finish run")
                .await?;
            changed_one(done, "finish run", || format!("no run with id {run}"))
        })
    }

    fn claim_run<'a>(
        &'a self,
        run: &NewRun,
        holder: &str,
        lease: Duration,
        now: DateTime<Utc>,
        started: &'a (dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) -> StoreFuture<'a, RunClaim> {
        const OP: &str = "claim run";
        let run = run.clone();
        let holder = holder.to_owned();
        Box::pin(async move {
            let until = lease_until(now, lease)?;
            let mut tx = self.pool.begin_write(OP).await?;
            let abandoned = sweep_expired(&mut tx, now).await?;
            // The partial unique index makes the claim atomic: of two concurrent inserts for one
            // workflow, the second waits for the first to commit and then does nothing.
            let id = RunId::new();
            let inserted = tx
                .query(
                    "INSERT INTO runs (id, workflow, template, dry_run, trigger, state, started_at, stats, \
                     holder, heartbeat_at, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7, '{}', $8, $9, $10) \
                     ON CONFLICT (workflow) WHERE state = 'running' AND holder IS NOT NULL DO NOTHING",
                )
                .bind(id.0)
                .bind(run.workflow.as_str())
                .bind(run.template.as_str())
                .bind(run.dry_run)
                .bind(run.trigger.as_str())
                .bind(RunState::Running.as_str())
                .bind_time(run.started_at)
                .bind(holder.as_str())
                .bind_time(now)
                .bind_time(until)
                .execute(OP)
                .await?
                == 1;
            let claim = if inserted {
                // Read after the insert: it returns only once a concurrent finish of the
                // workflow's run has committed, whose end was stamped before that commit.
                let began = started().max(run.started_at);
                if began != run.started_at {
                    tx.query("UPDATE runs SET started_at = $1 WHERE id = $2")
                        .bind_time(began)
                        .bind(id.0)
                        .execute(OP)
                        .await?;
                }
                RunClaim::Started { id, abandoned }
            } else {
                // On PostgreSQL the holder may finish between the insert and this read; then the
                // claim still reports busy (it lost the race honestly) with the run as it reads.
                let row = tx
                    .query(
                        "SELECT * FROM runs WHERE workflow = $1 AND holder IS NOT NULL \
                         ORDER BY (state = $2) DESC, started_at DESC LIMIT 1",
                    )
                    .bind(run.workflow.as_str())
                    .bind(RunState::Running.as_str())
                    .fetch_one(OP)
                    .await?;
                RunClaim::Busy { holder: Box::new(run_from_row(&row)?), abandoned }
            };
            tx.commit(OP).await?;
            Ok(claim)
        })
    }

    fn renew_run_lease(&self, run: RunId, holder: &str, lease: Duration, now: DateTime<Utc>) -> StoreFuture<'_, bool> {
        let holder = holder.to_owned();
        Box::pin(async move {
            let until = lease_until(now, lease)?;
            // Renewing a lapsed lease nobody has swept yet is safe: a claim sweeps before it
            // inserts, so no other run of the workflow can have started meanwhile.
            let renewed = self
                .pool
                .query(
                    "UPDATE runs SET heartbeat_at = $1, lease_until = $2 \
                     WHERE id = $3 AND state = $4 AND holder = $5",
                )
                .bind_time(now)
                .bind_time(until)
                .bind(run.0)
                .bind(RunState::Running.as_str())
                .bind(holder)
                .execute("renew run lease")
                .await?
                == 1;
            Ok(renewed)
        })
    }

    fn sweep_expired_runs(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<Run>> {
        const OP: &str = "sweep expired runs";
        Box::pin(async move {
            let mut tx = self.pool.begin_write(OP).await?;
            let abandoned = sweep_expired(&mut tx, now).await?;
            tx.commit(OP).await?;
            Ok(abandoned)
        })
    }

    fn list_runs(&self, workflow: Option<&str>, limit: u32) -> StoreFuture<'_, Vec<Run>> {
        let workflow = workflow.map(str::to_owned);
        Box::pin(async move {
            let rows = self
                .pool
                .query(
                    "SELECT * FROM runs WHERE (CAST($1 AS TEXT) IS NULL OR workflow = $1) \
                     ORDER BY started_at DESC, id DESC LIMIT $2",
                )
                .bind(workflow)
                .bind_limit(limit)
                .fetch_all("list runs")
                .await?;
            rows.iter().map(run_from_row).collect()
        })
    }

    fn get_run(&self, id: RunId) -> StoreFuture<'_, Option<Run>> {
        Box::pin(async move {
            let row = self.pool.query("SELECT * FROM runs WHERE id = $1").bind(id.0).fetch_optional("get run").await?;
            row.as_ref().map(run_from_row).transpose()
        })
    }

    fn run_outcomes(&self, run: RunId, filter: &OutcomeFilter) -> StoreFuture<'_, Vec<RecordOutcome>> {
        const OP: &str = "list run outcomes";
        let search = search_term(filter);
        let action = filter.action;
        let limit = if filter.limit == 0 { usize::MAX } else { filter.limit as usize };
        let mut skip = filter.offset as usize;
        Box::pin(async move {
            let pages = self
                .pool
                .query("SELECT id, rows, actions FROM outcome_pages WHERE run_id = $1 ORDER BY id")
                .bind(run.0)
                .fetch_all(OP)
                .await?;
            let mut out = Vec::new();
            let mut fields = None;
            for page in &pages {
                if out.len() >= limit {
                    break;
                }
                // Without a search, a page's counts say how many of its outcomes match: pages
                // wholly before the offset, or holding none of the action, are not decoded.
                if search.is_none() {
                    let matching = match action {
                        None => from_db_count(OP, page.int("rows")?)?,
                        Some(a) => page_actions(page.str("actions")?)?.get(a.as_str()).copied().unwrap_or(0),
                    };
                    let matching = usize::try_from(matching).unwrap_or(usize::MAX);
                    if matching <= skip {
                        skip -= matching;
                        continue;
                    }
                }
                let fields = match &mut fields {
                    Some(fields) => fields,
                    None => fields.insert(field_names(&self.pool).await?),
                };
                let row = self
                    .pool
                    .query("SELECT codec, body FROM outcome_pages WHERE id = $1")
                    .bind(page.get::<i64>("id")?)
                    .fetch_one(OP)
                    .await?;
                let body: Vec<u8> = row.get("body")?;
                for outcome in decode_page(row.int("codec")?, &body, fields)? {
                    if !outcome_matches(&outcome, search.as_deref(), action) {
                        continue;
                    }
                    if skip > 0 {
                        skip -= 1;
                    } else if out.len() < limit {
                        out.push(outcome);
                    }
                }
            }
            Ok(out)
        })
    }

    fn outcome_counts(&self, run: RunId) -> StoreFuture<'_, BTreeMap<Action, u64>> {
        Box::pin(async move {
            let rows = self
                .pool
                .query("SELECT actions FROM outcome_pages WHERE run_id = $1")
                .bind(run.0)
                .fetch_all("count run outcomes")
                .await?;
            let mut counts = BTreeMap::new();
            for row in &rows {
                for (action, n) in page_actions(row.str("actions")?)? {
                    *counts.entry(Action::parse(&action)?).or_default() += n;
                }
            }
            Ok(counts)
        })
    }
}

/// A page's outcomes per action (see [`super::OutcomePage::actions`]).
fn page_actions(text: &str) -> Result<BTreeMap<String, u64>, StoreError> {
    from_json_text("outcome page actions", text)
}

impl InboxStore for SqlStore {
    fn put_events(&self, events: &[InboxEvent]) -> StoreFuture<'_, Vec<bool>> {
        const OP: &str = "store webhook events";
        let events = events.to_vec();
        Box::pin(async move {
            // One transaction for the group: one commit (and one sync) however many it holds.
            // A row each, so a repeat within the group is told apart like one stored before.
            let mut tx = self.pool.begin_write(OP).await?;
            let mut stored = Vec::with_capacity(events.len());
            for e in events {
                let done = tx
                    .query(
                        "INSERT INTO inbox (unique_id, source, kind, received_at, body) VALUES ($1, $2, $3, $4, $5) \
                         ON CONFLICT (unique_id) DO NOTHING",
                    )
                    .bind(e.unique_id)
                    .bind(e.source)
                    .bind(e.kind)
                    .bind_time(e.received_at)
                    .bind_json(&e.body)
                    .execute(OP)
                    .await?;
                stored.push(done == 1);
            }
            tx.commit(OP).await?;
            Ok(stored)
        })
    }

    fn pending_events(&self, limit: u32) -> StoreFuture<'_, Vec<InboxEvent>> {
        Box::pin(async move {
            let rows = self
                .pool
                .query(
                    "SELECT unique_id, source, kind, received_at, body FROM inbox WHERE processed_at IS NULL \
                     ORDER BY received_at, unique_id LIMIT $1",
                )
                .bind(i64::from(limit))
                .fetch_all("read webhook events")
                .await?;
            rows.iter().map(inbox_event_from_row).collect()
        })
    }

    fn record_held(
        &self,
        claimer: &str,
        workflow: &str,
        unique_ids: &[String],
        now: DateTime<Utc>,
        decide: DecideHeld,
    ) -> StoreFuture<'_, Recorded> {
        const OP: &str = "record held webhook events";
        let (claimer, workflow, ids) = (claimer.to_owned(), workflow.to_owned(), unique_ids.to_vec());
        Box::pin(async move {
            let dialect = self.dialect();
            let mut tx = self.pool.begin_write(OP).await?;
            // Locked until the end: a claimer taking them over waits (SQLite's write lock) or
            // passes over them (SKIP LOCKED), then finds them processed. As a renewal, a lapsed
            // claim nobody took is still this claimer's: a taker rewrites claimed_by.
            let sql = format!(
                "SELECT unique_id FROM inbox WHERE {} AND claimed_by = $2 AND processed_at IS NULL{}",
                dialect.in_list("unique_id", "$1"),
                dialect.for_update()
            );
            let rows = tx.query(sqlx::AssertSqlSafe(sql)).bind_list(&ids)?.bind(claimer.as_str()).fetch_all(OP).await?;
            let held = rows.iter().map(|row| row.get::<String>("unique_id")).collect::<Result<HashSet<_>, _>>()?;
            crate::testhook::stall_point("record-held", &ids).await;
            let record = decide(&held);
            if let Some(new) = &record.start {
                let id = record.run.ok_or_else(|| StoreError::Invalid {
                    what: "record held webhook events",
                    detail: "a run to start without its id".into(),
                })?;
                bind_new_run(tx.query(INSERT_RUN), id, new).execute(OP).await?;
            }
            if !record.outcomes.is_empty() || !record.failures.is_empty() {
                let run = record.run.ok_or_else(|| StoreError::Invalid {
                    what: "record held webhook events",
                    detail: "outcomes or failures without a run".into(),
                })?;
                append_outcomes(&mut tx, dialect, run, &record.outcomes, OP).await?;
            }
            settle_failures_in(&mut tx, dialect, &workflow, &record.written, &record.failures, now, OP).await?;
            commit_keys(&mut tx, &workflow, &record.committed, now, OP).await?;
            let sql = format!(
                "UPDATE inbox SET processed_at = $1 WHERE {} AND claimed_by = $3 AND processed_at IS NULL",
                dialect.in_list("unique_id", "$2")
            );
            let marked = tx
                .query(sqlx::AssertSqlSafe(sql))
                .bind_time(now)
                .bind_list(&record.processed)?
                .bind(claimer.as_str())
                .execute(OP)
                .await?;
            tx.commit(OP).await?;
            Ok(Recorded { held, record, marked })
        })
    }

    fn inbox_counts(&self) -> StoreFuture<'_, InboxCounts> {
        Box::pin(async move {
            let row = self
                .pool
                .query(
                    "SELECT COUNT(*) AS received, \
                     COALESCE(SUM(CASE WHEN processed_at IS NULL THEN 1 ELSE 0 END), 0) AS pending FROM inbox",
                )
                .fetch_one("count webhook events")
                .await?;
            Ok(InboxCounts {
                received: from_db_count("inbox count", row.get("received")?)?,
                pending: from_db_count("inbox pending", row.get("pending")?)?,
            })
        })
    }

    fn claim_events(
        &self,
        claimer: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<InboxEvent>> {
        const OP: &str = "claim webhook events";
        let claimer = claimer.to_owned();
        Box::pin(async move {
            let until = lease_until(now, lease)?;
            let mut tx = self.pool.begin_write(OP).await?;
            tx.serialize_inbox_claims(OP).await?;
            let sql = format!(
                "UPDATE inbox SET claimed_by = $1, lease_until = $2 WHERE unique_id IN ( \
                   SELECT i.unique_id FROM inbox i \
                   WHERE i.processed_at IS NULL AND (i.lease_until IS NULL OR i.lease_until < $3) \
                   AND NOT EXISTS (SELECT 1 FROM inbox o WHERE o.processed_at IS NULL \
                       AND o.lease_until >= $3 AND o.claimed_by <> $1 \
                       AND (o.visitor_key = i.visitor_key OR o.account_key = i.account_key)) \
                   ORDER BY i.received_at, i.unique_id LIMIT $4{}) \
                 RETURNING unique_id, source, kind, received_at, body",
                self.dialect().for_update_skip_locked()
            );
            let rows = tx
                .query(sqlx::AssertSqlSafe(sql))
                .bind(claimer.as_str())
                .bind_time(until)
                .bind_time(now)
                .bind(i64::from(limit))
                .fetch_all(OP)
                .await?;
            tx.commit(OP).await?;
            let mut events = rows.iter().map(inbox_event_from_row).collect::<Result<Vec<_>, _>>()?;
            events.sort_by(|a, b| (a.received_at, &a.unique_id).cmp(&(b.received_at, &b.unique_id)));
            Ok(events)
        })
    }

    fn renew_event_claims(&self, claimer: &str, lease: Duration, now: DateTime<Utc>) -> StoreFuture<'_, u64> {
        let claimer = claimer.to_owned();
        Box::pin(async move {
            let until = lease_until(now, lease)?;
            // A lapsed claim nobody took is still this claimer's: a taker rewrites claimed_by.
            self.pool
                .query("UPDATE inbox SET lease_until = $2 WHERE claimed_by = $1 AND processed_at IS NULL")
                .bind(claimer)
                .bind_time(until)
                .execute("renew webhook event claims")
                .await
        })
    }

    fn release_event_claims(&self, claimer: &str) -> StoreFuture<'_, ()> {
        let claimer = claimer.to_owned();
        Box::pin(async move {
            self.pool
                .query(
                    "UPDATE inbox SET claimed_by = NULL, lease_until = NULL \
                     WHERE claimed_by = $1 AND processed_at IS NULL",
                )
                .bind(claimer)
                .execute("release webhook event claims")
                .await?;
            Ok(())
        })
    }

    fn event_claimers(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let rows = self
                .pool
                .query(
                    "SELECT DISTINCT claimed_by FROM inbox \
                     WHERE processed_at IS NULL AND claimed_by IS NOT NULL AND lease_until >= $1",
                )
                .bind_time(now)
                .fetch_all("list webhook event claimers")
                .await?;
            rows.iter().map(|row| row.get("claimed_by")).collect()
        })
    }

    fn oldest_claimable_event(&self, now: DateTime<Utc>) -> StoreFuture<'_, Option<DateTime<Utc>>> {
        Box::pin(async move {
            let row = self
                .pool
                .query(
                    "SELECT min(received_at) AS oldest FROM inbox WHERE processed_at IS NULL \
                     AND (lease_until IS NULL OR lease_until < $1)",
                )
                .bind_time(now)
                .fetch_one("read the oldest claimable webhook event")
                .await?;
            row.opt_time("inbox.received_at", "oldest")
        })
    }

    fn pending_depth(&self, cap: u32) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let row = self
                .pool
                .query("SELECT count(*) AS n FROM (SELECT 1 FROM inbox WHERE processed_at IS NULL LIMIT $1) p")
                .bind(i64::from(cap))
                .fetch_one("count pending webhook events")
                .await?;
            from_db_count("inbox depth", row.get("n")?)
        })
    }
}

impl CursorStore for SqlStore {
    fn cursor(&self, workflow: &str, name: &str) -> StoreFuture<'_, Option<String>> {
        let (workflow, name) = (workflow.to_owned(), name.to_owned());
        Box::pin(async move {
            let row = self
                .pool
                .query("SELECT value FROM cursors WHERE workflow = $1 AND name = $2")
                .bind(workflow)
                .bind(name)
                .fetch_optional("read cursor")
                .await?;
            row.map(|row| row.get("value")).transpose()
        })
    }

    fn advance_cursor<'a>(
        &'a self,
        workflow: &'a str,
        name: &'a str,
        expected: Option<String>,
        new: String,
    ) -> StoreFuture<'a, bool> {
        Box::pin(async move {
            let now = crate::clock::written_at();
            let done = match expected {
                None => {
                    self.pool
                        .query(
                            "INSERT INTO cursors (workflow, name, value, updated_at) VALUES ($1, $2, $3, $4) \
                             ON CONFLICT (workflow, name) DO NOTHING",
                        )
                        .bind(workflow)
                        .bind(name)
                        .bind(new)
                        .bind_time(now)
                        .execute("advance cursor")
                        .await?
                }
                Some(expected) => {
                    self.pool
                        .query(
                            "UPDATE cursors SET value = $1, updated_at = $2 \
                             WHERE workflow = $3 AND name = $4 AND value = $5",
                        )
                        .bind(new)
                        .bind_time(now)
                        .bind(workflow)
                        .bind(name)
                        .bind(expected)
                        .execute("advance cursor")
                        .await?
                }
            };
            Ok(done == 1)
        })
    }

    fn kept_state(&self, workflow: &str, name: &str) -> StoreFuture<'_, Option<(i64, Vec<u8>)>> {
        let (workflow, name) = (workflow.to_owned(), name.to_owned());
        Box::pin(async move {
            let row = self
                .pool
                .query("SELECT version, bytes FROM kept_states WHERE workflow = $1 AND name = $2")
                .bind(workflow)
                .bind(name)
                .fetch_optional("read kept state")
                .await?;
            row.map(|row| Ok((row.get("version")?, row.get("bytes")?))).transpose()
        })
    }

    fn keep_state<'a>(
        &'a self,
        workflow: &'a str,
        name: &'a str,
        expected: Option<i64>,
        bytes: Vec<u8>,
    ) -> StoreFuture<'a, bool> {
        const OP: &str = "keep state";
        Box::pin(async move {
            let now = crate::clock::written_at();
            let done = match expected {
                None => {
                    self.pool
                        .query(
                            "INSERT INTO kept_states (workflow, name, version, bytes, written_at) \
                             VALUES ($1, $2, 1, $3, $4) ON CONFLICT (workflow, name) DO NOTHING",
                        )
                        .bind(workflow)
                        .bind(name)
                        .bind(bytes)
                        .bind_time(now)
                        .execute(OP)
                        .await?
                }
                Some(expected) => {
                    self.pool
                        .query(
                            "UPDATE kept_states SET version = version + 1, bytes = $1, written_at = $2 \
                             WHERE workflow = $3 AND name = $4 AND version = $5",
                        )
                        .bind(bytes)
                        .bind_time(now)
                        .bind(workflow)
                        .bind(name)
                        .bind(expected)
                        .execute(OP)
                        .await?
                }
            };
            Ok(done == 1)
        })
    }
}

impl IdMapStore for SqlStore {
    fn id_map(&self, workflow: &str) -> StoreFuture<'_, Vec<IdMapEntry>> {
        let workflow = workflow.to_owned();
        Box::pin(async move {
            // Row by row: every row held at once, with the driver's copy of each value, was a
            // re-run's peak (about 270 MB at 300,000 accounts, beside the entries made of them).
            let mut rows =
                self.pool.query("SELECT * FROM id_map WHERE workflow = $1 ORDER BY pendo_id").bind(workflow).fetch();
            let mut out = Vec::new();
            while let Some(row) = rows.try_next().await.map_err(super::query_err("read id map"))? {
                out.push(id_map_from_row(&row)?);
            }
            Ok(out)
        })
    }

    fn put_id_map<'a>(&'a self, entries: &'a mut (dyn Iterator<Item = IdMapEntry> + Send)) -> StoreFuture<'a, ()> {
        const OP: &str = "put id map";
        Box::pin(async move {
            let mut tx = self.pool.begin_write(OP).await?;
            let mut chunk: Vec<IdMapEntry> = Vec::with_capacity(ID_MAP_CHUNK);
            loop {
                chunk.clear();
                chunk.extend((&mut *entries).take(ID_MAP_CHUNK));
                if chunk.is_empty() {
                    break;
                }
                // Of two entries for one account in a statement the later wins (PostgreSQL
                // refuses both in one); across statements the later statement wins anyway.
                let rows: Vec<(&IdMapEntry, String)> = last_per_key(&chunk, |e| (&e.workflow, &e.pendo_id))
                    .into_iter()
                    .map(|e| Ok((e, json_text("id map candidates", &e.candidates)?)))
                    .collect::<Result<_, StoreError>>()?;
                let columns = [
                    Column::Text(rows.iter().map(|(e, _)| e.workflow.as_str()).collect()),
                    Column::Text(rows.iter().map(|(e, _)| e.pendo_id.as_str()).collect()),
                    Column::Text(rows.iter().map(|(e, _)| e.status.as_str()).collect()),
                    Column::OptText(rows.iter().map(|(e, _)| e.salesforce_id.as_deref()).collect()),
                    Column::OptText(rows.iter().map(|(e, _)| e.rule.as_deref()).collect()),
                    Column::Text(rows.iter().map(|(_, c)| c.as_str()).collect()),
                    Column::Bool(rows.iter().map(|(e, _)| e.pinned).collect()),
                    Column::Time(rows.iter().map(|(e, _)| e.checked_at).collect()),
                ];
                // A person's pin outranks automatic matching; only another pin replaces it.
                tx.insert_batch(
                    OP,
                    "INSERT INTO id_map (workflow, pendo_id, status, salesforce_id, rule, candidates, pinned, checked_at)",
                    &columns,
                    rows.len(),
                    " ON CONFLICT (workflow, pendo_id) DO UPDATE SET status = excluded.status, \
                     salesforce_id = excluded.salesforce_id, rule = excluded.rule, \
                     candidates = excluded.candidates, pinned = excluded.pinned, \
                     checked_at = excluded.checked_at \
                     WHERE NOT id_map.pinned OR excluded.pinned",
                )
                .await?;
            }
            tx.commit(OP).await
        })
    }

    fn pin_match(&self, workflow: &str, pendo_id: &str, salesforce_id: &str) -> StoreFuture<'_, ()> {
        let (workflow, pendo_id, salesforce_id) = (workflow.to_owned(), pendo_id.to_owned(), salesforce_id.to_owned());
        Box::pin(async move {
            self.pool
                .query(
                    "INSERT INTO id_map (workflow, pendo_id, status, salesforce_id, rule, candidates, \
                     pinned, checked_at) VALUES ($1, $2, $3, $4, 'pinned', '[]', TRUE, $5) \
                     ON CONFLICT (workflow, pendo_id) DO UPDATE SET status = excluded.status, \
                     salesforce_id = excluded.salesforce_id, rule = excluded.rule, \
                     pinned = TRUE, checked_at = excluded.checked_at",
                )
                .bind(workflow)
                .bind(pendo_id)
                .bind(MatchStatus::Matched.as_str())
                .bind(salesforce_id)
                .bind_time(crate::clock::written_at())
                .execute("pin match")
                .await?;
            Ok(())
        })
    }

    fn unpin_match(&self, workflow: &str, pendo_id: &str) -> StoreFuture<'_, ()> {
        let (workflow, pendo_id) = (workflow.to_owned(), pendo_id.to_owned());
        Box::pin(async move {
            self.pool
                .query("UPDATE id_map SET pinned = FALSE WHERE workflow = $1 AND pendo_id = $2")
                .bind(workflow)
                .bind(pendo_id)
                .execute("unpin match")
                .await?;
            Ok(())
        })
    }

    fn id_map_review(&self, workflow: Option<&str>) -> StoreFuture<'_, Vec<IdMapEntry>> {
        let workflow = workflow.map(str::to_owned);
        Box::pin(async move {
            let rows = self
                .pool
                .query(
                    "SELECT * FROM id_map WHERE status IN ('ambiguous', 'unmatched') \
                     AND (CAST($1 AS TEXT) IS NULL OR workflow = $1) ORDER BY workflow, pendo_id",
                )
                .bind(workflow)
                .fetch_all("review id map")
                .await?;
            rows.iter().map(id_map_from_row).collect()
        })
    }
}

impl FingerprintStore for SqlStore {
    fn fingerprints(&self, scope: &str) -> StoreFuture<'_, Fingerprints> {
        let scope = scope.to_owned();
        Box::pin(async move {
            let mut out = Fingerprints::default();
            let Some(scope) = scope_id(&self.pool, &scope).await? else { return Ok(out) };
            let fields = field_names(&self.pool).await?;
            // Streamed, one row per record: a scope can hold a million fingerprints, and the
            // drivers spend about a microsecond a row (1.3 s for 810,000 rows of nine fields,
            // 0.3 s as 90,000 rows of nine). The value is read only where no fingerprint was
            // stored (a value's fingerprint is its hash): the others would be decoded and
            // dropped.
            let sql = format!(
                "SELECT key, {} AS fields FROM fingerprints WHERE scope_id = $1 GROUP BY key",
                self.dialect().json_rows("field_id", "fingerprint", "CASE WHEN fingerprint IS NULL THEN value END")
            );
            let mut rows = self.pool.query(sqlx::AssertSqlSafe(sql)).bind(scope).fetch();
            while let Some(row) = rows.try_next().await.map_err(super::query_err("load fingerprints"))? {
                let key = row.str("key")?;
                let fields_of_key: Vec<(i64, Option<i64>, Option<String>)> =
                    serde_json::from_str(row.str("fields")?)
                        .map_err(|e| StoreError::Corrupt { what: "fingerprint", detail: format!("{key}: {e}") })?;
                for (field_id, fingerprint, value) in fields_of_key {
                    out.insert(key, field_name(&fields, field_id)?, read_fingerprint(fingerprint, value.as_deref())?);
                }
            }
            Ok(out)
        })
    }

    fn put_fingerprints(&self, puts: &[FingerprintPut]) -> StoreFuture<'_, ()> {
        const OP: &str = "put fingerprints";
        let puts = puts.to_vec();
        Box::pin(async move {
            let mut tx = self.pool.begin_write(OP).await?;
            upsert_fingerprints(&mut tx, self.dialect(), &puts).await?;
            tx.commit(OP).await
        })
    }

    fn written_values(
        &self,
        scope: &str,
        keys: &[String],
    ) -> StoreFuture<'_, HashMap<String, Vec<(String, serde_json::Value)>>> {
        let (scope, keys) = (scope.to_owned(), keys.to_vec());
        Box::pin(async move {
            let mut out: HashMap<String, Vec<(String, serde_json::Value)>> = HashMap::new();
            let Some(scope) = scope_id(&self.pool, &scope).await? else { return Ok(out) };
            let fields = field_names(&self.pool).await?;
            let sql = format!(
                "SELECT key, field_id, value FROM fingerprints WHERE scope_id = $1 AND value IS NOT NULL AND {}",
                self.dialect().in_list("key", "$2")
            );
            for chunk in keys.chunks(10_000) {
                let rows = self
                    .pool
                    .query(sqlx::AssertSqlSafe(sql.as_str()))
                    .bind(scope)
                    .bind_list(chunk)?
                    .fetch_all("read written values")
                    .await?;
                for row in &rows {
                    let value = from_json_text("fingerprints.value", row.str("value")?)?;
                    let field = field_name(&fields, row.int("field_id")?)?.to_owned();
                    out.entry(row.get("key")?).or_default().push((field, value));
                }
            }
            Ok(out)
        })
    }

    fn forget_fingerprints(&self, scope: &str, key: &str) -> StoreFuture<'_, ()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        Box::pin(async move {
            self.pool
                .query(
                    "DELETE FROM fingerprints WHERE scope_id = (SELECT id FROM fingerprint_scopes WHERE name = $1) \
                     AND key = $2",
                )
                .bind(scope)
                .bind(key)
                .execute("forget fingerprints")
                .await?;
            Ok(())
        })
    }
}

impl FailureStore for SqlStore {
    fn add_failures(&self, failures: &[NewFailure]) -> StoreFuture<'_, ()> {
        self.settle_failures("", &[], failures, crate::clock::written_at())
    }

    fn settle_failures(
        &self,
        workflow: &str,
        written: &[(String, String)],
        failures: &[NewFailure],
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, ()> {
        const OP: &str = "settle failures";
        let (workflow, written, failures) = (workflow.to_owned(), written.to_vec(), failures.to_vec());
        Box::pin(async move {
            let mut tx = self.pool.begin_write(OP).await?;
            settle_failures_in(&mut tx, self.dialect(), &workflow, &written, &failures, now, OP).await?;
            tx.commit(OP).await
        })
    }

    fn list_failures(&self, filter: &FailureFilter) -> StoreFuture<'_, Vec<Failure>> {
        let filter = filter.clone();
        Box::pin(async move {
            let sql = format!(
                "SELECT {FAILURE_COLUMNS} FROM failures WHERE (CAST($1 AS TEXT) IS NULL OR workflow = $1) \
                 AND (CAST($2 AS TEXT) IS NULL OR status = $2) AND (CAST($3 AS TEXT) IS NULL OR error_code = $3) \
                 ORDER BY id LIMIT $4"
            );
            let rows = self
                .pool
                .query(sqlx::AssertSqlSafe(sql))
                .bind(filter.workflow)
                .bind(filter.status.map(FailureStatus::as_str))
                .bind(filter.error_code)
                .bind_limit(filter.limit)
                .fetch_all("list failures")
                .await?;
            rows.iter().map(failure_from_row).collect()
        })
    }

    fn failure_groups(&self, workflow: Option<&str>) -> StoreFuture<'_, Vec<(String, String, u64)>> {
        let workflow = workflow.map(str::to_owned);
        Box::pin(async move {
            let rows = self
                .pool
                .query(
                    "SELECT error_code, min(message) AS sample, count(*) AS n FROM failures \
                     WHERE status = 'open' AND (CAST($1 AS TEXT) IS NULL OR workflow = $1) \
                     GROUP BY error_code ORDER BY n DESC, error_code",
                )
                .bind(workflow)
                .fetch_all("group failures")
                .await?;
            rows.iter()
                .map(|row| {
                    Ok((row.get("error_code")?, row.get("sample")?, from_db_count("failure count", row.get("n")?)?))
                })
                .collect()
        })
    }

    fn claim_failures(
        &self,
        selector: &FailureSelector,
        worker: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<Failure>> {
        const OP: &str = "claim failures";
        let selector = selector.clone();
        let worker = worker.to_owned();
        Box::pin(async move {
            let until = lease_until(now, lease)?;
            let dialect = self.dialect();
            // A second claimer waits for the write lock (SQLite) or passes over the rows this
            // one locked (PostgreSQL), and then sees them Replaying: claimers never share a row.
            let sql = format!(
                "UPDATE failures SET status = 'replaying', leased_until = $1, leased_by = $2 \
                 WHERE id IN (SELECT id FROM failures \
                   WHERE (status = 'open' OR (status = 'replaying' AND leased_until <= $3)) \
                   AND {} ORDER BY id LIMIT $5{}) \
                 RETURNING {FAILURE_COLUMNS}",
                selector_condition(dialect, &selector, "$4"),
                dialect.for_update_skip_locked(),
            );
            let mut tx = self.pool.begin_write(OP).await?;
            let stmt = tx.query(sqlx::AssertSqlSafe(sql)).bind_time(until).bind(worker.as_str()).bind_time(now);
            let rows = bind_selector(stmt, &selector)?.bind(i64::from(limit)).fetch_all(OP).await?;
            tx.commit(OP).await?;
            let mut claimed = rows.iter().map(failure_from_row).collect::<Result<Vec<_>, _>>()?;
            claimed.sort_by_key(|f| f.id);
            Ok(claimed)
        })
    }

    fn resolve_failure(&self, id: i64, now: DateTime<Utc>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let done = self
                .pool
                .query(
                    "UPDATE failures SET status = 'resolved', leased_until = NULL, leased_by = NULL, \
                     resolved_at = $2 WHERE id = $1",
                )
                .bind(id)
                .bind_time(now)
                .execute("resolve failure")
                .await?;
            changed_one(done, "resolve failure", || format!("no failure with id {id}"))
        })
    }

    fn fail_again(&self, id: i64, error_code: &str, message: &str, now: DateTime<Utc>) -> StoreFuture<'_, ()> {
        const OP: &str = "fail again";
        let (error_code, message) = (error_code.to_owned(), message.to_owned());
        Box::pin(async move {
            let mut tx = self.pool.begin_write(OP).await?;
            // Lock this failure first so the merge below sees a stable row.
            let sql = format!("SELECT id FROM failures WHERE id = $1{}", self.dialect().for_update());
            let exists = tx.query(sqlx::AssertSqlSafe(sql)).bind(id).fetch_optional(OP).await?;
            if exists.is_none() {
                return Err(StoreError::Invalid { what: "fail again", detail: format!("no failure with id {id}") });
            }
            // A newer failure of the same record may have opened while this one was replaying;
            // fold this one into it so the record keeps a single open failure.
            let merged = tx
                .query(
                    "UPDATE failures SET attempts = attempts + 1 + \
                       (SELECT attempts FROM failures WHERE id = $1), \
                     error_code = $2, message = $3, last_failed_at = $4 \
                     WHERE status = 'open' AND id <> $1 AND (workflow, object, key) = \
                       (SELECT workflow, object, key FROM failures WHERE id = $1)",
                )
                .bind(id)
                .bind(error_code.as_str())
                .bind(message.as_str())
                .bind_time(now)
                .execute(OP)
                .await?;
            if merged > 0 {
                tx.query("DELETE FROM failures WHERE id = $1").bind(id).execute(OP).await?;
            } else {
                tx.query(
                    "UPDATE failures SET status = 'open', attempts = attempts + 1, error_code = $2, \
                     message = $3, last_failed_at = $4, leased_until = NULL, leased_by = NULL \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(error_code.as_str())
                .bind(message.as_str())
                .bind_time(now)
                .execute(OP)
                .await?;
            }
            tx.commit(OP).await
        })
    }

    fn dismiss_failures(
        &self,
        selector: &FailureSelector,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, Vec<i64>> {
        const OP: &str = "dismiss failures";
        let selector = selector.clone();
        let reason = reason.to_owned();
        Box::pin(async move {
            let sql = format!(
                "UPDATE failures SET status = 'dismissed', reason = $1, resolved_at = $2, \
                 leased_until = NULL, leased_by = NULL WHERE status = 'open' AND {} RETURNING id",
                selector_condition(self.dialect(), &selector, "$3")
            );
            let stmt = self.pool.query(sqlx::AssertSqlSafe(sql)).bind(reason).bind_time(now);
            let rows = bind_selector(stmt, &selector)?.fetch_all(OP).await?;
            let mut ids = rows.iter().map(|r| r.get::<i64>("id")).collect::<Result<Vec<_>, _>>()?;
            ids.sort_unstable();
            Ok(ids)
        })
    }
}

impl BudgetStore for SqlStore {
    fn reserve_budget(
        &self,
        day: NaiveDate,
        workflow: &str,
        calls: u64,
        cap: u64,
        _now: DateTime<Utc>,
    ) -> StoreFuture<'_, bool> {
        const OP: &str = "reserve budget";
        let workflow = workflow.to_owned();
        Box::pin(async move {
            let calls = to_db_count("reserved calls", calls)?;
            let cap = to_db_count("budget cap", cap)?;
            let mut tx = self.pool.begin_write(OP).await?;
            tx.query("INSERT INTO budget_days (day, reserved, spent) VALUES ($1, 0, 0) ON CONFLICT (day) DO NOTHING")
                .bind(day)
                .execute(OP)
                .await?;
            // On PostgreSQL the day's row lock serialises reservers; a waiter re-checks the
            // condition against the committed totals (READ COMMITTED re-evaluates the WHERE).
            let granted = tx
                .query("UPDATE budget_days SET reserved = reserved + $2 WHERE day = $1 AND reserved + spent + $2 <= $3")
                .bind(day)
                .bind(calls)
                .bind(cap)
                .execute(OP)
                .await?
                == 1;
            if granted {
                tx.query(
                    "INSERT INTO budget_workflows (day, workflow, reserved, spent) \
                     VALUES ($1, $2, $3, 0) ON CONFLICT (day, workflow) \
                     DO UPDATE SET reserved = budget_workflows.reserved + excluded.reserved",
                )
                .bind(day)
                .bind(workflow)
                .bind(calls)
                .execute(OP)
                .await?;
            }
            tx.commit(OP).await?;
            Ok(granted)
        })
    }

    fn settle_budget(
        &self,
        day: NaiveDate,
        workflow: &str,
        reserved: u64,
        spent: u64,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, ()> {
        const OP: &str = "settle budget";
        let workflow = workflow.to_owned();
        Box::pin(async move {
            let reserved = to_db_count("settled reservation", reserved)?;
            let spent = to_db_count("spent calls", spent)?;
            let mut tx = self.pool.begin_write(OP).await?;
            // Only what this workflow really holds is released from the day's total: a late
            // settle of a reservation already released (its run was taken for dead) must not
            // release other workflows' reservations.
            let held = held_reservation(&mut tx, self.dialect(), day, &workflow, OP).await?;
            let reserved = reserved.min(held);
            // Releasing more than is reserved (a double settle) clamps at zero rather than
            // inventing negative reservations.
            tx.query(
                "INSERT INTO budget_days (day, reserved, spent) VALUES ($1, 0, $3) \
                 ON CONFLICT (day) DO UPDATE SET \
                 reserved = CASE WHEN budget_days.reserved > $2 THEN budget_days.reserved - $2 ELSE 0 END, \
                 spent = budget_days.spent + $3",
            )
            .bind(day)
            .bind(reserved)
            .bind(spent)
            .execute(OP)
            .await?;
            tx.query(
                "INSERT INTO budget_workflows (day, workflow, reserved, spent) VALUES ($1, $2, 0, $4) \
                 ON CONFLICT (day, workflow) DO UPDATE SET \
                 reserved = CASE WHEN budget_workflows.reserved > $3 \
                   THEN budget_workflows.reserved - $3 ELSE 0 END, \
                 spent = budget_workflows.spent + $4",
            )
            .bind(day)
            .bind(workflow.as_str())
            .bind(reserved)
            .bind(spent)
            .execute(OP)
            .await?;
            if spent > 0 {
                tx.query("INSERT INTO budget_spend (day, workflow, calls, at) VALUES ($1, $2, $3, $4)")
                    .bind(day)
                    .bind(workflow.as_str())
                    .bind(spent)
                    .bind_time(now)
                    .execute(OP)
                    .await?;
            }
            tx.commit(OP).await
        })
    }

    fn release_reservations(&self, day: NaiveDate, workflow: &str) -> StoreFuture<'_, u64> {
        const OP: &str = "release reservations";
        let workflow = workflow.to_owned();
        Box::pin(async move {
            let mut tx = self.pool.begin_write(OP).await?;
            let held = held_reservation(&mut tx, self.dialect(), day, &workflow, OP).await?;
            if held > 0 {
                tx.query("UPDATE budget_workflows SET reserved = 0 WHERE day = $1 AND workflow = $2")
                    .bind(day)
                    .bind(workflow.as_str())
                    .execute(OP)
                    .await?;
                tx.query(
                    "UPDATE budget_days SET reserved = CASE WHEN reserved > $2 THEN reserved - $2 ELSE 0 END \
                     WHERE day = $1",
                )
                .bind(day)
                .bind(held)
                .execute(OP)
                .await?;
            }
            tx.commit(OP).await?;
            from_db_count("released reservation", held)
        })
    }

    fn observe_org_usage(&self, day: NaiveDate, used: u64, max: u64, now: DateTime<Utc>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Observations can arrive out of order from several workers; keep the newest.
            self.pool
                .query(
                    "INSERT INTO budget_org (day, used, max, observed_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (day) DO UPDATE SET used = excluded.used, max = excluded.max, \
                     observed_at = excluded.observed_at WHERE excluded.observed_at >= budget_org.observed_at",
                )
                .bind(day)
                .bind(to_db_count("org API usage", used)?)
                .bind(to_db_count("org API maximum", max)?)
                .bind_time(now)
                .execute("observe org usage")
                .await?;
            Ok(())
        })
    }

    fn budget_day(&self, day: NaiveDate) -> StoreFuture<'_, BudgetDay> {
        const OP: &str = "read budget";
        Box::pin(async move {
            let totals = self
                .pool
                .query("SELECT reserved, spent FROM budget_days WHERE day = $1")
                .bind(day)
                .fetch_optional(OP)
                .await?;
            let (reserved, spent) = match &totals {
                Some(row) => (
                    from_db_count("budget reserved", row.get("reserved")?)?,
                    from_db_count("budget spent", row.get("spent")?)?,
                ),
                None => (0, 0),
            };
            let by_workflow = self
                .pool
                .query("SELECT workflow, spent FROM budget_workflows WHERE day = $1 AND spent > 0")
                .bind(day)
                .fetch_all(OP)
                .await?
                .iter()
                .map(|row| Ok((row.get("workflow")?, from_db_count("budget spent", row.get("spent")?)?)))
                .collect::<Result<BTreeMap<String, u64>, StoreError>>()?;
            let org = self
                .pool
                .query("SELECT used, max, observed_at FROM budget_org WHERE day = $1")
                .bind(day)
                .fetch_optional(OP)
                .await?;
            let (org_used, org_max, observed_at) = match &org {
                Some(row) => (
                    Some(from_db_count("org API usage", row.get("used")?)?),
                    Some(from_db_count("org API maximum", row.get("max")?)?),
                    Some(row.time("org usage observed_at", "observed_at")?),
                ),
                None => (None, None, None),
            };
            Ok(BudgetDay { day, reserved, spent, by_workflow, org_used, org_max, observed_at })
        })
    }

    fn spent_per_hour(&self, day: NaiveDate) -> StoreFuture<'_, Vec<(u32, u64)>> {
        Box::pin(async move {
            let sql = format!(
                "SELECT {} AS hour, CAST(sum(calls) AS BIGINT) AS calls FROM budget_spend \
                 WHERE day = $1 GROUP BY 1 ORDER BY 1",
                self.dialect().utc_hour("at")
            );
            let rows = self.pool.query(sqlx::AssertSqlSafe(sql)).bind(day).fetch_all("read spend per hour").await?;
            rows.iter()
                .map(|row| {
                    let hour: i64 = row.get("hour")?;
                    Ok((
                        u32::try_from(hour)
                            .map_err(|_| StoreError::Corrupt { what: "spend hour", detail: format!("{hour}") })?,
                        from_db_count("spent calls", row.get("calls")?)?,
                    ))
                })
                .collect()
        })
    }
}

/// What `workflow` holds reserved on `day` (0 when it has no row), its row locked until the
/// transaction ends.
async fn held_reservation(
    tx: &mut Tx,
    dialect: Dialect,
    day: NaiveDate,
    workflow: &str,
    operation: &'static str,
) -> Result<i64, StoreError> {
    let sql = format!("SELECT reserved FROM budget_workflows WHERE day = $1 AND workflow = $2{}", dialect.for_update());
    let row = tx.query(sqlx::AssertSqlSafe(sql)).bind(day).bind(workflow).fetch_optional(operation).await?;
    Ok(match row {
        Some(row) => row.get("reserved")?,
        None => 0,
    })
}

impl IdempotencyStore for SqlStore {
    fn begin_create(&self, key: &str, workflow: &str, now: DateTime<Utc>) -> StoreFuture<'_, CreateState> {
        const OP: &str = "begin create";
        let (key, workflow) = (key.to_owned(), workflow.to_owned());
        Box::pin(async move {
            // The row found on conflict can be abandoned (deleted) before we read it; then the
            // key is free again and the next insert wins. Bounded, because each lap means
            // another worker made progress.
            for _ in 0..8 {
                let inserted = self
                    .pool
                    .query(
                        "INSERT INTO idempotency (key, workflow, state, created_at, updated_at) \
                         VALUES ($1, $2, 'pending', $3, $3) ON CONFLICT (key) DO NOTHING",
                    )
                    .bind(key.as_str())
                    .bind(workflow.as_str())
                    .bind_time(now)
                    .execute(OP)
                    .await?
                    == 1;
                if inserted {
                    return Ok(CreateState::New);
                }
                let row = self
                    .pool
                    .query("SELECT state, salesforce_id, created_at FROM idempotency WHERE key = $1")
                    .bind(key.as_str())
                    .fetch_optional(OP)
                    .await?;
                let Some(row) = row else { continue };
                return match (row.str("state")?, row.get::<Option<String>>("salesforce_id")?) {
                    ("committed", Some(salesforce_id)) => Ok(CreateState::Committed { salesforce_id }),
                    ("pending", _) => Ok(CreateState::Pending { since: row.time("create started_at", "created_at")? }),
                    (other, _) => Err(StoreError::Corrupt {
                        what: "idempotency state",
                        detail: format!("{other:?} for key {key:?}"),
                    }),
                };
            }
            Err(StoreError::Invalid {
                what: "begin create",
                detail: format!("key {key:?} kept being created and abandoned concurrently"),
            })
        })
    }

    fn commit_create(&self, key: &str, salesforce_id: &str, now: DateTime<Utc>) -> StoreFuture<'_, ()> {
        let (key, salesforce_id) = (key.to_owned(), salesforce_id.to_owned());
        Box::pin(async move {
            let done = self
                .pool
                .query("UPDATE idempotency SET state = 'committed', salesforce_id = $2, updated_at = $3 WHERE key = $1")
                .bind(key.as_str())
                .bind(salesforce_id)
                .bind_time(now)
                .execute("commit create")
                .await?;
            changed_one(done, "commit create", || format!("no create was begun for key {key:?}"))
        })
    }

    fn begin_creates(&self, keys: &[String], workflow: &str, now: DateTime<Utc>) -> StoreFuture<'_, Vec<CreateState>> {
        const OP: &str = "begin creates";
        let (keys, workflow) = (keys.to_vec(), workflow.to_owned());
        Box::pin(async move {
            let mut states: HashMap<String, CreateState> = HashMap::new();
            // As `begin_create`: a row found on conflict may be abandoned before it is read, and
            // its key is then tried again.
            for _ in 0..8 {
                let left: Vec<&str> = keys.iter().map(String::as_str).filter(|k| !states.contains_key(*k)).collect();
                if left.is_empty() {
                    break;
                }
                let n = left.len();
                let columns = [
                    Column::Text(left.clone()),
                    Column::Text(vec![workflow.as_str(); n]),
                    Column::Text(vec!["pending"; n]),
                    Column::Time(vec![now; n]),
                    Column::Time(vec![now; n]),
                ];
                let mut tx = self.pool.begin_write(OP).await?;
                let inserted = tx
                    .insert_batch(
                        OP,
                        "INSERT INTO idempotency (key, workflow, state, created_at, updated_at)",
                        &columns,
                        n,
                        " ON CONFLICT (key) DO NOTHING RETURNING key",
                    )
                    .await?;
                for row in &inserted {
                    states.insert(row.get("key")?, CreateState::New);
                }
                let sql = format!(
                    "SELECT key, state, salesforce_id, created_at FROM idempotency WHERE {}",
                    self.dialect().in_list("key", "$1")
                );
                let found: Vec<&str> = left.iter().copied().filter(|k| !states.contains_key(*k)).collect();
                let rows = tx.query(sqlx::AssertSqlSafe(sql)).bind_list(&found)?.fetch_all(OP).await?;
                tx.commit(OP).await?;
                for row in &rows {
                    let key: String = row.get("key")?;
                    if states.contains_key(&key) {
                        continue;
                    }
                    let state = match (row.str("state")?, row.get::<Option<String>>("salesforce_id")?) {
                        ("committed", Some(salesforce_id)) => CreateState::Committed { salesforce_id },
                        ("pending", _) => CreateState::Pending { since: row.time("create started_at", "created_at")? },
                        (other, _) => {
                            return Err(StoreError::Corrupt {
                                what: "idempotency state",
                                detail: format!("{other:?} for key {key:?}"),
                            });
                        }
                    };
                    states.insert(key, state);
                }
            }
            keys.iter()
                .map(|k| {
                    states.get(k).cloned().ok_or_else(|| StoreError::Invalid {
                        what: "begin creates",
                        detail: format!("key {k:?} kept being created and abandoned concurrently"),
                    })
                })
                .collect()
        })
    }

    fn commit_creates(&self, workflow: &str, done: &[(String, String)], now: DateTime<Utc>) -> StoreFuture<'_, ()> {
        const OP: &str = "commit creates";
        let (workflow, done) = (workflow.to_owned(), done.to_vec());
        Box::pin(async move {
            if done.is_empty() {
                return Ok(());
            }
            let mut tx = self.pool.begin_write(OP).await?;
            commit_keys(&mut tx, &workflow, &done, now, OP).await?;
            tx.commit(OP).await
        })
    }

    fn abandon_create(&self, key: &str) -> StoreFuture<'_, ()> {
        let key = key.to_owned();
        Box::pin(async move {
            self.pool
                .query("DELETE FROM idempotency WHERE key = $1 AND state = 'pending'")
                .bind(key)
                .execute("abandon create")
                .await?;
            Ok(())
        })
    }
}

/// The runs a prune may delete (alias `r`, cutoff bound at `$1`): finished before the cutoff,
/// not the newest run of their workflow, not its newest real success, and not pointed at by a
/// failure still waiting for replay. Deleting older runs never changes this for newer ones, so
/// a prune interrupted half-way and run again deletes the same set.
const PRUNABLE_RUNS: &str = "r.state <> 'running' AND r.started_at < $1 \
     AND (r.finished_at IS NULL OR r.finished_at < $1) \
     AND EXISTS (SELECT 1 FROM runs n WHERE n.workflow = r.workflow \
       AND (n.started_at > r.started_at OR (n.started_at = r.started_at AND n.id > r.id))) \
     AND (r.state <> 'succeeded' OR r.dry_run OR EXISTS (SELECT 1 FROM runs n WHERE n.workflow = r.workflow \
       AND n.state = 'succeeded' AND NOT n.dry_run \
       AND (n.started_at > r.started_at OR (n.started_at = r.started_at AND n.id > r.id)))) \
     AND NOT EXISTS (SELECT 1 FROM failures f WHERE f.run_id = r.id AND f.status IN ('open', 'replaying'))";

/// Failures a prune may delete (cutoff at `$1`): closed by a replay (or abandoned) and not
/// failing since. Dismissed ones stay: the dismissal is what keeps a recurring refusal closed.
const PRUNABLE_FAILURES: &str = "status IN ('resolved', 'abandoned') AND last_failed_at < $1 \
     AND (resolved_at IS NULL OR resolved_at < $1)";

/// Webhook events a prune may delete: processed before the cutoff. Pending ones stay whatever
/// their age. A sender redelivering an event after the retention would have it stored again.
const PRUNABLE_EVENTS: &str = "processed_at < $1";

/// Run ids taken per round of a prune.
const PRUNE_RUNS_PER_ROUND: i64 = 100;

impl SqlStore {
    /// Repeats `delete` (a statement deleting at most `$2` rows older than `$1`) until a round
    /// deletes fewer than `batch`; each round is its own transaction.
    async fn delete_in_batches(
        &self,
        operation: &'static str,
        delete: &str,
        cutoff: BindCutoff,
        batch: u32,
    ) -> Result<u64, StoreError> {
        let mut total = 0;
        loop {
            let stmt = self.pool.query(sqlx::AssertSqlSafe(delete.to_owned()));
            let stmt = match cutoff {
                BindCutoff::Time(t) => stmt.bind_time(t),
                BindCutoff::Day(d) => stmt.bind(d),
            };
            let n = stmt.bind(i64::from(batch)).execute(operation).await?;
            total += n;
            if n < u64::from(batch) {
                return Ok(total);
            }
        }
    }

    async fn count(&self, operation: &'static str, sql: String, cutoff: BindCutoff) -> Result<u64, StoreError> {
        let stmt = self.pool.query(sqlx::AssertSqlSafe(sql));
        let stmt = match cutoff {
            BindCutoff::Time(t) => stmt.bind_time(t),
            BindCutoff::Day(d) => stmt.bind(d),
        };
        from_db_count(operation, stmt.fetch_one(operation).await?.get("n")?)
    }

    async fn prune_runs(&self, cutoff: DateTime<Utc>, batch: u32, pruned: &mut Pruned) -> Result<(), StoreError> {
        const OP: &str = "prune runs";
        let select = format!("SELECT r.id FROM runs r WHERE {PRUNABLE_RUNS} ORDER BY r.started_at, r.id LIMIT $2");
        loop {
            let ids: Vec<Uuid> = self
                .pool
                .query(sqlx::AssertSqlSafe(select.clone()))
                .bind_time(cutoff)
                .bind(PRUNE_RUNS_PER_ROUND)
                .fetch_all(OP)
                .await?
                .iter()
                .map(|row| row.get::<Uuid>("id"))
                .collect::<Result<_, _>>()?;
            if ids.is_empty() {
                return Ok(());
            }
            // A run's outcome pages go first, a batch at a time: deleting the run would cascade
            // to all of them in one long transaction. A batch of pages holds about `batch`
            // outcomes.
            let per_page = u32::try_from(super::OUTCOMES_PER_PAGE).unwrap_or(u32::MAX);
            let pages = i64::from(batch.div_ceil(per_page));
            for id in &ids {
                loop {
                    let deleted = self
                        .pool
                        .query(
                            "DELETE FROM outcome_pages WHERE id IN \
                             (SELECT id FROM outcome_pages WHERE run_id = $1 LIMIT $2) RETURNING rows",
                        )
                        .bind(*id)
                        .bind(pages)
                        .fetch_all(OP)
                        .await?;
                    for page in &deleted {
                        pruned.outcomes += from_db_count(OP, page.int("rows")?)?;
                    }
                    if (deleted.len() as i64) < pages {
                        break;
                    }
                }
            }
            // One by one: SQLite keeps ids as blobs, which a JSON list argument cannot name.
            for id in ids {
                pruned.runs += self
                    .pool
                    .query("DELETE FROM runs WHERE id = $1 AND state <> 'running'")
                    .bind(id)
                    .execute(OP)
                    .await?;
            }
        }
    }
}

/// The cutoff a prune statement compares with: a time, or a UTC day for the budget ledger.
#[derive(Clone, Copy)]
enum BindCutoff {
    Time(DateTime<Utc>),
    Day(NaiveDate),
}

/// The budget ledger's tables, by day; `budget_spend` has a row per settle and is deleted in
/// batches, the others a row per day (and workflow).
const BUDGET_TABLES: [&str; 3] = ["budget_days", "budget_workflows", "budget_org"];

/// Every table of the store, for [`RetentionStore::store_size`].
const TABLES: [&str; 12] = [
    "runs",
    "outcomes",
    "cursors",
    "kept_states",
    "id_map",
    "fingerprints",
    "failures",
    "budget_days",
    "budget_workflows",
    "budget_spend",
    "budget_org",
    "idempotency",
];

impl RetentionStore for SqlStore {
    fn prune_history(&self, cutoff: DateTime<Utc>, batch: u32, dry_run: bool) -> StoreFuture<'_, Pruned> {
        Box::pin(async move {
            if batch == 0 {
                return Err(StoreError::Invalid { what: "prune batch", detail: "must be at least 1 row".into() });
            }
            let time = BindCutoff::Time(cutoff);
            let day = BindCutoff::Day(cutoff.date_naive());
            let mut pruned = Pruned::default();
            if dry_run {
                pruned.runs = self
                    .count(
                        "count prunable runs",
                        format!("SELECT count(*) AS n FROM runs r WHERE {PRUNABLE_RUNS}"),
                        time,
                    )
                    .await?;
                pruned.outcomes = self
                    .count(
                        "count prunable outcomes",
                        format!(
                            "SELECT CAST(coalesce(sum(o.rows), 0) AS BIGINT) AS n FROM outcome_pages o \
                             WHERE o.run_id IN (SELECT r.id FROM runs r WHERE {PRUNABLE_RUNS})"
                        ),
                        time,
                    )
                    .await?;
                pruned.failures = self
                    .count(
                        "count prunable failures",
                        format!("SELECT count(*) AS n FROM failures WHERE {PRUNABLE_FAILURES}"),
                        time,
                    )
                    .await?;
                pruned.inbox_events = self
                    .count(
                        "count prunable webhook events",
                        format!("SELECT count(*) AS n FROM inbox WHERE {PRUNABLE_EVENTS}"),
                        time,
                    )
                    .await?;
                for table in BUDGET_TABLES.iter().chain(&["budget_spend"]) {
                    pruned.budget_rows += self
                        .count(
                            "count prunable budget rows",
                            format!("SELECT count(*) AS n FROM {table} WHERE day < $1"),
                            day,
                        )
                        .await?;
                }
                return Ok(pruned);
            }
            self.prune_runs(cutoff, batch, &mut pruned).await?;
            pruned.failures = self
                .delete_in_batches(
                    "prune failures",
                    &format!(
                        "DELETE FROM failures WHERE id IN (SELECT id FROM failures WHERE {PRUNABLE_FAILURES} LIMIT $2)"
                    ),
                    time,
                    batch,
                )
                .await?;
            pruned.inbox_events = self
                .delete_in_batches(
                    "prune webhook events",
                    &format!(
                        "DELETE FROM inbox WHERE unique_id IN \
                         (SELECT unique_id FROM inbox WHERE {PRUNABLE_EVENTS} LIMIT $2)"
                    ),
                    time,
                    batch,
                )
                .await?;
            pruned.budget_rows = self
                .delete_in_batches(
                    "prune budget ledger",
                    "DELETE FROM budget_spend WHERE id IN (SELECT id FROM budget_spend WHERE day < $1 LIMIT $2)",
                    day,
                    batch,
                )
                .await?;
            // A row per day (and workflow): a year of them is a few thousand rows at most.
            for table in BUDGET_TABLES {
                pruned.budget_rows += self
                    .pool
                    .query(sqlx::AssertSqlSafe(format!("DELETE FROM {table} WHERE day < $1")))
                    .bind(cutoff.date_naive())
                    .execute("prune budget ledger")
                    .await?;
            }
            Ok(pruned)
        })
    }

    fn reclaim_space(&self, full: bool) -> StoreFuture<'_, u64> {
        const OP: &str = "reclaim space";
        Box::pin(async move {
            if self.backend() == Backend::Postgres {
                return Ok(0);
            }
            let pages = |sql: &'static str| async move {
                let row = self.pool.query(sql).fetch_one(OP).await?;
                from_db_count(OP, row.get("n")?)
            };
            let page_size = pages("SELECT page_size AS n FROM pragma_page_size()").await?;
            let before = pages("SELECT page_count AS n FROM pragma_page_count()").await?;
            if full {
                // The connection was opened asking for incremental auto-vacuum; VACUUM applies
                // it to a file created before that, along with compacting it.
                self.pool.query("VACUUM").execute(OP).await?;
            } else if pages("SELECT auto_vacuum AS n FROM pragma_auto_vacuum()").await? == 2 {
                // A step at a time (4 MB of 4 KB pages), each its own short write transaction.
                loop {
                    let free = pages("SELECT freelist_count AS n FROM pragma_freelist_count()").await?;
                    if free == 0 {
                        break;
                    }
                    self.pool.query("PRAGMA incremental_vacuum(1000)").execute(OP).await?;
                    if pages("SELECT freelist_count AS n FROM pragma_freelist_count()").await? >= free {
                        break;
                    }
                }
            }
            let after = pages("SELECT page_count AS n FROM pragma_page_count()").await?;
            Ok(before.saturating_sub(after) * page_size)
        })
    }

    fn store_size(&self) -> StoreFuture<'_, StoreSize> {
        const OP: &str = "measure the store";
        Box::pin(async move {
            let mut size = StoreSize::default();
            for table in TABLES.iter().chain(&["inbox"]) {
                // Outcomes are counted one by one, not by the pages that hold them.
                let count = match *table {
                    "outcomes" => "SELECT CAST(coalesce(sum(rows), 0) AS BIGINT) AS n FROM outcome_pages".to_owned(),
                    _ => format!("SELECT count(*) AS n FROM {table}"),
                };
                let row = self.pool.query(sqlx::AssertSqlSafe(count)).fetch_one(OP).await?;
                size.rows.insert((*table).to_owned(), from_db_count(OP, row.get("n")?)?);
            }
            let sql = match self.backend() {
                Backend::Sqlite => {
                    "SELECT p.page_count * s.page_size AS bytes, f.freelist_count * s.page_size AS free \
                     FROM pragma_page_count() p, pragma_page_size() s, pragma_freelist_count() f"
                }
                Backend::Postgres => {
                    "SELECT CAST(coalesce(sum(pg_total_relation_size(c.oid)), 0) AS BIGINT) AS bytes, \
                     CAST(0 AS BIGINT) AS free FROM pg_class c JOIN pg_namespace s ON s.oid = c.relnamespace \
                     WHERE s.nspname = current_schema() AND c.relkind = 'r'"
                }
            };
            let row = self.pool.query(sql).fetch_one(OP).await?;
            size.bytes = from_db_count(OP, row.get("bytes")?)?;
            size.free_bytes = from_db_count(OP, row.get("free")?)?;
            Ok(size)
        })
    }
}

#[cfg(test)]
mod tests {
    use sqlx::Connection as _;

    use super::*;

    fn puts(n: usize) -> Vec<FingerprintPut> {
        (0..n)
            .map(|i| FingerprintPut {
                scope: "engagement:Account".into(),
                key: format!("001A{i:05}"),
                field: "Events__c".into(),
                fingerprint: i as u64,
                written_at: DateTime::<Utc>::from_timestamp_millis(1_767_225_600_000).unwrap_or_default(),
                value: Some(serde_json::json!(i)),
            })
            .collect()
    }

    /// A batch insert compiles to a statement of thousands of parameters, megabytes of SQLite's
    /// memory, and each batch size is another statement: kept in the connection's cache, they
    /// would stay for its life.
    #[tokio::test]
    async fn batch_inserts_leave_no_statement_in_the_connection_cache() {
        let store = SqlStore::open_sqlite("sqlite::memory:").await.expect("an in-memory store");
        let Pool::Sqlite(pool) = &store.pool else { panic!("not SQLite") };
        // The fixed statements (scope and field names, the transaction) are cached on first use.
        store.record_outcomes(RunId::new(), &[], &puts(1)).await.expect("recorded");
        let cached = || async { pool.acquire().await.expect("the connection").cached_statements_size() };
        let before = cached().await;
        for n in [2, 3, 4] {
            store.record_outcomes(RunId::new(), &[], &puts(n)).await.expect("recorded");
        }
        assert_eq!(cached().await, before);
    }

    /// A first run's fingerprints (tens of megabytes at 100,000 accounts) pass through the
    /// write-ahead log; once checkpointed, the log is cut back to
    /// [`super::super::sqlite::WAL_SIZE_LIMIT`] rather than kept at its largest for good.
    #[tokio::test]
    async fn the_write_ahead_log_is_cut_back_after_a_large_write() {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("state.db");
        let store = SqlStore::open_sqlite(&format!("sqlite://{}", path.display())).await.expect("a store");
        let wal = || std::fs::metadata(dir.path().join("state.db-wal")).map(|m| m.len()).unwrap_or(0);
        let mut largest = 0;
        for round in 0..4 {
            let mut many = puts(60_000);
            for p in &mut many {
                p.fingerprint += round;
            }
            store.record_outcomes(RunId::new(), &[], &many).await.expect("recorded");
            largest = largest.max(wal());
        }
        // Small writes after the checkpoint: the log restarts from its beginning, cut back.
        for _ in 0..3 {
            store.record_outcomes(RunId::new(), &[], &puts(1)).await.expect("recorded");
        }
        assert!(largest > super::super::sqlite::WAL_SIZE_LIMIT, "the large writes never grew the log: {largest}");
        assert!(wal() <= super::super::sqlite::WAL_SIZE_LIMIT, "the log stayed at {} bytes (largest {largest})", wal());
    }
}
