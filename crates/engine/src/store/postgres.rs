//! The PostgreSQL backend, for several workers sharing one state. Bulk writes go through
//! `UNNEST` of column arrays (one statement per 10,000 rows, a fixed handful of parameters)
//! rather than multi-row VALUES; failure claims use `FOR UPDATE SKIP LOCKED` so concurrent
//! replayers never block on, or share, a row.

use std::collections::{BTreeMap, HashMap};
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use futures_util::TryStreamExt;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow};
use sqlx::types::Json;
use sqlx::{Connection, PgConnection, Postgres, Row};
use uuid::Uuid;

use super::{
    Action, Backend, BudgetDay, BudgetStore, CreateState, CursorStore, Failure, FailureFilter, FailureSelector,
    FailureStatus, FailureStore, FingerprintPut, FingerprintStore, Fingerprints, IdMapEntry, IdMapStore,
    IdempotencyStore, InboxCounts, InboxEvent, InboxStore, MatchStatus, NewFailure, NewRun, OutcomeFilter,
    RecordOutcome, Run, RunClaim, RunFinish, RunId, RunState, RunStore, Store, StoreError, StoreFuture,
    abandoned_error, finished_after_abandoned, fp_from_db, fp_to_db, from_db_count, from_json_text, json_text,
    last_per_key, lease_until, outcome_rows, query_err, redact_location, search_term, to_db_count,
};

/// Rows per UNNEST statement: large enough to amortise round trips, small enough to keep each
/// statement's arrays a few MB.
const BATCH: usize = 10_000;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// The state store in a PostgreSQL database (or one schema of it).
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
}

/// Listing limits use 0 for "no limit"; PostgreSQL spells that as LIMIT NULL.
fn list_limit(limit: u32) -> Option<i64> {
    (limit != 0).then(|| i64::from(limit))
}

fn get<'r, T>(row: &'r PgRow, col: &'static str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(col).map_err(|e| StoreError::Corrupt { what: col, detail: e.to_string() })
}

/// Schema names are spliced into SQL (identifiers cannot be bound), so only plain lowercase
/// identifiers are accepted.
fn checked_schema(schema: &str) -> Result<&str, StoreError> {
    let ok = !schema.is_empty()
        && schema.len() <= 63
        && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        && !schema.starts_with(|c: char| c.is_ascii_digit());
    if ok {
        Ok(schema)
    } else {
        Err(StoreError::Invalid {
            what: "PostgreSQL schema name",
            detail: format!("{schema:?} must be lowercase letters, digits and underscores"),
        })
    }
}

fn connect_options(url: &str) -> Result<PgConnectOptions, StoreError> {
    PgConnectOptions::from_str(url).map_err(|source| StoreError::Open { location: redact_location(url), source })
}

async fn admin_connection(url: &str) -> Result<PgConnection, StoreError> {
    PgConnection::connect_with(&connect_options(url)?)
        .await
        .map_err(|source| StoreError::Open { location: redact_location(url), source })
}

pub(super) async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    let schema = checked_schema(schema)?;
    let mut conn = admin_connection(url).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE")))
        .execute(&mut conn)
        .await
        .map_err(query_err("drop schema"))?;
    conn.close().await.map_err(query_err("drop schema"))?;
    Ok(())
}

impl PostgresStore {
    /// Connects to `url`; with `schema`, creates that schema if missing and keeps every table
    /// in it (via the connection's `search_path`). Then migrates.
    pub async fn open(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
        let mut options = connect_options(url)?;
        let mut pool_options = PgPoolOptions::new().max_connections(8);
        if let Some(schema) = schema {
            let schema = checked_schema(schema)?;
            let mut conn = admin_connection(url).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA IF NOT EXISTS \"{schema}\"")))
                .execute(&mut conn)
                .await
                .map_err(query_err("create schema"))?;
            conn.close().await.map_err(query_err("create schema"))?;
            options = options.options([("search_path", schema)]);
            // Isolated schemas are for tests, which run many stores side by side.
            pool_options = pool_options.max_connections(4);
        }
        let pool = pool_options
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { location: redact_location(url), source })?;
        MIGRATOR.run(&pool).await.map_err(|source| StoreError::Migrate { backend: Backend::Postgres, source })?;
        Ok(PostgresStore { pool })
    }
}

fn run_from_row(row: &PgRow) -> Result<Run, StoreError> {
    Ok(Run {
        id: RunId(get::<Uuid>(row, "id")?),
        workflow: get(row, "workflow")?,
        template: get(row, "template")?,
        dry_run: get(row, "dry_run")?,
        trigger: get(row, "trigger")?,
        state: RunState::parse(&get::<String>(row, "state")?)?,
        started_at: get(row, "started_at")?,
        finished_at: get(row, "finished_at")?,
        stats: get::<Json<serde_json::Value>>(row, "stats")?.0,
        error: get(row, "error")?,
        holder: get(row, "holder")?,
        heartbeat_at: get(row, "heartbeat_at")?,
        lease_until: get(row, "lease_until")?,
    })
}

