//! The engine's durable state: run history and per-record outcomes, incremental cursors, the
//! Pendo→Salesforce id map, write fingerprints, replayable failures, the daily API budget ledger
//! and idempotency keys for creates.
//!
//! The engine codes against the [`Store`] trait only; [`open`] picks SQLite (the default: a file
//! path, `sqlite://path` or `sqlite::memory:`) or PostgreSQL (`postgres://…`) from the location
//! and runs the embedded migrations. One implementation, [`SqlStore`] (`sql.rs`), serves both:
//! its SQL is written once, and `dialect.rs` holds what truly differs between the databases.
//! Both backends pass the same conformance suite (`suite.rs`).
//!
//! Timestamps are kept with microsecond precision on both backends. Where a method takes `now`,
//! the engine's clock (which tests control) decides leases and ledger times, not the database's.

mod dialect;
pub mod group_commit;
mod postgres;
mod sql;
mod sqlite;
#[cfg(test)]
mod suite;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use sql::SqlStore;

/// The boxed future every store method returns, so that the traits stay dyn-compatible.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// Which database a [`Store`] keeps its state in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        })
    }
}

/// Everything that can go wrong in the store, with what a person needs to act on it.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the state store at {location}: {source}")]
    Open {
        /// The location as given, with any password replaced by `***`.
        location: String,
        #[source]
        source: sqlx::Error,
    },
    #[error(
        "cannot bring the {backend} state store schema up to date (was it written by a newer usagesync?): {source}"
    )]
    Migrate {
        backend: Backend,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("state store operation `{operation}` failed: {source}")]
    Query {
        operation: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error("the state store holds a value this usagesync cannot read ({what}): {detail}")]
    Corrupt { what: &'static str, detail: String },
    #[error("invalid argument to the state store ({what}): {detail}")]
    Invalid { what: &'static str, detail: String },
}

pub(crate) fn query_err(operation: &'static str) -> impl Fn(sqlx::Error) -> StoreError + Copy + Send {
    move |source| StoreError::Query { operation, source }
}

/// Opens (creating if needed) the store at `location` and migrates it to the current schema.
///
/// `postgres://…` and `postgresql://…` select PostgreSQL; `sqlite::memory:`, `sqlite://path`,
/// `sqlite:path` or a bare file path select SQLite (the file is created if missing).
pub async fn open(location: &str) -> Result<Arc<dyn Store>, StoreError> {
    if location.starts_with("postgres://") || location.starts_with("postgresql://") {
        Ok(Arc::new(SqlStore::open_postgres(location, None).await?))
    } else {
        Ok(Arc::new(SqlStore::open_sqlite(location).await?))
    }
}

/// Opens a PostgreSQL store whose tables live in `schema` (created if missing), so tests in
/// several crates can each get an isolated database without creating one.
#[doc(hidden)]
pub async fn open_postgres_schema(url: &str, schema: &str) -> Result<Arc<dyn Store>, StoreError> {
    Ok(Arc::new(SqlStore::open_postgres(url, Some(schema)).await?))
}

/// Drops a schema created by [`open_postgres_schema`] and everything in it.
#[doc(hidden)]
pub async fn drop_postgres_schema(url: &str, schema: &str) -> Result<(), StoreError> {
    postgres::drop_schema(url, schema).await
}

/// Replaces the password in a connection URL (`scheme://user:password@host/…` or a
/// `password=` query parameter) by `***`, so locations can be shown in errors and logs.
pub fn redact_location(location: &str) -> String {
    let mut out = location.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest_start = scheme_end + 3;
        let authority_end = out[rest_start..].find(['/', '?']).map_or(out.len(), |i| rest_start + i);
        if let Some(at) = out[rest_start..authority_end].rfind('@') {
            let userinfo = &out[rest_start..rest_start + at];
            if let Some(colon) = userinfo.find(':') {
                let pw_start = rest_start + colon + 1;
                out.replace_range(pw_start..rest_start + at, "***");
            }
        }
    }
    if let Some(q) = out.find('?') {
        let (base, query) = out.split_at(q + 1);
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{base}{}", redacted.join("&"));
    }
    out
}

/// The whole store: [`SqlStore`] implements every part, on either backend.
pub trait Store:
    RunStore
    + CursorStore
    + IdMapStore
    + FingerprintStore
    + FailureStore
    + BudgetStore
    + IdempotencyStore
    + InboxStore
    + RetentionStore
    + Send
    + Sync
{
    fn backend(&self) -> Backend;
}

// ---------------------------------------------------------------------------------------------
// Webhook inbox

/// One received webhook event, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboxEvent {
    /// The sender's de-duplication id (Pendo's `uniqueId`).
    pub unique_id: String,
    /// `pendo`.
    pub source: String,
    /// The event type (`npsSubmitted`, `guideSeen`, …).
    pub kind: String,
    pub received_at: DateTime<Utc>,
    pub body: serde_json::Value,
}

/// Counts for metrics and the console.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct InboxCounts {
    pub received: u64,
    pub pending: u64,
}

/// What [`InboxStore::record_held`] records, decided from the events the claimer still holds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HeldRecord {
    /// The run `outcomes` and `failures` belong to; none when there are neither.
    pub run: Option<RunId>,
    /// Recorded as `run` (`Running`) first, in the same transaction: a batch that is a run of
    /// its own leaves no run behind when everything was taken over.
    pub start: Option<NewRun>,
    pub outcomes: Vec<RecordOutcome>,
    /// The records written, (object, key): their live failures are resolved.
    pub written: Vec<(String, String)>,
    /// The refusals to keep.
    pub failures: Vec<NewFailure>,
    /// `(key, salesforce_id)` committed in the idempotency ledger.
    pub committed: Vec<(String, String)>,
    /// The events to mark processed; only those held are.
    pub processed: Vec<String>,
}

/// Decides what [`InboxStore::record_held`] records from the events still held. Called inside
/// the transaction: it must not block.
pub type DecideHeld = Box<dyn FnOnce(&HashSet<String>) -> HeldRecord + Send>;

/// What [`InboxStore::record_held`] found and did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Recorded {
    /// The events the claimer still held.
    pub held: HashSet<String>,
    pub record: HeldRecord,
    /// How many events it marked processed.
    pub marked: u64,
}