/// Marks the running runs whose lease expired before `now` abandoned, inside the caller's
/// transaction, and returns those it marked. Each update re-checks state and lease, so a
/// concurrent sweep or a renewal that committed first wins, and rows are taken in id order so
/// two sweepers never wait on each other in a cycle.
async fn sweep_expired(conn: &mut PgConnection, now: DateTime<Utc>) -> Result<Vec<Run>, StoreError> {
    let rows = sqlx::query("SELECT * FROM runs WHERE state = $1 AND lease_until < $2 ORDER BY id")
        .bind(RunState::Running.as_str())
        .bind(now)
        .fetch_all(&mut *conn)
        .await
        .map_err(query_err("sweep expired runs"))?;
    let mut abandoned = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut run = run_from_row(row)?;
        let Some(until) = run.lease_until else { continue };
        let error = abandoned_error(run.holder.as_deref(), until);
        let marked = sqlx::query(
            "UPDATE runs SET state = $1, finished_at = $2, error = $3 \
             WHERE id = $4 AND state = $5 AND lease_until < $2",
        )
        .bind(RunState::Abandoned.as_str())
        .bind(now)
        .bind(&error)
        .bind(run.id.0)
        .bind(RunState::Running.as_str())
        .execute(&mut *conn)
        .await
        .map_err(query_err("sweep expired runs"))?
        .rows_affected()
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

fn id_map_from_row(row: &PgRow) -> Result<IdMapEntry, StoreError> {
    Ok(IdMapEntry {
        workflow: get(row, "workflow")?,
        pendo_id: get(row, "pendo_id")?,
        status: MatchStatus::parse(&get::<String>(row, "status")?)?,
        salesforce_id: get(row, "salesforce_id")?,
        rule: get(row, "rule")?,
        candidates: from_json_text("id map candidates", &get::<String>(row, "candidates")?)?,
        pinned: get(row, "pinned")?,
        checked_at: get(row, "checked_at")?,
    })
}

fn failure_from_row(row: &PgRow) -> Result<Failure, StoreError> {
    let attempts: i32 = get(row, "attempts")?;
    Ok(Failure {
        id: get(row, "id")?,
        workflow: get(row, "workflow")?,
        run: RunId(get::<Uuid>(row, "run_id")?),
        object: get(row, "object")?,
        key: get(row, "key")?,
        salesforce_id: get(row, "salesforce_id")?,
        payload: get::<Json<serde_json::Value>>(row, "payload")?.0,
        error_code: get(row, "error_code")?,
        message: get(row, "message")?,
        fields: from_json_text("failure fields", &get::<String>(row, "fields")?)?,
        status: FailureStatus::parse(&get::<String>(row, "status")?)?,
        attempts: u32::try_from(attempts)
            .map_err(|_| StoreError::Corrupt { what: "failure attempts", detail: format!("{attempts}") })?,
        first_failed_at: get(row, "first_failed_at")?,
        last_failed_at: get(row, "last_failed_at")?,
        leased_until: get(row, "leased_until")?,
        reason: get(row, "reason")?,
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

async fn upsert_fingerprints(conn: &mut PgConnection, puts: &[&FingerprintPut]) -> Result<(), StoreError> {
    for chunk in puts.chunks(BATCH) {
        let scopes: Vec<&str> = chunk.iter().map(|p| p.scope.as_str()).collect();
        let keys: Vec<&str> = chunk.iter().map(|p| p.key.as_str()).collect();
        let fields: Vec<&str> = chunk.iter().map(|p| p.field.as_str()).collect();
        let fps: Vec<i64> = chunk.iter().map(|p| fp_to_db(p.fingerprint)).collect();
        let ats: Vec<DateTime<Utc>> = chunk.iter().map(|p| p.written_at).collect();
        let values: Vec<Option<String>> =
            chunk.iter().map(|p| p.value.as_ref().map(serde_json::Value::to_string)).collect();
        sqlx::query(
            "INSERT INTO fingerprints (scope, key, field, fingerprint, written_at, value) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::timestamptz[], $6::text[]) \
             ON CONFLICT (scope, key, field) DO UPDATE SET fingerprint = excluded.fingerprint, \
             written_at = excluded.written_at, value = excluded.value",
        )
        .bind(scopes)
        .bind(keys)
        .bind(fields)
        .bind(fps)
        .bind(ats)
        .bind(values)
        .execute(&mut *conn)
        .await
        .map_err(query_err("put fingerprints"))?;
    }
    Ok(())
}

fn dedup_fingerprints(puts: &[FingerprintPut]) -> Vec<&FingerprintPut> {
    last_per_key(puts, |p| (&p.scope, &p.key, &p.field))
}

impl Store for PostgresStore {
    fn backend(&self) -> Backend {
        Backend::Postgres
    }
}

impl RunStore for PostgresStore {
    fn start_run(&self, run: &NewRun) -> StoreFuture<'_, RunId> {
        let run = run.clone();
        Box::pin(async move {
            let id = RunId::new();
            sqlx::query(
                "INSERT INTO runs (id, workflow, template, dry_run, trigger, state, started_at, stats) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, '{}')",
            )
            .bind(id.0)
            .bind(run.workflow)
            .bind(run.template)
            .bind(run.dry_run)
            .bind(run.trigger)
            .bind(RunState::Running.as_str())
            .bind(run.started_at)
            .execute(&self.pool)
            .await
            .map_err(query_err("start run"))?;
            Ok(id)
        })
    }

    fn record_outcomes(
        &self,
        run: RunId,
        outcomes: &[RecordOutcome],
        fingerprints: &[FingerprintPut],
    ) -> StoreFuture<'_, ()> {
        let rows = outcome_rows(outcomes);
        let fps: Vec<FingerprintPut> = dedup_fingerprints(fingerprints).into_iter().cloned().collect();
        Box::pin(async move {
            let rows = rows?;
            let mut tx = self.pool.begin().await.map_err(query_err("record outcomes"))?;
            for chunk in rows.chunks(BATCH) {
                let objects: Vec<&str> = chunk.iter().map(|r| r.object.as_str()).collect();
                let keys: Vec<&str> = chunk.iter().map(|r| r.key.as_str()).collect();
                let keys_lc: Vec<&str> = chunk.iter().map(|r| r.key_lc.as_str()).collect();
                let sf_ids: Vec<Option<&str>> = chunk.iter().map(|r| r.salesforce_id.as_deref()).collect();
                let actions: Vec<&str> = chunk.iter().map(|r| r.action).collect();
                let changes: Vec<&str> = chunk.iter().map(|r| r.changes.as_str()).collect();
                let codes: Vec<Option<&str>> = chunk.iter().map(|r| r.error_code.as_deref()).collect();
                let messages: Vec<Option<&str>> = chunk.iter().map(|r| r.message.as_deref()).collect();
                // WITH ORDINALITY + ORDER BY keeps the ids in the caller's order, which is the
                // order run_outcomes returns.
                sqlx::query(
                    "INSERT INTO outcomes (run_id, object, key, key_lc, salesforce_id, action, \
                     changes, error_code, message) \
                     SELECT $1, o, k, kl, s, a, c, e, m FROM UNNEST($2::text[], $3::text[], \
                     $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[]) \
                     WITH ORDINALITY AS t(o, k, kl, s, a, c, e, m, n) ORDER BY n",
                )
                .bind(run.0)
                .bind(objects)
                .bind(keys)
                .bind(keys_lc)
                .bind(sf_ids)
                .bind(actions)
                .bind(changes)
                .bind(codes)
                .bind(messages)
                .execute(&mut *tx)
                .await
                .map_err(query_err("record outcomes"))?;
            }
            let fps: Vec<&FingerprintPut> = fps.iter().collect();
            upsert_fingerprints(&mut tx, &fps).await?;
            tx.commit().await.map_err(query_err("record outcomes"))?;
            Ok(())
        })
    }

    fn finish_run(&self, run: RunId, finish: &RunFinish) -> StoreFuture<'_, ()> {
        let finish = finish.clone();
        Box::pin(async move {
            let after_abandoned = finished_after_abandoned(&finish);
            // One statement: the CASE sees the row as it is once any concurrent sweep committed.
            let done = sqlx::query(
                "UPDATE runs SET state = $1, finished_at = $2, stats = $3, \
                 error = CASE WHEN state = $6 THEN coalesce(error, '') || $7 ELSE $4 END WHERE id = $5",
            )
            .bind(finish.state.as_str())
            .bind(finish.finished_at)
            .bind(Json(finish.stats))
            .bind(finish.error)
            .bind(run.0)
            .bind(RunState::Abandoned.as_str())
            .bind(after_abandoned)
            .execute(&self.pool)
            .await
            .map_err(query_err("finish run"))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Invalid { what: "finish run", detail: format!("no run with id {run}") });
            }
            Ok(())
        })
    }

    fn claim_run(&self, run: &NewRun, holder: &str, lease: Duration, now: DateTime<Utc>) -> StoreFuture<'_, RunClaim> {
        let run = run.clone();
        let holder = holder.to_owned();
        Box::pin(async move {
            let until = lease_until(now, lease)?;
            let mut tx = self.pool.begin().await.map_err(query_err("claim run"))?;
            let abandoned = sweep_expired(&mut tx, now).await?;
            // The partial unique index makes the claim atomic: of two concurrent inserts for one
            // workflow, the second waits for the first to commit and then does nothing.
            let id = RunId::new();
            let inserted = sqlx::query(
                "INSERT INTO runs (id, workflow, template, dry_run, trigger, state, started_at, stats, \
                 holder, heartbeat_at, lease_until) VALUES ($1, $2, $3, $4, $5, $6, $7, '{}', $8, $9, $10) \
                 ON CONFLICT (workflow) WHERE state = 'running' AND holder IS NOT NULL DO NOTHING",
            )
            .bind(id.0)
            .bind(&run.workflow)
            .bind(&run.template)
            .bind(run.dry_run)
            .bind(&run.trigger)
            .bind(RunState::Running.as_str())
            .bind(run.started_at)
            .bind(&holder)
            .bind(now)
            .bind(until)
            .execute(&mut *tx)
            .await
            .map_err(query_err("claim run"))?
            .rows_affected()
                == 1;
            let claim = if inserted {
                RunClaim::Started { id, abandoned }
            } else {
                // The holder may finish between the insert and this read; then the claim still
                // reports busy (it lost the race honestly) with the run as it now reads.
                let row = sqlx::query(
                    "SELECT * FROM runs WHERE workflow = $1 AND holder IS NOT NULL \
                     ORDER BY (state = $2) DESC, started_at DESC LIMIT 1",
                )
                .bind(&run.workflow)
                .bind(RunState::Running.as_str())
                .fetch_one(&mut *tx)
                .await
                .map_err(query_err("claim run"))?;
                RunClaim::Busy { holder: Box::new(run_from_row(&row)?), abandoned }
            };
            tx.commit().await.map_err(query_err("claim run"))?;
            Ok(claim)
        })
    }

    fn renew_run_lease(&self, run: RunId, holder: &str, lease: Duration, now: DateTime<Utc>) -> StoreFuture<'_, bool> {
        let holder = holder.to_owned();
        Box::pin(async move {
            let until = lease_until(now, lease)?;
            // Renewing a lapsed lease nobody has swept yet is safe: a claim sweeps before it
            // inserts, so no other run of the workflow can have started meanwhile.
            let renewed = sqlx::query(
                "UPDATE runs SET heartbeat_at = $1, lease_until = $2 WHERE id = $3 AND state = $4 AND holder = $5",
            )
            .bind(now)
            .bind(until)
            .bind(run.0)
            .bind(RunState::Running.as_str())
            .bind(holder)
            .execute(&self.pool)
            .await
            .map_err(query_err("renew run lease"))?
            .rows_affected()
                == 1;
            Ok(renewed)
        })
    }

    fn sweep_expired_runs(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<Run>> {
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(query_err("sweep expired runs"))?;
            let abandoned = sweep_expired(&mut tx, now).await?;
            tx.commit().await.map_err(query_err("sweep expired runs"))?;
            Ok(abandoned)
        })
    }

    fn list_runs(&self, workflow: Option<&str>, limit: u32) -> StoreFuture<'_, Vec<Run>> {
        let workflow = workflow.map(str::to_owned);
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT * FROM runs WHERE ($1::text IS NULL OR workflow = $1) \
                 ORDER BY started_at DESC, id DESC LIMIT $2",
            )
            .bind(workflow)
            .bind(list_limit(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list runs"))?;
            rows.iter().map(run_from_row).collect()
        })
    }

    fn get_run(&self, id: RunId) -> StoreFuture<'_, Option<Run>> {
        Box::pin(async move {
            let row = sqlx::query("SELECT * FROM runs WHERE id = $1")
                .bind(id.0)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("get run"))?;
            row.as_ref().map(run_from_row).transpose()
        })
    }

    fn run_outcomes(&self, run: RunId, filter: &OutcomeFilter) -> StoreFuture<'_, Vec<RecordOutcome>> {
        let search = search_term(filter);
        let action = filter.action.map(Action::as_str);
        let (limit, offset) = (list_limit(filter.limit), i64::from(filter.offset));
        Box::pin(async move {
            // strpos() on text the engine lowercased needs no LIKE escaping: `%`, `_` and `\`
            // in a search are plain characters.
            let rows = sqlx::query(
                "SELECT object, key, salesforce_id, action, changes, error_code, message \
                 FROM outcomes WHERE run_id = $1 \
                 AND ($2::text IS NULL OR strpos(key_lc, $2) > 0 \
                      OR strpos(lower(coalesce(salesforce_id, '')), $2) > 0) \
                 AND ($3::text IS NULL OR action = $3) \
                 ORDER BY id LIMIT $4 OFFSET $5",
            )
            .bind(run.0)
            .bind(search)
            .bind(action)
            .bind(limit)
            .bind(offset)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list run outcomes"))?;
            rows.iter()
                .map(|row| {
                    Ok(RecordOutcome {
                        object: get(row, "object")?,
                        key: get(row, "key")?,
                        salesforce_id: get(row, "salesforce_id")?,
                        action: Action::parse(&get::<String>(row, "action")?)?,
                        changes: from_json_text("outcome changes", &get::<String>(row, "changes")?)?,
                        error_code: get(row, "error_code")?,
                        message: get(row, "message")?,
                    })
                })
                .collect()
        })
    }

    fn outcome_counts(&self, run: RunId) -> StoreFuture<'_, BTreeMap<Action, u64>> {
        Box::pin(async move {
            let rows = sqlx::query("SELECT action, count(*) AS n FROM outcomes WHERE run_id = $1 GROUP BY action")
                .bind(run.0)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("count run outcomes"))?;
            rows.iter()
                .map(|row| {
                    Ok((
                        Action::parse(&get::<String>(row, "action")?)?,
                        from_db_count("outcome count", get(row, "n")?)?,
                    ))
                })
                .collect()
        })
    }
}

impl InboxStore for PostgresStore {
    fn put_event(&self, event: &InboxEvent) -> StoreFuture<'_, bool> {
        let e = event.clone();
        Box::pin(async move {
            let done = sqlx::query(
                "INSERT INTO inbox (unique_id, source, kind, received_at, body) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (unique_id) DO NOTHING",
            )
            .bind(e.unique_id)
            .bind(e.source)
            .bind(e.kind)
            .bind(e.received_at)
            .bind(e.body)
            .execute(&self.pool)
            .await
            .map_err(query_err("store webhook event"))?;
            Ok(done.rows_affected() == 1)
        })
    }

    fn pending_events(&self, limit: u32) -> StoreFuture<'_, Vec<InboxEvent>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT unique_id, source, kind, received_at, body FROM inbox WHERE processed_at IS NULL \
                 ORDER BY received_at, unique_id LIMIT $1",
            )
            .bind(i64::from(limit))
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read webhook events"))?;
            rows.iter()
                .map(|row| {
                    Ok(InboxEvent {
                        unique_id: get(row, "unique_id")?,
                        source: get(row, "source")?,
                        kind: get(row, "kind")?,
                        received_at: get(row, "received_at")?,
                        body: get(row, "body")?,
                    })
                })
                .collect()
        })
    }

    fn mark_processed(&self, unique_ids: &[String], now: DateTime<Utc>) -> StoreFuture<'_, ()> {
        let ids = unique_ids.to_vec();
        Box::pin(async move {
            sqlx::query("UPDATE inbox SET processed_at = $1 WHERE unique_id = ANY($2) AND processed_at IS NULL")
                .bind(now)
                .bind(ids)
                .execute(&self.pool)
                .await
                .map_err(query_err("mark webhook events processed"))?;
            Ok(())
        })
    }

    fn inbox_counts(&self) -> StoreFuture<'_, InboxCounts> {
        Box::pin(async move {
            let (received, pending): (i64, i64) =
                sqlx::query_as("SELECT COUNT(*), COUNT(*) FILTER (WHERE processed_at IS NULL) FROM inbox")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_err("count webhook events"))?;
            Ok(InboxCounts {
                received: from_db_count("inbox count", received)?,
                pending: from_db_count("inbox pending", pending)?,
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
        let claimer = claimer.to_owned();
        Box::pin(async move {
            let until = lease_until(now, lease)?;
            let mut tx = self.pool.begin().await.map_err(query_err("claim webhook events"))?;
            sqlx::query("SELECT pg_advisory_xact_lock($1)")
                .bind(INBOX_CLAIM_LOCK)
                .execute(&mut *tx)
                .await
                .map_err(query_err("claim webhook events"))?;
            // SKIP LOCKED: an event whose row another transaction holds (being marked processed
            // or renewed) is passed over rather than waited for.
            let rows = sqlx::query(
                "UPDATE inbox SET claimed_by = $1, lease_until = $2 WHERE unique_id IN ( \
                   SELECT i.unique_id FROM inbox i \
                   WHERE i.processed_at IS NULL AND (i.lease_until IS NULL OR i.lease_until < $3) \
                   AND NOT EXISTS (SELECT 1 FROM inbox o WHERE o.processed_at IS NULL \
                       AND o.lease_until >= $3 AND o.claimed_by <> $1 \
                       AND (o.visitor_key = i.visitor_key OR o.account_key = i.account_key)) \
                   ORDER BY i.received_at, i.unique_id LIMIT $4 FOR UPDATE SKIP LOCKED) \
                 RETURNING unique_id, source, kind, received_at, body",
            )
            .bind(&claimer)
            .bind(until)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(query_err("claim webhook events"))?;
            tx.commit().await.map_err(query_err("claim webhook events"))?;
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
            let done = sqlx::query("UPDATE inbox SET lease_until = $2 WHERE claimed_by = $1 AND processed_at IS NULL")
                .bind(claimer)
                .bind(until)
                .execute(&self.pool)
                .await
                .map_err(query_err("renew webhook event claims"))?;
            Ok(done.rows_affected())
        })
    }

    fn release_event_claims(&self, claimer: &str) -> StoreFuture<'_, ()> {
        let claimer = claimer.to_owned();
        Box::pin(async move {
            sqlx::query(
                "UPDATE inbox SET claimed_by = NULL, lease_until = NULL WHERE claimed_by = $1 AND processed_at IS NULL",
            )
            .bind(claimer)
            .execute(&self.pool)
            .await
            .map_err(query_err("release webhook event claims"))?;
            Ok(())
        })
    }

    fn event_claimers(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>> {
        Box::pin(async move {
            let rows: Vec<(String,)> = sqlx::query_as(
                "SELECT DISTINCT claimed_by FROM inbox \
                 WHERE processed_at IS NULL AND claimed_by IS NOT NULL AND lease_until >= $1",
            )
            .bind(now)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("list webhook event claimers"))?;
            Ok(rows.into_iter().map(|(c,)| c).collect())
        })
    }

    fn oldest_claimable_event(&self, now: DateTime<Utc>) -> StoreFuture<'_, Option<DateTime<Utc>>> {
        Box::pin(async move {
            sqlx::query_scalar(
                "SELECT min(received_at) FROM inbox WHERE processed_at IS NULL \
                 AND (lease_until IS NULL OR lease_until < $1)",
            )
            .bind(now)
            .fetch_one(&self.pool)
            .await
            .map_err(query_err("read the oldest claimable webhook event"))
        })
    }

    fn pending_depth(&self, cap: u32) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let n: i64 =
                sqlx::query_scalar("SELECT count(*) FROM (SELECT 1 FROM inbox WHERE processed_at IS NULL LIMIT $1) p")
                    .bind(i64::from(cap))
                    .fetch_one(&self.pool)
                    .await
                    .map_err(query_err("count pending webhook events"))?;
            from_db_count("inbox depth", n)
        })
    }
}