/// Webhook events are stored here before the sender gets its 2xx, so an event acknowledged is
/// an event kept; a repeat delivery of the same `unique_id` is recognised and stored once.
pub trait InboxStore {
    /// Stores the event; false when an event with its `unique_id` is already there.
    fn put_event(&self, event: &InboxEvent) -> StoreFuture<'_, bool> {
        let put = self.put_events(std::slice::from_ref(event));
        Box::pin(async move { Ok(put.await?.first().copied().unwrap_or(false)) })
    }
    /// Stores `events` in one transaction (a group commit): all or none, and for each whether
    /// it was new (false: its `unique_id` was there already, or earlier in `events`).
    fn put_events(&self, events: &[InboxEvent]) -> StoreFuture<'_, Vec<bool>>;
    /// Unprocessed events, oldest first.
    fn pending_events(&self, limit: u32) -> StoreFuture<'_, Vec<InboxEvent>>;
    /// A batch's record stage, in one transaction: finds which of `unique_ids` `claimer` still
    /// holds unprocessed (locking them), asks `decide` what to record for those, and records it:
    /// starts the run if asked, appends the outcomes, settles the failures
    /// ([`FailureStore::settle_failures`]), commits the idempotency keys
    /// ([`IdempotencyStore::commit_creates`], under `workflow`) and marks the held events of
    /// `processed` processed. Returns the held events and what was recorded. The others were
    /// taken over (the claim lapsed: a stalled worker) or processed by another worker, which
    /// records them: no worker can take an event over between the check and the record, and a
    /// crash records all of it or nothing.
    fn record_held(
        &self,
        claimer: &str,
        workflow: &str,
        unique_ids: &[String],
        now: DateTime<Utc>,
        decide: DecideHeld,
    ) -> StoreFuture<'_, Recorded>;
    fn inbox_counts(&self) -> StoreFuture<'_, InboxCounts>;
    /// Claims up to `limit` pending events, oldest first, for `claimer` until `now + lease`:
    /// events nobody holds, or whose claim lapsed (its worker died), and none whose visitor or
    /// Pendo account has an event under another claimer's live claim, so one visitor's or
    /// account's answers are never written by two workers at once. Atomic across processes:
    /// concurrent claimers never share an event. Oldest first.
    fn claim_events(
        &self,
        claimer: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<InboxEvent>>;
    /// Extends the lease of `claimer`'s unprocessed events to `now + lease`; returns how many
    /// it still holds (0: every claim lapsed and may have been taken over).
    fn renew_event_claims(&self, claimer: &str, lease: Duration, now: DateTime<Utc>) -> StoreFuture<'_, u64>;
    /// Gives `claimer`'s unprocessed events back at once (a batch that failed or stopped), so
    /// any worker may take them without waiting for the lease.
    fn release_event_claims(&self, claimer: &str) -> StoreFuture<'_, ()>;
    /// Who holds a live claim on an unprocessed event at `now`, each once: a worker that finds
    /// one of them dead (a killed process of its own host) releases its claims rather than
    /// waiting out the lease.
    fn event_claimers(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<String>>;
    /// When the oldest pending event that no live claim holds was received: the batching
    /// window runs from it.
    fn oldest_claimable_event(&self, now: DateTime<Utc>) -> StoreFuture<'_, Option<DateTime<Utc>>>;
    /// Pending events, counted up to `cap` (the receiver's back-pressure check stays cheap
    /// however deep the inbox is).
    fn pending_depth(&self, cap: u32) -> StoreFuture<'_, u64>;
}

// ---------------------------------------------------------------------------------------------
// Runs and outcomes

/// Identifies one run; a UUIDv7 so ids sort by start time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub Uuid);

impl RunId {
    pub fn new() -> Self {
        RunId(Uuid::now_v7())
    }
}

impl Default for RunId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for RunId {
    type Err = uuid::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(s).map(RunId)
    }
}