/// The transaction-scoped advisory lock that serializes inbox claims across workers (a claim
/// takes a millisecond): the visitor/account exclusion reads other rows' claims, and two
/// claimers running side by side under READ COMMITTED would each miss the other's uncommitted
/// claim and take two events of one visitor. The number is arbitrary, fixed ("usagesync inbox").
const INBOX_CLAIM_LOCK: i64 = 0x7573_6167_6573_796e;

fn inbox_event_from_row(row: &PgRow) -> Result<InboxEvent, StoreError> {
    Ok(InboxEvent {
        unique_id: get(row, "unique_id")?,
        source: get(row, "source")?,
        kind: get(row, "kind")?,
        received_at: get(row, "received_at")?,
        body: get(row, "body")?,
    })
}

impl CursorStore for PostgresStore {
    fn cursor(&self, workflow: &str, name: &str) -> StoreFuture<'_, Option<String>> {
        let (workflow, name) = (workflow.to_owned(), name.to_owned());
        Box::pin(async move {
            sqlx::query_scalar("SELECT value FROM cursors WHERE workflow = $1 AND name = $2")
                .bind(workflow)
                .bind(name)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("read cursor"))
        })
    }

    fn advance_cursor(&self, workflow: &str, name: &str, expected: Option<&str>, new: &str) -> StoreFuture<'_, bool> {
        let (workflow, name) = (workflow.to_owned(), name.to_owned());
        let (expected, new) = (expected.map(str::to_owned), new.to_owned());
        Box::pin(async move {
            let now = crate::clock::written_at();
            let done = match expected {
                None => {
                    sqlx::query(
                        "INSERT INTO cursors (workflow, name, value, updated_at) VALUES ($1, $2, $3, $4) \
                     ON CONFLICT (workflow, name) DO NOTHING",
                    )
                    .bind(workflow)
                    .bind(name)
                    .bind(new)
                    .bind(now)
                    .execute(&self.pool)
                    .await
                }
                Some(expected) => {
                    sqlx::query(
                        "UPDATE cursors SET value = $1, updated_at = $2 \
                     WHERE workflow = $3 AND name = $4 AND value = $5",
                    )
                    .bind(new)
                    .bind(now)
                    .bind(workflow)
                    .bind(name)
                    .bind(expected)
                    .execute(&self.pool)
                    .await
                }
            }
            .map_err(query_err("advance cursor"))?;
            Ok(done.rows_affected() == 1)
        })
    }
}

impl IdMapStore for PostgresStore {
    fn id_map(&self, workflow: &str) -> StoreFuture<'_, Vec<IdMapEntry>> {
        let workflow = workflow.to_owned();
        Box::pin(async move {
            sqlx::query("SELECT * FROM id_map WHERE workflow = $1 ORDER BY pendo_id")
                .bind(workflow)
                .fetch(&self.pool)
                .map_err(query_err("read id map"))
                .and_then(|row| async move { id_map_from_row(&row) })
                .try_collect()
                .await
        })
    }

    fn put_id_map(&self, entries: &[IdMapEntry]) -> StoreFuture<'_, ()> {
        let rows: Result<Vec<_>, StoreError> = last_per_key(entries, |e| (&e.workflow, &e.pendo_id))
            .into_iter()
            .map(|e| Ok((e.clone(), json_text("id map candidates", &e.candidates)?)))
            .collect();
        Box::pin(async move {
            let rows = rows?;
            let mut tx = self.pool.begin().await.map_err(query_err("put id map"))?;
            for chunk in rows.chunks(BATCH) {
                let workflows: Vec<&str> = chunk.iter().map(|(e, _)| e.workflow.as_str()).collect();
                let ids: Vec<&str> = chunk.iter().map(|(e, _)| e.pendo_id.as_str()).collect();
                let statuses: Vec<&str> = chunk.iter().map(|(e, _)| e.status.as_str()).collect();
                let sf_ids: Vec<Option<&str>> = chunk.iter().map(|(e, _)| e.salesforce_id.as_deref()).collect();
                let rules: Vec<Option<&str>> = chunk.iter().map(|(e, _)| e.rule.as_deref()).collect();
                let candidates: Vec<&str> = chunk.iter().map(|(_, c)| c.as_str()).collect();
                let pinned: Vec<bool> = chunk.iter().map(|(e, _)| e.pinned).collect();
                let checked: Vec<DateTime<Utc>> = chunk.iter().map(|(e, _)| e.checked_at).collect();
                // A person's pin outranks automatic matching; only another pin replaces it.
                sqlx::query(
                    "INSERT INTO id_map (workflow, pendo_id, status, salesforce_id, rule, \
                     candidates, pinned, checked_at) \
                     SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], \
                     $5::text[], $6::text[], $7::bool[], $8::timestamptz[]) \
                     ON CONFLICT (workflow, pendo_id) DO UPDATE SET status = excluded.status, \
                     salesforce_id = excluded.salesforce_id, rule = excluded.rule, \
                     candidates = excluded.candidates, pinned = excluded.pinned, \
                     checked_at = excluded.checked_at \
                     WHERE NOT id_map.pinned OR excluded.pinned",
                )
                .bind(workflows)
                .bind(ids)
                .bind(statuses)
                .bind(sf_ids)
                .bind(rules)
                .bind(candidates)
                .bind(pinned)
                .bind(checked)
                .execute(&mut *tx)
                .await
                .map_err(query_err("put id map"))?;
            }
            tx.commit().await.map_err(query_err("put id map"))?;
            Ok(())
        })
    }

    fn pin_match(&self, workflow: &str, pendo_id: &str, salesforce_id: &str) -> StoreFuture<'_, ()> {
        let (workflow, pendo_id, salesforce_id) = (workflow.to_owned(), pendo_id.to_owned(), salesforce_id.to_owned());
        Box::pin(async move {
            sqlx::query(
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
            .bind(crate::clock::written_at())
            .execute(&self.pool)
            .await
            .map_err(query_err("pin match"))?;
            Ok(())
        })
    }

    fn unpin_match(&self, workflow: &str, pendo_id: &str) -> StoreFuture<'_, ()> {
        let (workflow, pendo_id) = (workflow.to_owned(), pendo_id.to_owned());
        Box::pin(async move {
            sqlx::query("UPDATE id_map SET pinned = FALSE WHERE workflow = $1 AND pendo_id = $2")
                .bind(workflow)
                .bind(pendo_id)
                .execute(&self.pool)
                .await
                .map_err(query_err("unpin match"))?;
            Ok(())
        })
    }

    fn id_map_review(&self, workflow: Option<&str>) -> StoreFuture<'_, Vec<IdMapEntry>> {
        let workflow = workflow.map(str::to_owned);
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT * FROM id_map WHERE status IN ('ambiguous', 'unmatched') \
                 AND ($1::text IS NULL OR workflow = $1) ORDER BY workflow, pendo_id",
            )
            .bind(workflow)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("review id map"))?;
            rows.iter().map(id_map_from_row).collect()
        })
    }
}