/// Declares a fieldless enum stored as snake_case text, with exhaustive text conversions, so
/// an unknown value in a row surfaces as [`StoreError::Corrupt`] rather than a panic.
macro_rules! text_enum {
    ($(#[$meta:meta])* $name:ident, $what:literal { $($variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            pub fn parse(text: &str) -> Result<Self, StoreError> {
                match text {
                    $($text => Ok($name::$variant),)+
                    other => Err(StoreError::Corrupt {
                        what: $what,
                        detail: format!("unknown value {other:?}"),
                    }),
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

text_enum!(
    /// What happened to one record in a run.
    Action, "outcome action" {
        Created => "created",
        Updated => "updated",
        Unchanged => "unchanged",
        Skipped => "skipped",
        Deferred => "deferred",
        Failed => "failed",
        // Written, then found changed (or deleted) by someone else when read back.
        Drifted => "drifted",
    }
);

text_enum!(
    /// Where a run is in its life; every run starts `Running`. `Abandoned`: its worker stopped
    /// renewing the run's lease (the process died or lost the store) and the lease expired;
    /// what it had not recorded is sent again by the next run.
    RunState, "run state" {
        Running => "running",
        Succeeded => "succeeded",
        Partial => "partial",
        Failed => "failed",
        Deferred => "deferred",
        Cancelled => "cancelled",
        Abandoned => "abandoned",
    }
);

text_enum!(
    /// How a Pendo account matched Salesforce records.
    MatchStatus, "id map status" {
        Matched => "matched",
        Ambiguous => "ambiguous",
        Unmatched => "unmatched",
    }
);

text_enum!(
    /// Where a recorded failure is in its replay life.
    FailureStatus, "failure status" {
        Open => "open",
        Replaying => "replaying",
        Resolved => "resolved",
        Abandoned => "abandoned",
        Dismissed => "dismissed",
    }
);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRun {
    pub workflow: String,
    pub template: String,
    pub dry_run: bool,
    pub started_at: DateTime<Utc>,
    /// "cli", "schedule", "replay" or "demo".
    pub trigger: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    pub before: Option<serde_json::Value>,
    pub after: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordOutcome {
    /// The Salesforce object, e.g. "Account".
    pub object: String,
    /// The source key, e.g. the Pendo account id.
    pub key: String,
    pub salesforce_id: Option<String>,
    pub action: Action,
    pub changes: Vec<FieldChange>,
    pub error_code: Option<String>,
    pub message: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunFinish {
    pub state: RunState,
    pub finished_at: DateTime<Utc>,
    /// Counts, API calls by kind, timings.
    pub stats: serde_json::Value,
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: RunId,
    pub workflow: String,
    pub template: String,
    pub dry_run: bool,
    pub trigger: String,
    pub state: RunState,
    pub started_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
    pub stats: serde_json::Value,
    pub error: Option<String>,
    /// The process holding (or last holding) the run's lease, `host:pid`; None for runs
    /// started without a lease (dry runs, replays, the nps consumer, older versions).
    pub holder: Option<String>,
    /// When the holder last renewed the lease.
    pub heartbeat_at: Option<DateTime<Utc>>,
    /// The lease lapses then unless renewed; a `Running` run past it is abandoned.
    pub lease_until: Option<DateTime<Utc>>,
}

/// What [`RunStore::claim_run`] did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum RunClaim {
    /// The run is recorded `Running` under a lease held by the caller.
    Started { id: RunId, abandoned: Vec<Run> },
    /// Another run of the workflow holds a live lease; nothing was recorded for this one.
    Busy { holder: Box<Run>, abandoned: Vec<Run> },
}

/// The text an abandoned run keeps as its error: when its lease lapsed and what that means.
pub(crate) fn abandoned_error(holder: Option<&str>, lease_until: DateTime<Utc>) -> String {
    let consequence = "the run did not finish; nothing it had not recorded counts as written, so the next run \
                       sends it again";
    match holder {
        Some(holder) => format!(
            "abandoned: its worker {holder} stopped renewing the run's lease, which expired at {} (the process \
             died or lost the state store); {consequence}",
            lease_until.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => {
            format!("abandoned: the run was started before the store kept run leases and never finished; {consequence}")
        }
    }
}

/// What a finish appends to an abandoned run's error, so history keeps both facts: it was
/// given up for dead, and then it did finish.
pub(crate) fn finished_after_abandoned(finish: &RunFinish) -> String {
    match &finish.error {
        Some(e) => format!(
            " | its worker was still alive and finished it at {} as {}: {e}",
            finish.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
            finish.state
        ),
        None => format!(
            " | its worker was still alive and finished it at {} as {}",
            finish.finished_at.format("%Y-%m-%d %H:%M:%S UTC"),
            finish.state
        ),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct OutcomeFilter {
    /// Case-insensitive substring of the key or the Salesforce id.
    pub search: Option<String>,
    pub action: Option<Action>,
    /// Maximum rows; 0 means no limit.
    pub limit: u32,
    pub offset: u32,
}

pub trait RunStore {
    /// Records a new run in state `Running` and returns its id.
    fn start_run(&self, run: &NewRun) -> StoreFuture<'_, RunId>;
    /// In one transaction, appends `outcomes` to the run and upserts `fingerprints`, so a write
    /// is only considered done once the store has both. The future borrows the rows rather than
    /// copy them: a chunk of a big run is tens of megabytes.
    fn record_outcomes<'a>(
        &'a self,
        run: RunId,
        outcomes: &'a [RecordOutcome],
        fingerprints: &'a [FingerprintPut],
    ) -> StoreFuture<'a, ()>;
    /// Closes a run. A run already marked `Abandoned` (its lease lapsed while its worker was
    /// in fact alive) takes the finish's state and figures, and its error keeps the abandonment
    /// text followed by how it finished: history never drops either fact.
    fn finish_run(&self, run: RunId, finish: &RunFinish) -> StoreFuture<'_, ()>;
    /// In one transaction: marks every `Running` run whose lease expired before `now`
    /// `Abandoned` (any workflow), then records `run` as `Running` under a lease held by
    /// `holder` until `now + lease` — unless another run of the workflow holds a live lease, in
    /// which case nothing is recorded and that run is returned. Atomic across processes: of
    /// concurrent claims for one workflow, exactly one starts. A started run's `started_at` is
    /// read from `started` once the insert has the lease, not taken from `run`: a claim may wait
    /// for the previous run's finish to commit, and a time read before that wait could precede
    /// the previous run's end, so history would show two live runs at once.
    fn claim_run<'a>(
        &'a self,
        run: &NewRun,
        holder: &str,
        lease: Duration,
        now: DateTime<Utc>,
        started: &'a (dyn Fn() -> DateTime<Utc> + Send + Sync),
    ) -> StoreFuture<'a, RunClaim>;
    /// Extends the lease of a `Running` run held by `holder` to `now + lease`; false (changing
    /// nothing) when the run is no longer running under that holder (abandoned or finished).
    fn renew_run_lease(&self, run: RunId, holder: &str, lease: Duration, now: DateTime<Utc>) -> StoreFuture<'_, bool>;
    /// Marks every `Running` run whose lease expired before `now` `Abandoned`; returns them.
    fn sweep_expired_runs(&self, now: DateTime<Utc>) -> StoreFuture<'_, Vec<Run>>;
    /// Newest first; `limit` 0 means no limit.
    fn list_runs(&self, workflow: Option<&str>, limit: u32) -> StoreFuture<'_, Vec<Run>>;
    fn get_run(&self, id: RunId) -> StoreFuture<'_, Option<Run>>;
    /// Outcomes in the order they were recorded.
    fn run_outcomes(&self, run: RunId, filter: &OutcomeFilter) -> StoreFuture<'_, Vec<RecordOutcome>>;
    /// Only actions that occur are present.
    fn outcome_counts(&self, run: RunId) -> StoreFuture<'_, BTreeMap<Action, u64>>;
}

// ---------------------------------------------------------------------------------------------
// Cursors

pub trait CursorStore {
    fn cursor(&self, workflow: &str, name: &str) -> StoreFuture<'_, Option<String>>;
    /// Compare-and-set: stores `new` only if the current value is `expected` (`None` = no
    /// cursor yet). Returns false, changing nothing, for a stale writer. Both values are taken,
    /// not copied: a kept state is megabytes, and the database driver needs them owned.
    fn advance_cursor<'a>(
        &'a self,
        workflow: &'a str,
        name: &'a str,
        expected: Option<String>,
        new: String,
    ) -> StoreFuture<'a, bool>;

    /// A state a run keeps for the next one, too large to compare by value as a cursor is (the
    /// engagement read: megabytes at 100,000 accounts): its version and bytes. The same rules
    /// as cursors: per workflow and name, never pruned.
    fn kept_state(&self, workflow: &str, name: &str) -> StoreFuture<'_, Option<(i64, Vec<u8>)>>;
    /// Compare-and-set on the version only: stores `bytes` if the state is still at `expected`
    /// (`None` = no state yet), so the writer need not hold the state it read nor the database
    /// compare megabytes. Returns false, changing nothing, for a stale writer. The bytes are
    /// taken: the database driver needs them owned, and they are the writer's largest buffer.
    fn keep_state<'a>(
        &'a self,
        workflow: &'a str,
        name: &'a str,
        expected: Option<i64>,
        bytes: Vec<u8>,
    ) -> StoreFuture<'a, bool>;
}

// ---------------------------------------------------------------------------------------------
// Id map

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdMapEntry {
    pub workflow: String,
    pub pendo_id: String,
    pub status: MatchStatus,
    pub salesforce_id: Option<String>,
    /// The match rule that decided, or "pinned".
    pub rule: Option<String>,
    pub candidates: Vec<String>,
    /// Set by a person; automatic matching never overwrites a pinned entry.
    pub pinned: bool,
    pub checked_at: DateTime<Utc>,
}

pub trait IdMapStore {
    fn id_map(&self, workflow: &str) -> StoreFuture<'_, Vec<IdMapEntry>>;
    /// Upserts, in one transaction; an existing pinned entry is only replaced by an incoming
    /// pinned entry, and of two entries for one account the later wins. The entries are taken
    /// as they are made, a few thousand at a time: a first run at a million accounts writes a
    /// million, and all of them at once (with the columns built from them) were most of its
    /// matching stage's peak.
    fn put_id_map<'a>(&'a self, entries: &'a mut (dyn Iterator<Item = IdMapEntry> + Send)) -> StoreFuture<'a, ()>;
    fn pin_match(&self, workflow: &str, pendo_id: &str, salesforce_id: &str) -> StoreFuture<'_, ()>;
    fn unpin_match(&self, workflow: &str, pendo_id: &str) -> StoreFuture<'_, ()>;
    /// Ambiguous and Unmatched entries, for a person to review.
    fn id_map_review(&self, workflow: Option<&str>) -> StoreFuture<'_, Vec<IdMapEntry>>;
}

// ---------------------------------------------------------------------------------------------
// Fingerprints

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FingerprintPut {
    /// e.g. "engagement:Account".
    pub scope: String,
    /// The Salesforce id.
    pub key: String,
    pub field: String,
    pub fingerprint: u64,
    pub written_at: DateTime<Utc>,
    /// The value written, kept so the next change can show what it replaced.
    pub value: Option<serde_json::Value>,
}

pub trait FingerprintStore {
    /// Every fingerprint of a scope.
    fn fingerprints(&self, scope: &str) -> StoreFuture<'_, Fingerprints>;
    fn put_fingerprints(&self, puts: &[FingerprintPut]) -> StoreFuture<'_, ()>;
    fn forget_fingerprints(&self, scope: &str, key: &str) -> StoreFuture<'_, ()>;
    /// The values last written for `keys`, by key: (field, value) pairs.
    fn written_values(
        &self,
        scope: &str,
        keys: &[String],
    ) -> StoreFuture<'_, HashMap<String, Vec<(String, serde_json::Value)>>>;
}

/// The fingerprints of one scope by (key, field), held compactly: a scope has few distinct
/// fields and many keys, so each key keeps (field number, fingerprint) pairs. 100,000 records ×
/// 9 fields take about 30 MB this way, against about 110 MB as a map keyed by two strings.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Fingerprints {
    fields: Vec<String>,
    records: HashMap<Box<str>, Vec<(u32, u64)>>,
    len: usize,
}

impl Fingerprints {
    pub fn insert(&mut self, key: &str, field: &str, fingerprint: u64) {
        let f = match self.fields.iter().position(|x| x == field) {
            Some(i) => i,
            None => {
                self.fields.push(field.to_owned());
                self.fields.len() - 1
            }
        };
        let f = u32::try_from(f).unwrap_or(u32::MAX);
        let pairs = match self.records.get_mut(key) {
            Some(pairs) => pairs,
            None => self.records.entry(key.into()).or_default(),
        };
        match pairs.iter_mut().find(|(x, _)| *x == f) {
            Some(pair) => pair.1 = fingerprint,
            None => {
                pairs.push((f, fingerprint));
                self.len += 1;
            }
        }
    }

    pub fn get(&self, key: &str, field: &str) -> Option<u64> {
        let f = u32::try_from(self.fields.iter().position(|x| x == field)?).ok()?;
        self.records.get(key)?.iter().find(|(x, _)| *x == f).map(|(_, fp)| *fp)
    }

    /// (key, field) pairs held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Keys (records) held.
    pub fn keys(&self) -> usize {
        self.records.len()
    }
}

/// Fingerprints are u64 hashes kept in a signed 64-bit column: a bit-for-bit reinterpretation.
pub(crate) fn fp_to_db(fp: u64) -> i64 {
    i64::from_ne_bytes(fp.to_ne_bytes())
}

pub(crate) fn fp_from_db(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

// ---------------------------------------------------------------------------------------------
// Failures

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFailure {
    pub workflow: String,
    pub run: RunId,
    pub object: String,
    pub key: String,
    pub salesforce_id: Option<String>,
    /// What was to be sent, so the write can be replayed.
    pub payload: serde_json::Value,
    pub error_code: String,
    pub message: String,
    pub fields: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub id: i64,
    pub workflow: String,
    pub run: RunId,
    pub object: String,
    pub key: String,
    pub salesforce_id: Option<String>,
    pub payload: serde_json::Value,
    pub error_code: String,
    pub message: String,
    pub fields: Vec<String>,
    pub status: FailureStatus,
    pub attempts: u32,
    pub first_failed_at: DateTime<Utc>,
    pub last_failed_at: DateTime<Utc>,
    pub leased_until: Option<DateTime<Utc>>,
    /// Why a person dismissed it (status Dismissed).
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct FailureFilter {
    pub workflow: Option<String>,
    pub status: Option<FailureStatus>,
    pub error_code: Option<String>,
    /// Maximum rows; 0 means no limit.
    pub limit: u32,
}

/// Which failures a replay claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FailureSelector {
    All { workflow: Option<String> },
    Ids(Vec<i64>),
    Code(String),
}

pub trait FailureStore {
    /// A new failure for a (workflow, object, key) that already has an Open failure replaces its
    /// payload and error and bumps its attempts instead of adding a row. One that a person
    /// dismissed with the same error code stays dismissed (its attempts and time move on): the
    /// dismissal covers the same refusal recurring; a different code opens a new failure.
    fn add_failures(&self, failures: &[NewFailure]) -> StoreFuture<'_, ()>;
    /// Oldest first.
    fn list_failures(&self, filter: &FailureFilter) -> StoreFuture<'_, Vec<Failure>>;
    /// Open failures grouped by error code: (code, a sample message, count), largest first.
    fn failure_groups(&self, workflow: Option<&str>) -> StoreFuture<'_, Vec<(String, String, u64)>>;
    /// Atomically moves up to `limit` (a plain count: 0 claims nothing) Open (or Replaying with an expired lease) failures to
    /// Replaying, leased to `worker` until `now + lease`. Concurrent claimers never share a row.
    fn claim_failures(
        &self,
        selector: &FailureSelector,
        worker: &str,
        lease: Duration,
        now: DateTime<Utc>,
        limit: u32,
    ) -> StoreFuture<'_, Vec<Failure>>;
    fn resolve_failure(&self, id: i64, now: DateTime<Utc>) -> StoreFuture<'_, ()>;
    /// A run's writes in one transaction: resolves the live (open or replaying) failures of
    /// `workflow` whose (object, key) is in `written`, then adds `failures` as
    /// [`FailureStore::add_failures`] does.
    fn settle_failures(
        &self,
        workflow: &str,
        written: &[(String, String)],
        failures: &[NewFailure],
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, ()>;
    /// Back to Open with attempts + 1 and the new error.
    fn fail_again(&self, id: i64, error_code: &str, message: &str, now: DateTime<Utc>) -> StoreFuture<'_, ()>;
    /// Closes the selected Open failures as Dismissed with a person's `reason`; returns their
    /// ids. Failures being replayed under a live lease are left alone.
    fn dismiss_failures(
        &self,
        selector: &FailureSelector,
        reason: &str,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, Vec<i64>>;
}

pub(crate) fn lease_until(now: DateTime<Utc>, lease: Duration) -> Result<DateTime<Utc>, StoreError> {
    chrono::Duration::from_std(lease)
        .ok()
        .and_then(|d| now.checked_add_signed(d))
        .ok_or_else(|| StoreError::Invalid { what: "lease", detail: format!("{lease:?} after {now} is out of range") })
}

// ---------------------------------------------------------------------------------------------
// Budget

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetDay {
    pub day: NaiveDate,
    /// Calls reserved by running work and not yet settled, all workflows.
    pub reserved: u64,
    /// Calls made, all workflows.
    pub spent: u64,
    /// Calls made, per workflow.
    pub by_workflow: BTreeMap<String, u64>,
    pub org_used: Option<u64>,
    pub org_max: Option<u64>,
    pub observed_at: Option<DateTime<Utc>>,
}

pub trait BudgetStore {
    /// Reserves `calls` for `workflow` if reserved + spent (all workflows, that UTC day) + calls
    /// stays within `cap`; returns whether it did. Safe across processes.
    fn reserve_budget(
        &self,
        day: NaiveDate,
        workflow: &str,
        calls: u64,
        cap: u64,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, bool>;
    /// Releases `reserved` and records `spent` calls (as a timestamped ledger entry).
    fn settle_budget(
        &self,
        day: NaiveDate,
        workflow: &str,
        reserved: u64,
        spent: u64,
        now: DateTime<Utc>,
    ) -> StoreFuture<'_, ()>;
    /// Releases every call `workflow` holds reserved on `day` and returns how many. Called when
    /// a run of the workflow has claimed it: no other run of it is live then, so what is still
    /// reserved was left by runs that died before settling, and would otherwise shrink the
    /// day's share until midnight UTC.
    fn release_reservations(&self, day: NaiveDate, workflow: &str) -> StoreFuture<'_, u64>;
    /// The org's DailyApiRequests as last read from /limits; the latest observation wins.
    fn observe_org_usage(&self, day: NaiveDate, used: u64, max: u64, now: DateTime<Utc>) -> StoreFuture<'_, ()>;
    fn budget_day(&self, day: NaiveDate) -> StoreFuture<'_, BudgetDay>;
    /// (UTC hour of the ledger entry, calls), hours without calls omitted, ascending.
    fn spent_per_hour(&self, day: NaiveDate) -> StoreFuture<'_, Vec<(u32, u64)>>;
}

pub(crate) fn to_db_count(what: &'static str, v: u64) -> Result<i64, StoreError> {
    i64::try_from(v)
        .map_err(|_| StoreError::Invalid { what, detail: format!("{v} does not fit in a signed 64-bit column") })
}

pub(crate) fn from_db_count(what: &'static str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt { what, detail: format!("negative count {v}") })
}

// ---------------------------------------------------------------------------------------------
// Idempotency

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum CreateState {
    /// No create was known for this key; it is now recorded as Pending by this caller.
    New,
    /// Another attempt started at `since` and has not committed: its outcome is unknown.
    Pending {
        since: DateTime<Utc>,
    },
    Committed {
        salesforce_id: String,
    },
}

pub trait IdempotencyStore {
    fn begin_create(&self, key: &str, workflow: &str, now: DateTime<Utc>) -> StoreFuture<'_, CreateState>;
    fn commit_create(&self, key: &str, salesforce_id: &str, now: DateTime<Utc>) -> StoreFuture<'_, ()>;
    /// Forgets a Pending create (the record was not created); a Committed one stays.
    fn abandon_create(&self, key: &str) -> StoreFuture<'_, ()>;
    /// [`IdempotencyStore::begin_create`] for each of `keys` (distinct), in one transaction;
    /// the states in the order of `keys`.
    fn begin_creates(&self, keys: &[String], workflow: &str, now: DateTime<Utc>) -> StoreFuture<'_, Vec<CreateState>>;
    /// Records each `(key, salesforce_id)` as committed, begun or not, in one transaction: what
    /// a `begin_create` then `commit_create` per key leaves, for keys already settled (an
    /// answer handled, whose key only has to be known from now on).
    fn commit_creates(&self, workflow: &str, done: &[(String, String)], now: DateTime<Utc>) -> StoreFuture<'_, ()>;
}

// ---------------------------------------------------------------------------------------------
// Retention

/// What [`RetentionStore::prune_history`] removed (or, in a dry run, would remove).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pruned {
    /// Finished runs, with their outcomes below.
    pub runs: u64,
    /// Per-record outcomes (history rows, drift rows) of those runs.
    pub outcomes: u64,
    /// Resolved (or abandoned) failures closed before the cutoff.
    pub failures: u64,
    /// Webhook events processed before the cutoff.
    pub inbox_events: u64,
    /// Budget ledger rows of UTC days before the cutoff's day (totals, per-workflow rows, spend
    /// entries, org observations).
    pub budget_rows: u64,
}

impl Pruned {
    pub fn total(&self) -> u64 {
        self.runs + self.outcomes + self.failures + self.inbox_events + self.budget_rows
    }
}

/// How big the store is: bytes its tables take and rows per table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoreSize {
    /// SQLite: the database file's pages (free pages included); PostgreSQL: the tables of the
    /// store's schema with their indexes and TOAST.
    pub bytes: u64,
    /// SQLite: pages on the free list, reused for new rows before the file grows; 0 on
    /// PostgreSQL, whose free space is tracked per table by autovacuum.
    pub free_bytes: u64,
    /// Rows per table; under `outcomes`, the outcomes its pages hold.
    pub rows: BTreeMap<String, u64>,
}

/// Keeps the store bounded: history older than a retention is deleted, state is never.
///
/// Pruned: finished runs and their outcomes, resolved or abandoned failures, processed webhook
/// events, and the budget ledger of past days. Never pruned, because a later run decides with
/// it: fingerprints (change detection), the create ledger (exactly-once creates), cursors and
/// kept states, the id map, open or replaying failures, dismissed failures (a dismissal covers
/// the refusal whenever it recurs), pending webhook events, and running runs. Each workflow's
/// newest run and newest real (not dry-run) success are kept whatever their age, so "last run"
/// and "no success since" still have an answer; so is a run an open or replaying failure
/// points at.
pub trait RetentionStore {
    /// Deletes what is prunable and older than `cutoff`, at most `batch` rows per statement,
    /// each statement its own short transaction: a large first prune never holds the write
    /// lock for long. With `dry_run`, counts instead and deletes nothing.
    fn prune_history(&self, cutoff: DateTime<Utc>, batch: u32, dry_run: bool) -> StoreFuture<'_, Pruned>;
    /// Gives free space back to the filesystem, returning the bytes released. SQLite: an
    /// incremental vacuum in steps when the file is in incremental auto-vacuum mode (new files
    /// are), or with `full` a `VACUUM` that rewrites the file (holding the write lock
    /// throughout) and switches an older file to incremental mode. PostgreSQL: nothing, 0;
    /// autovacuum makes deleted rows' space reusable, and shrinking tables would need
    /// `VACUUM FULL`'s exclusive lock.
    fn reclaim_space(&self, full: bool) -> StoreFuture<'_, u64>;
    fn store_size(&self) -> StoreFuture<'_, StoreSize>;
}

/// Rows per prune statement: a few milliseconds of write lock each.
pub const PRUNE_BATCH: u32 = 5_000;

// ---------------------------------------------------------------------------------------------
// Shared row helpers

pub(crate) fn json_text<T: Serialize>(what: &'static str, v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid { what, detail: e.to_string() })
}

pub(crate) fn from_json_text<T: serde::de::DeserializeOwned>(what: &'static str, text: &str) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| StoreError::Corrupt { what, detail: e.to_string() })
}

/// Lowercases for case-insensitive search in Rust, because SQLite's lower() folds ASCII only.
pub(crate) fn fold(s: &str) -> String {
    s.to_lowercase()
}

/// Keeps the last of several items with the same key: one multi-row upsert may not touch the
/// same row twice on PostgreSQL, and the last write is the one the caller meant.
pub(crate) fn last_per_key<'a, T, K: std::hash::Hash + Eq>(items: &'a [T], key: impl Fn(&'a T) -> K) -> Vec<&'a T> {
    let mut seen = std::collections::HashSet::with_capacity(items.len());
    let mut out: Vec<&T> = items.iter().rev().filter(|i| seen.insert(key(i))).collect();
    out.reverse();
    out
}

/// Outcomes per page (see [`encode_pages`]): large enough to compress well (a page of a
/// thousand compresses about as well as a whole run), small enough that reading the first
/// page of a run decodes a few tens of kilobytes.
pub(crate) const OUTCOMES_PER_PAGE: usize = 1_000;

/// How a page's body is stored: plain JSON (pages made from older versions' rows by the
/// migration, which SQL cannot deflate) or deflated JSON.
pub(crate) const CODEC_JSON: i64 = 0;
pub(crate) const CODEC_DEFLATE: i64 = 1;

/// A page of one run's outcomes, prepared before any database work.
pub(crate) struct OutcomePage {
    pub rows: i64,
    /// Outcomes per action, as a JSON object (`{"updated": 950, "skipped": 50}`).
    pub actions: String,
    pub body: Vec<u8>,
}

/// The field names of `outcomes`, for interning before [`encode_pages`].
pub(crate) fn outcome_fields(outcomes: &[RecordOutcome]) -> Vec<String> {
    let names: std::collections::BTreeSet<&str> =
        outcomes.iter().flat_map(|o| o.changes.iter().map(|c| c.field.as_str())).collect();
    names.into_iter().map(str::to_owned).collect()
}

/// Outcomes as stored: pages of up to [`OUTCOMES_PER_PAGE`], each a deflated JSON array of
/// `[object, key, salesforce_id, action, changes, error_code, message]` with changes in the
/// compact encoding (see [`encode_changes`]). A row per outcome cost about 230 bytes with its
/// index; a deflated page about 30 per outcome, since keys, field ids and the run's stamp
/// repeat from one record to the next.
pub(crate) fn encode_pages(
    outcomes: &[RecordOutcome],
    fields: &HashMap<String, i64>,
) -> Result<Vec<OutcomePage>, StoreError> {
    use std::io::Write as _;
    const WHAT: &str = "outcome page";
    outcomes
        .chunks(OUTCOMES_PER_PAGE)
        .map(|chunk| {
            let mut actions: BTreeMap<&str, u64> = BTreeMap::new();
            let entries = chunk
                .iter()
                .map(|o| {
                    *actions.entry(o.action.as_str()).or_default() += 1;
                    Ok(serde_json::json!([
                        o.object,
                        o.key,
                        o.salesforce_id,
                        o.action.as_str(),
                        encode_changes(&o.changes, fields)?,
                        o.error_code,
                        o.message
                    ]))
                })
                .collect::<Result<Vec<_>, StoreError>>()?;
            let json = json_text(WHAT, &entries)?;
            let mut deflate = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
            let invalid = |e: std::io::Error| StoreError::Invalid { what: WHAT, detail: e.to_string() };
            deflate.write_all(json.as_bytes()).map_err(invalid)?;
            Ok(OutcomePage {
                rows: i64::try_from(chunk.len()).unwrap_or(i64::MAX),
                actions: json_text(WHAT, &actions)?,
                body: deflate.finish().map_err(invalid)?,
            })
        })
        .collect()
}

/// The outcomes of a page, in recording order (see [`encode_pages`]).
pub(crate) fn decode_page(
    codec: i64,
    body: &[u8],
    fields: &HashMap<i64, String>,
) -> Result<Vec<RecordOutcome>, StoreError> {
    use std::io::Read as _;
    const WHAT: &str = "outcome page";
    let corrupt = |detail: String| StoreError::Corrupt { what: WHAT, detail };
    let inflated;
    let json: &[u8] = match codec {
        CODEC_JSON => body,
        CODEC_DEFLATE => {
            let mut out = Vec::with_capacity(body.len() * 6);
            flate2::read::DeflateDecoder::new(body).read_to_end(&mut out).map_err(|e| corrupt(e.to_string()))?;
            inflated = out;
            &inflated
        }
        other => return Err(corrupt(format!("unknown codec {other}"))),
    };
    type Entry = (String, String, Option<String>, String, Vec<serde_json::Value>, Option<String>, Option<String>);
    let entries: Vec<Entry> = serde_json::from_slice(json).map_err(|e| corrupt(e.to_string()))?;
    entries
        .into_iter()
        .map(|(object, key, salesforce_id, action, changes, error_code, message)| {
            Ok(RecordOutcome {
                object,
                key,
                salesforce_id,
                action: Action::parse(&action)?,
                changes: decode_change_list(changes, fields)?,
                error_code,
                message,
            })
        })
        .collect()
}

/// Field changes as stored: `[[field id, after], [field id, before, after], ...]`. Spelling out
/// `field`, `before` and `after` with each field's full name made a nine-field change about
/// four times longer.
pub(crate) fn encode_changes(
    changes: &[FieldChange],
    fields: &HashMap<String, i64>,
) -> Result<serde_json::Value, StoreError> {
    let encoded = changes
        .iter()
        .map(|c| {
            let id = fields.get(&c.field).copied().ok_or_else(|| StoreError::Invalid {
                what: "outcome changes",
                detail: format!("field {:?} has no interned id", c.field),
            })?;
            let mut entry = vec![serde_json::Value::from(id)];
            entry.extend(c.before.clone());
            entry.push(c.after.clone());
            Ok(serde_json::Value::Array(entry))
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(serde_json::Value::Array(encoded))
}

/// Reads changes in either encoding: the compact one (see [`encode_changes`]) or the list of
/// `{field, before, after}` objects that rows recorded before it still hold.
pub(crate) fn decode_change_list(
    entries: Vec<serde_json::Value>,
    fields: &HashMap<i64, String>,
) -> Result<Vec<FieldChange>, StoreError> {
    const WHAT: &str = "outcome changes";
    let corrupt = |detail: String| StoreError::Corrupt { what: WHAT, detail };
    entries
        .into_iter()
        .map(|entry| match entry {
            serde_json::Value::Array(parts) => {
                let mut parts = parts.into_iter();
                let (Some(id), Some(first), second, None) = (parts.next(), parts.next(), parts.next(), parts.next())
                else {
                    return Err(corrupt("a change holds a field id, an optional before and an after".into()));
                };
                let field = id
                    .as_i64()
                    .and_then(|id| fields.get(&id))
                    .ok_or_else(|| corrupt(format!("unknown field id {id}")))?
                    .clone();
                Ok(match second {
                    // As with the object form, a null before reads as not known.
                    Some(after) => FieldChange { field, before: Some(first).filter(|b| !b.is_null()), after },
                    None => FieldChange { field, before: None, after: first },
                })
            }
            legacy => serde_json::from_value(legacy).map_err(|e| corrupt(e.to_string())),
        })
        .collect()
}

/// Whether an outcome matches a filter's search (already folded, see [`search_term`]): a
/// case-insensitive substring of its key or Salesforce id.
pub(crate) fn outcome_matches(outcome: &RecordOutcome, search: Option<&str>, action: Option<Action>) -> bool {
    action.is_none_or(|a| outcome.action == a)
        && search.is_none_or(|term| {
            fold(&outcome.key).contains(term)
                || outcome.salesforce_id.as_deref().is_some_and(|id| fold(id).contains(term))
        })
}

/// The search term as stored-side text compares it: folded, or None for no search.
pub(crate) fn search_term(filter: &OutcomeFilter) -> Option<String> {
    filter.search.as_deref().filter(|s| !s.is_empty()).map(fold)
}

// ---------------------------------------------------------------------------------------------

/// Timing helpers for `usagesync bench`.
pub mod bench {
    use std::time::{Duration, Instant};

    use super::{Action, FieldChange, FingerprintPut, NewRun, RecordOutcome, Store, StoreError};

    /// Fields per record, as in the engagement workflow.
    const FIELDS: usize = 9;

    /// Puts `n` fingerprints (n/9 records × 9 fields) into a fresh scope, then loads the scope.
    /// Returns (put, load) wall time.
    pub async fn fingerprints(store: &dyn Store, n: usize) -> Result<(Duration, Duration), StoreError> {
        let scope = format!("bench:{}", uuid::Uuid::now_v7().simple());
        let now = crate::clock::written_at();
        let puts: Vec<FingerprintPut> = (0..n)
            .map(|i| FingerprintPut {
                value: None,
                scope: scope.clone(),
                key: format!("001{:015}", i / FIELDS),
                field: format!("Usage_Field_{}__c", i % FIELDS),
                fingerprint: (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
                written_at: now,
            })
            .collect();
        let started = Instant::now();
        store.put_fingerprints(&puts).await?;
        let put = started.elapsed();
        let started = Instant::now();
        let loaded = store.fingerprints(&scope).await?;
        let load = started.elapsed();
        if loaded.len() != n {
            return Err(StoreError::Corrupt {
                what: "bench fingerprints",
                detail: format!("put {n}, loaded {}", loaded.len()),
            });
        }
        Ok((put, load))
    }

    /// Records `n` outcomes (each with two field changes) in one run, then reads them back.
    /// Returns (record, read) wall time.
    pub async fn outcomes(store: &dyn Store, n: usize) -> Result<(Duration, Duration), StoreError> {
        let run = store
            .start_run(&NewRun {
                workflow: "bench".into(),
                template: "bench".into(),
                dry_run: false,
                started_at: crate::clock::written_at(),
                trigger: "cli".into(),
            })
            .await?;
        let outcomes: Vec<RecordOutcome> = (0..n)
            .map(|i| RecordOutcome {
                object: "Account".into(),
                key: format!("pendo-account-{i}"),
                salesforce_id: Some(format!("001{i:015}")),
                action: Action::Updated,
                changes: vec![
                    FieldChange {
                        field: "Usage_Events_30d__c".into(),
                        before: Some(serde_json::json!(i)),
                        after: serde_json::json!(i + 1),
                    },
                    FieldChange {
                        field: "Usage_Last_Seen__c".into(),
                        before: None,
                        after: serde_json::json!("2026-11-27"),
                    },
                ],
                error_code: None,
                message: None,
            })
            .collect();
        let started = Instant::now();
        store.record_outcomes(run, &outcomes, &[]).await?;
        let record = started.elapsed();
        let started = Instant::now();
        let limit = u32::try_from(n).unwrap_or(u32::MAX);
        let read = store.run_outcomes(run, &super::OutcomeFilter { limit, ..Default::default() }).await?;
        let read_time = started.elapsed();
        if read.len() != n {
            return Err(StoreError::Corrupt {
                what: "bench outcomes",
                detail: format!("recorded {n}, read {}", read.len()),
            });
        }
        Ok((record, read_time))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::{
        Action, CODEC_DEFLATE, CODEC_JSON, FieldChange, RecordOutcome, StoreError, decode_change_list, decode_page,
        encode_changes, encode_pages, redact_location,
    };

    #[test]
    fn changes_decode_from_both_encodings() {
        use serde_json::json;
        let fields = HashMap::from([("Score__c".to_owned(), 7_i64), ("Events__c".to_owned(), 9)]);
        let changes = vec![
            FieldChange { field: "Score__c".into(), before: Some(json!(1.5)), after: json!("x") },
            FieldChange { field: "Events__c".into(), before: None, after: json!([1]) },
        ];
        let encoded = encode_changes(&changes, &fields).unwrap();
        assert_eq!(encoded.to_string(), r#"[[7,1.5,"x"],[9,[1]]]"#);
        let ids: HashMap<i64, String> = fields.iter().map(|(n, i)| (*i, n.clone())).collect();
        let list = |v: serde_json::Value| serde_json::from_value::<Vec<serde_json::Value>>(v).unwrap();
        assert_eq!(decode_change_list(list(encoded), &ids).unwrap(), changes);
        // Rows recorded before the compact encoding spell each change out.
        let legacy = serde_json::to_value(&changes).unwrap();
        assert_eq!(decode_change_list(list(legacy), &HashMap::new()).unwrap(), changes);
        assert!(matches!(decode_change_list(list(json!([[3, 1]])), &ids), Err(StoreError::Corrupt { .. })));
        assert!(matches!(decode_change_list(list(json!([[7, 1, 2, 3]])), &ids), Err(StoreError::Corrupt { .. })));
        assert!(matches!(encode_changes(&changes, &HashMap::new()), Err(StoreError::Invalid { .. })));
    }

    #[test]
    fn pages_hold_outcomes_in_order_compressed() {
        use serde_json::json;
        let fields = HashMap::from([("Events__c".to_owned(), 1_i64)]);
        let outcomes: Vec<RecordOutcome> = (0..2_500)
            .map(|i| RecordOutcome {
                object: "Account".into(),
                key: format!("acme-{i}"),
                salesforce_id: Some(format!("001{i:015}")),
                action: if i % 10 == 0 { Action::Skipped } else { Action::Updated },
                changes: vec![FieldChange { field: "Events__c".into(), before: Some(json!(i)), after: json!(i + 1) }],
                error_code: None,
                message: (i % 10 == 0).then(|| "ambiguous".to_owned()),
            })
            .collect();
        let pages = encode_pages(&outcomes, &fields).unwrap();
        assert_eq!(pages.iter().map(|p| p.rows).collect::<Vec<_>>(), vec![1_000, 1_000, 500]);
        assert_eq!(pages[2].actions, r#"{"skipped":50,"updated":450}"#);
        let ids: HashMap<i64, String> = HashMap::from([(1, "Events__c".to_owned())]);
        let read: Vec<RecordOutcome> =
            pages.iter().flat_map(|p| decode_page(CODEC_DEFLATE, &p.body, &ids).unwrap()).collect();
        assert_eq!(read, outcomes);
        let stored: usize = pages.iter().map(|p| p.body.len()).sum();
        assert!(stored < outcomes.len() * 40, "{stored} bytes for {} outcomes", outcomes.len());
        // Pages the migration made from older rows are plain JSON.
        let plain = br#"[["Account","a",null,"failed",[{"field":"Events__c","before":null,"after":2}],"E","no"]]"#;
        let read = decode_page(CODEC_JSON, plain, &HashMap::new()).unwrap();
        assert_eq!(read[0].changes, vec![FieldChange { field: "Events__c".into(), before: None, after: json!(2) }]);
        assert!(matches!(decode_page(CODEC_DEFLATE, b"not deflate", &ids), Err(StoreError::Corrupt { .. })));
        assert!(matches!(decode_page(7, plain, &ids), Err(StoreError::Corrupt { .. })));
    }

    #[test]
    fn redacts_passwords_in_urls() {
        assert_eq!(
            redact_location("postgres://app:s3cr@t@db.local:5432/x?sslmode=disable"),
            "postgres://app:***@db.local:5432/x?sslmode=disable"
        );
        assert_eq!(
            redact_location("postgres://app@127.0.0.1/x?password=hunter2&application_name=u"),
            "postgres://app@127.0.0.1/x?password=***&application_name=u"
        );
        assert_eq!(redact_location("/var/lib/usagesync/state.db"), "/var/lib/usagesync/state.db");
    }
}