impl FingerprintStore for PostgresStore {
    fn fingerprints(&self, scope: &str) -> StoreFuture<'_, Fingerprints> {
        let scope = scope.to_owned();
        Box::pin(async move {
            let mut out = Fingerprints::default();
            let mut rows = sqlx::query("SELECT key, field, fingerprint FROM fingerprints WHERE scope = $1")
                .bind(scope)
                .fetch(&self.pool);
            while let Some(row) = rows.try_next().await.map_err(query_err("load fingerprints"))? {
                let key: &str = get(&row, "key")?;
                let field: &str = get(&row, "field")?;
                out.insert(key, field, fp_from_db(get(&row, "fingerprint")?));
            }
            Ok(out)
        })
    }

    fn put_fingerprints(&self, puts: &[FingerprintPut]) -> StoreFuture<'_, ()> {
        let puts: Vec<FingerprintPut> = dedup_fingerprints(puts).into_iter().cloned().collect();
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(query_err("put fingerprints"))?;
            let refs: Vec<&FingerprintPut> = puts.iter().collect();
            upsert_fingerprints(&mut tx, &refs).await?;
            tx.commit().await.map_err(query_err("put fingerprints"))?;
            Ok(())
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
            for chunk in keys.chunks(BATCH) {
                let rows = sqlx::query(
                    "SELECT key, field, value FROM fingerprints \
                     WHERE scope = $1 AND value IS NOT NULL AND key = ANY($2)",
                )
                .bind(scope.as_str())
                .bind(chunk)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("read written values"))?;
                for row in &rows {
                    let text: String = get(row, "value")?;
                    let value = serde_json::from_str(&text)
                        .map_err(|e| StoreError::Corrupt { what: "fingerprints.value", detail: e.to_string() })?;
                    out.entry(get(row, "key")?).or_default().push((get(row, "field")?, value));
                }
            }
            Ok(out)
        })
    }

    fn forget_fingerprints(&self, scope: &str, key: &str) -> StoreFuture<'_, ()> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        Box::pin(async move {
            sqlx::query("DELETE FROM fingerprints WHERE scope = $1 AND key = $2")
                .bind(scope)
                .bind(key)
                .execute(&self.pool)
                .await
                .map_err(query_err("forget fingerprints"))?;
            Ok(())
        })
    }
}

impl FailureStore for PostgresStore {
    fn add_failures(&self, failures: &[NewFailure]) -> StoreFuture<'_, ()> {
        let rows: Result<Vec<_>, StoreError> =
            failures.iter().map(|f| Ok((f.clone(), json_text("failure fields", &f.fields)?))).collect();
        Box::pin(async move {
            let rows = rows?;
            let now = crate::clock::written_at();
            let mut tx = self.pool.begin().await.map_err(query_err("add failures"))?;
            // One statement per failure: a batch may name the same record twice, and each
            // repeat must bump the attempts of the row the first one opened.
            for (f, fields) in &rows {
                let still_dismissed = sqlx::query(DISMISSED_AGAIN)
                    .bind(f.workflow.as_str())
                    .bind(f.object.as_str())
                    .bind(f.key.as_str())
                    .bind(f.error_code.as_str())
                    .bind(f.run.0)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("add failures"))?;
                if still_dismissed.rows_affected() > 0 {
                    continue;
                }
                sqlx::query(
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
                .bind(Json(&f.payload))
                .bind(f.error_code.as_str())
                .bind(f.message.as_str())
                .bind(fields.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(query_err("add failures"))?;
            }
            tx.commit().await.map_err(query_err("add failures"))?;
            Ok(())
        })
    }

    fn list_failures(&self, filter: &FailureFilter) -> StoreFuture<'_, Vec<Failure>> {
        let filter = filter.clone();
        Box::pin(async move {
            let sql = format!(
                "SELECT {FAILURE_COLUMNS} FROM failures WHERE ($1::text IS NULL OR workflow = $1) \
                 AND ($2::text IS NULL OR status = $2) AND ($3::text IS NULL OR error_code = $3) \
                 ORDER BY id LIMIT $4"
            );
            let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
                .bind(filter.workflow)
                .bind(filter.status.map(FailureStatus::as_str))
                .bind(filter.error_code)
                .bind(list_limit(filter.limit))
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("list failures"))?;
            rows.iter().map(failure_from_row).collect()
        })
    }

    fn failure_groups(&self, workflow: Option<&str>) -> StoreFuture<'_, Vec<(String, String, u64)>> {
        let workflow = workflow.map(str::to_owned);
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT error_code, min(message) AS sample, count(*) AS n FROM failures \
                 WHERE status = 'open' AND ($1::text IS NULL OR workflow = $1) \
                 GROUP BY error_code ORDER BY n DESC, error_code",
            )
            .bind(workflow)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("group failures"))?;
            rows.iter()
                .map(|row| {
                    Ok((get(row, "error_code")?, get(row, "sample")?, from_db_count("failure count", get(row, "n")?)?))
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
        let selector = selector.clone();
        let worker = worker.to_owned();
        Box::pin(async move {
            let until = lease_until(now, lease)?;
            let condition = match &selector {
                FailureSelector::All { .. } => "($4::text IS NULL OR workflow = $4)",
                FailureSelector::Ids(_) => "id = ANY($4)",
                FailureSelector::Code(_) => "error_code = $4",
            };
            // SKIP LOCKED: a concurrent claimer passes over rows another has locked instead of
            // waiting for them and then claiming them a second time.
            let sql = format!(
                "UPDATE failures f SET status = 'replaying', leased_until = $1, leased_by = $2 \
                 FROM (SELECT id FROM failures \
                   WHERE (status = 'open' OR (status = 'replaying' AND leased_until <= $3)) \
                   AND {condition} ORDER BY id LIMIT $5 FOR UPDATE SKIP LOCKED) c \
                 WHERE f.id = c.id RETURNING {}",
                FAILURE_COLUMNS.split(", ").map(|c| format!("f.{c}")).collect::<Vec<_>>().join(", ")
            );
            let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(until).bind(worker).bind(now);
            let query = match selector {
                FailureSelector::All { workflow } => query.bind(workflow),
                FailureSelector::Ids(ids) => query.bind(ids),
                FailureSelector::Code(code) => query.bind(code),
            };
            let rows = query.bind(i64::from(limit)).fetch_all(&self.pool).await.map_err(query_err("claim failures"))?;
            let mut claimed = rows.iter().map(failure_from_row).collect::<Result<Vec<_>, _>>()?;
            claimed.sort_by_key(|f| f.id);
            Ok(claimed)
        })
    }

    fn resolve_failure(&self, id: i64, now: DateTime<Utc>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let done = sqlx::query(
                "UPDATE failures SET status = 'resolved', leased_until = NULL, leased_by = NULL, \
                 resolved_at = $2 WHERE id = $1",
            )
            .bind(id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(query_err("resolve failure"))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Invalid {
                    what: "resolve failure",
                    detail: format!("no failure with id {id}"),
                });
            }
            Ok(())
        })
    }

    fn fail_again(&self, id: i64, error_code: &str, message: &str, now: DateTime<Utc>) -> StoreFuture<'_, ()> {
        let (error_code, message) = (error_code.to_owned(), message.to_owned());
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(query_err("fail again"))?;
            // Lock this failure first so the merge below sees a stable row.
            let exists = sqlx::query("SELECT id FROM failures WHERE id = $1 FOR UPDATE")
                .bind(id)
                .fetch_optional(&mut *tx)
                .await
                .map_err(query_err("fail again"))?;
            if exists.is_none() {
                return Err(StoreError::Invalid { what: "fail again", detail: format!("no failure with id {id}") });
            }
            // A newer failure of the same record may have opened while this one was replaying;
            // fold this one into it so the record keeps a single open failure.
            let merged = sqlx::query(
                "UPDATE failures SET attempts = attempts + 1 + \
                   (SELECT attempts FROM failures WHERE id = $1), \
                 error_code = $2, message = $3, last_failed_at = $4 \
                 WHERE status = 'open' AND id <> $1 AND (workflow, object, key) = \
                   (SELECT workflow, object, key FROM failures WHERE id = $1)",
            )
            .bind(id)
            .bind(error_code.as_str())
            .bind(message.as_str())
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(query_err("fail again"))?;
            if merged.rows_affected() > 0 {
                sqlx::query("DELETE FROM failures WHERE id = $1").bind(id).execute(&mut *tx).await
            } else {
                sqlx::query(
                    "UPDATE failures SET status = 'open', attempts = attempts + 1, error_code = $2, \
                     message = $3, last_failed_at = $4, leased_until = NULL, leased_by = NULL \
                     WHERE id = $1",
                )
                .bind(id)
                .bind(error_code.as_str())
                .bind(message.as_str())
                .bind(now)
                .execute(&mut *tx)
                .await
            }
            .map_err(query_err("fail again"))?;
            tx.commit().await.map_err(query_err("fail again"))?;
            Ok(())
        })
    }

    fn dismiss_failures(
        &self,
        selector: &FailureSelector,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, Vec<i64>> {
        let selector = selector.clone();
        let reason = reason.to_owned();
        Box::pin(async move {
            let condition = match &selector {
                FailureSelector::All { .. } => "($3::text IS NULL OR workflow = $3)",
                FailureSelector::Ids(_) => "id = ANY($3)",
                FailureSelector::Code(_) => "error_code = $3",
            };
            let sql = format!(
                "UPDATE failures SET status = 'dismissed', reason = $1, resolved_at = $2, \
                 leased_until = NULL, leased_by = NULL WHERE status = 'open' AND {condition} RETURNING id"
            );
            let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(reason).bind(now);
            let query = match selector {
                FailureSelector::All { workflow } => query.bind(workflow),
                FailureSelector::Ids(ids) => query.bind(ids),
                FailureSelector::Code(code) => query.bind(code),
            };
            let rows = query.fetch_all(&self.pool).await.map_err(query_err("dismiss failures"))?;
            let mut ids = rows.iter().map(|r| get::<i64>(r, "id")).collect::<Result<Vec<_>, _>>()?;
            ids.sort_unstable();
            Ok(ids)
        })
    }
}

impl BudgetStore for PostgresStore {
    fn reserve_budget(
        &self,
        day: NaiveDate,
        workflow: &str,
        calls: u64,
        cap: u64,
        _now: DateTime<Utc>,
    ) -> StoreFuture<'_, bool> {
        let workflow = workflow.to_owned();
        Box::pin(async move {
            let calls = to_db_count("reserved calls", calls)?;
            let cap = to_db_count("budget cap", cap)?;
            let mut tx = self.pool.begin().await.map_err(query_err("reserve budget"))?;
            sqlx::query(
                "INSERT INTO budget_days (day, reserved, spent) VALUES ($1, 0, 0) \
                 ON CONFLICT (day) DO NOTHING",
            )
            .bind(day)
            .execute(&mut *tx)
            .await
            .map_err(query_err("reserve budget"))?;
            // The day's row lock serialises reservers; a waiter re-checks the condition against
            // the committed totals (READ COMMITTED re-evaluates the WHERE on the new row).
            let granted = sqlx::query(
                "UPDATE budget_days SET reserved = reserved + $2 \
                 WHERE day = $1 AND reserved + spent + $2 <= $3",
            )
            .bind(day)
            .bind(calls)
            .bind(cap)
            .execute(&mut *tx)
            .await
            .map_err(query_err("reserve budget"))?
            .rows_affected()
                == 1;
            if granted {
                sqlx::query(
                    "INSERT INTO budget_workflows (day, workflow, reserved, spent) \
                     VALUES ($1, $2, $3, 0) ON CONFLICT (day, workflow) \
                     DO UPDATE SET reserved = budget_workflows.reserved + excluded.reserved",
                )
                .bind(day)
                .bind(workflow)
                .bind(calls)
                .execute(&mut *tx)
                .await
                .map_err(query_err("reserve budget"))?;
            }
            tx.commit().await.map_err(query_err("reserve budget"))?;
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
        let workflow = workflow.to_owned();
        Box::pin(async move {
            let reserved = to_db_count("settled reservation", reserved)?;
            let spent = to_db_count("spent calls", spent)?;
            let mut tx = self.pool.begin().await.map_err(query_err("settle budget"))?;
            // Only what this workflow really holds is released from the day's total: a late
            // settle of a reservation already released (its run was taken for dead) must not
            // release other workflows' reservations.
            let held: Option<i64> =
                sqlx::query_scalar("SELECT reserved FROM budget_workflows WHERE day = $1 AND workflow = $2 FOR UPDATE")
                    .bind(day)
                    .bind(workflow.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_err("settle budget"))?;
            let reserved = reserved.min(held.unwrap_or(0));
            // Releasing more than is reserved (a double settle) clamps at zero rather than
            // inventing negative reservations.
            sqlx::query(
                "INSERT INTO budget_days (day, reserved, spent) VALUES ($1, 0, $3) \
                 ON CONFLICT (day) DO UPDATE SET \
                 reserved = GREATEST(budget_days.reserved - $2, 0), \
                 spent = budget_days.spent + $3",
            )
            .bind(day)
            .bind(reserved)
            .bind(spent)
            .execute(&mut *tx)
            .await
            .map_err(query_err("settle budget"))?;
            sqlx::query(
                "INSERT INTO budget_workflows (day, workflow, reserved, spent) VALUES ($1, $2, 0, $4) \
                 ON CONFLICT (day, workflow) DO UPDATE SET \
                 reserved = GREATEST(budget_workflows.reserved - $3, 0), \
                 spent = budget_workflows.spent + $4",
            )
            .bind(day)
            .bind(workflow.as_str())
            .bind(reserved)
            .bind(spent)
            .execute(&mut *tx)
            .await
            .map_err(query_err("settle budget"))?;
            if spent > 0 {
                sqlx::query("INSERT INTO budget_spend (day, workflow, calls, at) VALUES ($1, $2, $3, $4)")
                    .bind(day)
                    .bind(workflow.as_str())
                    .bind(spent)
                    .bind(now)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("settle budget"))?;
            }
            tx.commit().await.map_err(query_err("settle budget"))?;
            Ok(())
        })
    }

    fn release_reservations(&self, day: NaiveDate, workflow: &str) -> StoreFuture<'_, u64> {
        let workflow = workflow.to_owned();
        Box::pin(async move {
            let mut tx = self.pool.begin().await.map_err(query_err("release reservations"))?;
            let held: Option<i64> =
                sqlx::query_scalar("SELECT reserved FROM budget_workflows WHERE day = $1 AND workflow = $2 FOR UPDATE")
                    .bind(day)
                    .bind(workflow.as_str())
                    .fetch_optional(&mut *tx)
                    .await
                    .map_err(query_err("release reservations"))?;
            let held = held.unwrap_or(0);
            if held > 0 {
                sqlx::query("UPDATE budget_workflows SET reserved = 0 WHERE day = $1 AND workflow = $2")
                    .bind(day)
                    .bind(workflow.as_str())
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("release reservations"))?;
                sqlx::query("UPDATE budget_days SET reserved = GREATEST(reserved - $2, 0) WHERE day = $1")
                    .bind(day)
                    .bind(held)
                    .execute(&mut *tx)
                    .await
                    .map_err(query_err("release reservations"))?;
            }
            tx.commit().await.map_err(query_err("release reservations"))?;
            from_db_count("released reservation", held)
        })
    }

    fn observe_org_usage(&self, day: NaiveDate, used: u64, max: u64, now: DateTime<Utc>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            // Observations can arrive out of order from several workers; keep the newest.
            sqlx::query(
                "INSERT INTO budget_org (day, used, max, observed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (day) DO UPDATE SET used = excluded.used, max = excluded.max, \
                 observed_at = excluded.observed_at WHERE excluded.observed_at >= budget_org.observed_at",
            )
            .bind(day)
            .bind(to_db_count("org API usage", used)?)
            .bind(to_db_count("org API maximum", max)?)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(query_err("observe org usage"))?;
            Ok(())
        })
    }

    fn budget_day(&self, day: NaiveDate) -> StoreFuture<'_, BudgetDay> {
        Box::pin(async move {
            let totals = sqlx::query("SELECT reserved, spent FROM budget_days WHERE day = $1")
                .bind(day)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("read budget"))?;
            let (reserved, spent) = match &totals {
                Some(row) => (
                    from_db_count("budget reserved", get(row, "reserved")?)?,
                    from_db_count("budget spent", get(row, "spent")?)?,
                ),
                None => (0, 0),
            };
            let by_workflow = sqlx::query("SELECT workflow, spent FROM budget_workflows WHERE day = $1 AND spent > 0")
                .bind(day)
                .fetch_all(&self.pool)
                .await
                .map_err(query_err("read budget"))?
                .iter()
                .map(|row| Ok((get(row, "workflow")?, from_db_count("budget spent", get(row, "spent")?)?)))
                .collect::<Result<BTreeMap<String, u64>, StoreError>>()?;
            let org = sqlx::query("SELECT used, max, observed_at FROM budget_org WHERE day = $1")
                .bind(day)
                .fetch_optional(&self.pool)
                .await
                .map_err(query_err("read budget"))?;
            let (org_used, org_max, observed_at) = match &org {
                Some(row) => (
                    Some(from_db_count("org API usage", get(row, "used")?)?),
                    Some(from_db_count("org API maximum", get(row, "max")?)?),
                    Some(get(row, "observed_at")?),
                ),
                None => (None, None, None),
            };
            Ok(BudgetDay { day, reserved, spent, by_workflow, org_used, org_max, observed_at })
        })
    }

    fn spent_per_hour(&self, day: NaiveDate) -> StoreFuture<'_, Vec<(u32, u64)>> {
        Box::pin(async move {
            let rows = sqlx::query(
                "SELECT EXTRACT(HOUR FROM at AT TIME ZONE 'UTC')::int4 AS hour, \
                 sum(calls)::int8 AS calls FROM budget_spend \
                 WHERE day = $1 GROUP BY 1 ORDER BY 1",
            )
            .bind(day)
            .fetch_all(&self.pool)
            .await
            .map_err(query_err("read spend per hour"))?;
            rows.iter()
                .map(|row| {
                    let hour: i32 = get(row, "hour")?;
                    Ok((
                        u32::try_from(hour)
                            .map_err(|_| StoreError::Corrupt { what: "spend hour", detail: format!("{hour}") })?,
                        from_db_count("spent calls", get(row, "calls")?)?,
                    ))
                })
                .collect()
        })
    }
}

impl IdempotencyStore for PostgresStore {
    fn begin_create(&self, key: &str, workflow: &str, now: DateTime<Utc>) -> StoreFuture<'_, CreateState> {
        let (key, workflow) = (key.to_owned(), workflow.to_owned());
        Box::pin(async move {
            // The row found on conflict can be abandoned (deleted) before we read it; then the
            // key is free again and the next insert wins. Bounded, because each lap means
            // another worker made progress.
            for _ in 0..8 {
                let inserted = sqlx::query(
                    "INSERT INTO idempotency (key, workflow, state, created_at, updated_at) \
                     VALUES ($1, $2, 'pending', $3, $3) ON CONFLICT (key) DO NOTHING",
                )
                .bind(key.as_str())
                .bind(workflow.as_str())
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(query_err("begin create"))?
                .rows_affected()
                    == 1;
                if inserted {
                    return Ok(CreateState::New);
                }
                let row = sqlx::query("SELECT state, salesforce_id, created_at FROM idempotency WHERE key = $1")
                    .bind(key.as_str())
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(query_err("begin create"))?;
                let Some(row) = row else { continue };
                let state: String = get(&row, "state")?;
                return match (state.as_str(), get::<Option<String>>(&row, "salesforce_id")?) {
                    ("committed", Some(salesforce_id)) => Ok(CreateState::Committed { salesforce_id }),
                    ("pending", _) => Ok(CreateState::Pending { since: get(&row, "created_at")? }),
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
            let done = sqlx::query(
                "UPDATE idempotency SET state = 'committed', salesforce_id = $2, updated_at = $3 \
                 WHERE key = $1",
            )
            .bind(key.as_str())
            .bind(salesforce_id)
            .bind(now)
            .execute(&self.pool)
            .await
            .map_err(query_err("commit create"))?;
            if done.rows_affected() == 0 {
                return Err(StoreError::Invalid {
                    what: "commit create",
                    detail: format!("no create was begun for key {key:?}"),
                });
            }
            Ok(())
        })
    }

    fn abandon_create(&self, key: &str) -> StoreFuture<'_, ()> {
        let key = key.to_owned();
        Box::pin(async move {
            sqlx::query("DELETE FROM idempotency WHERE key = $1 AND state = 'pending'")
                .bind(key)
                .execute(&self.pool)
                .await
                .map_err(query_err("abandon create"))?;
            Ok(())
        })
    }
}
