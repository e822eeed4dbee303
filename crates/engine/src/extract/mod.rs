//! Pendo extraction: per-account engagement over a window ([`engagement`]) and the facts matching
//! needs ([`account_facts`]), each as a handful of keyset-paged aggregations whose pages are
//! folded into small per-account records as they arrive.
//!
//! # Layout
//! - this module: the public types, the error, and the paging loop every query goes through.
//! - `engagement`: the engagement queries and their folding.
//! - `facts`: account metadata and visitor e-mail domains.
//! - `visitors`: visitors first seen since a point in time (new-users-to-contacts).
//! - `kept`: engagement kept between runs, brought up to date from the days since the last run.
//!
//! # Choices the engine relies on
//! - The window is whole days or hours in the subscription's timezone: the `n` periods before the
//!   one that contains `end` (Pendo's `dayRange`/`hourRange` with `first = end, count = -n`), or,
//!   when the user asks for the current period, the `n` periods ending with it (`first` at the
//!   start of the oldest, `count = n`). Windows of days are kept between runs (`kept`): a run
//!   reads the days since the last one and the two before them, so events Pendo processes late
//!   (hours late is normal) correct those days at the next run; hourly windows are read whole.
//! - Every account Pendo knows (the `accounts` source) gets an [`AccountUsage`], with zeros when
//!   nothing happened in the window, so the engine can write 0 over a stale value.
//! - Counts never depend on whether Pendo's `count` aggregator counts distinct or non-null values:
//!   each one counts a field that is already unique within its group, or sums ones.

mod catalog;
mod engagement;
pub mod expansion;
mod facts;
mod kept;
mod people;
mod visitors;

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use chrono::{DateTime, Utc};
use pendo::{Expr, Lit, Pipeline, SortKey};
use serde_json::Value;

pub use kept::UsageState;
pub use people::{PersonFigures, VisitorUsage};
pub use visitors::NewVisitor;

/// Rows per aggregation page. Every page costs Pendo a scan of the whole window (keyset filters
/// cannot skip work), so fewer, larger pages are cheaper in calls and time. Rows are folded as
/// they are parsed, so a page costs its body's bytes, not a tree of its rows. At 100,000 accounts
/// (30 days, debug build, `extract::bench_extraction`) pages of 1,000,000 rows fit every query in
/// one page: engagement 9 → 7 calls, facts 8 → 2, peak RSS 160 → 205 MB; the same pages parsed
/// whole peaked at 805 MB. The body is still held while it is parsed: the widest rows (visitor
/// e-mails) are about 170 bytes, so a full page of them is about 170 MB, under the client's 1 GiB
/// response cap; larger subscriptions page, and that is their peak's page share.
pub const DEFAULT_PAGE_ROWS: u64 = 1_000_000;
/// Breaks of a page's body in a row, none bringing a new row, before the extraction gives up.
/// A break is read on from its last row, so a flaky network costs the rest of a page, not the
/// page, and a break that brought rows never counts against the limit.
const MAX_STALLED_BREAKS: u32 = 3;

/// How long a reporting window is: whole days or whole hours of the subscription's timezone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WindowLength {
    Days(u32),
    Hours(u32),
}

impl WindowLength {
    /// The length as a duration (a day is 24 hours here; Pendo rounds to its own day starts).
    pub fn duration(self) -> chrono::Duration {
        match self {
            WindowLength::Days(n) => chrono::Duration::days(i64::from(n)),
            WindowLength::Hours(n) => chrono::Duration::hours(i64::from(n)),
        }
    }

    /// Whole days that cover the length (hours rounded up), for what only counts in days.
    pub fn covering_days(self) -> u32 {
        match self {
            WindowLength::Days(n) => n,
            WindowLength::Hours(n) => n.div_ceil(24),
        }
    }
}

impl std::fmt::Display for WindowLength {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WindowLength::Days(n) => write!(f, "{n}d"),
            WindowLength::Hours(n) => write!(f, "{n}h"),
        }
    }
}

/// A reporting window of `length` periods (days or hours). By default it is the whole periods
/// before the one that contains `end`, because that one is still incomplete; with
/// `include_current` it is the periods up to and including the one that contains `end`, so an
/// event from this hour (or today) counts at once and a later run completes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Window {
    /// Exclusive; the engine passes the run time.
    pub end: DateTime<Utc>,
    pub length: WindowLength,
    pub include_current: bool,
}

impl Window {
    /// `days` whole days before the day that contains `end`.
    pub fn days(end: DateTime<Utc>, days: u32) -> Window {
        Window { end, length: WindowLength::Days(days), include_current: false }
    }

    /// The window of the same length just before this one (what a drop is measured against).
    pub fn before(&self) -> Window {
        Window { end: self.end - self.length.duration(), ..self.clone() }
    }
}

/// One Pendo account's engagement over a window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AccountUsage {
    pub account_id: String,
    /// Distinct identified visitors with events in the window (anonymous ones are not people the
    /// CRM can act on).
    pub active_visitors: u64,
    /// Distinct days with any event, anonymous visitors' included.
    pub active_days: u64,
    pub events: u64,
    pub minutes: u64,
    /// Distinct core features used in the window, by anyone on the account.
    pub core_features_used: u32,
    /// The same for every account: how many core features there are.
    pub core_features_total: u32,
    /// Distinct (visitor, guide) pairs with a `guideSeen` in the window.
    pub guides_seen: u64,
    /// Distinct (visitor, guide) pairs with a `guideAdvanced` on the guide's last step (highest
    /// rank) in the window. A dismissal is not a completion.
    pub guides_completed: u64,
    /// Pendo's own last visit of the account (`metadata.auto.lastvisit`), not bounded by the
    /// window, so an account idle for longer than the window still shows when it was last used.
    pub last_active: Option<DateTime<Utc>>,
}

impl AccountUsage {
    /// Share of core features used, 0 when there are none.
    pub fn feature_adoption(&self) -> f64 {
        ratio(u64::from(self.core_features_used), u64::from(self.core_features_total))
    }

    /// Share of seen guides completed, 0 when none were seen. Capped at 1: a guide seen just
    /// before the window and finished inside it counts as completed but not as seen.
    pub fn guide_completion(&self) -> f64 {
        ratio(self.guides_completed, self.guides_seen)
    }
}

fn ratio(n: u64, d: u64) -> f64 {
    if d == 0 { 0.0 } else { (n as f64 / d as f64).clamp(0.0, 1.0) }
}

/// What matching needs to know about one Pendo account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AccountFacts {
    pub account_id: String,
    /// `"group.field"` and its value as text, only the fields asked for and only those with a
    /// value, sorted by name. A list, not a map: a million accounts each hold one or two, and a
    /// map's first node alone is half a kilobyte.
    pub metadata: Vec<(String, String)>,
    /// Lowercase domain → visitors of the account with an e-mail there, most first (ties by
    /// domain, so the order is stable).
    pub email_domains: Vec<(String, u32)>,
    /// Visitors of the account whose e-mail has a usable domain (see [`crate::matching::domain::email_domain`]).
    pub visitors_with_email: u32,
}

impl AccountFacts {
    /// The value of metadata field `name` (`"group.field"`).
    pub fn metadata_value(&self, name: &str) -> Option<&str> {
        let i = self.metadata.binary_search_by(|(k, _)| k.as_str().cmp(name)).ok()?;
        Some(self.metadata[i].1.as_str())
    }
}

/// Which features count as core.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CoreFeatures {
    Ids(Vec<String>),
    /// Every feature Pendo flags `isCoreEvent`.
    MarkedCore,
}

impl CoreFeatures {
    /// A workflow's `core_features`: the ids listed, or Pendo's own flags when none are.
    pub fn configured(ids: &[String]) -> Self {
        if ids.is_empty() { CoreFeatures::MarkedCore } else { CoreFeatures::Ids(ids.to_vec()) }
    }
}

/// What an extraction cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExtractStats {
    /// Aggregation requests sent (each page is one).
    pub pendo_calls: u32,
    /// Result rows received.
    pub rows: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("Pendo query {query:?} failed: {source}")]
    Pendo {
        query: &'static str,
        #[source]
        source: pendo::Error,
    },
    #[error("Pendo query {query:?} returned a row without a text {field:?}: {snippet}")]
    BadRow { query: &'static str, field: &'static str, snippet: String },
    #[error("Pendo query {query:?} stopped advancing at {key:?}: more than a page of rows share that key")]
    Stuck { query: &'static str, key: String },
    #[error("metadata field {group:?}.{field:?} is not a valid Pendo field name")]
    InvalidField { group: String, field: String },
    #[error("the window must cover 1 to 3650 days (or 1 to 87600 hours), got {0}")]
    InvalidWindow(WindowLength),
}

impl ExtractError {
    /// Whether running the same extraction later may succeed (Pendo throttled or failed).
    pub fn is_retryable(&self) -> bool {
        matches!(self, ExtractError::Pendo { source, .. } if source.is_retryable())
    }
}

pub type Result<T, E = ExtractError> = std::result::Result<T, E>;

/// Runs extractions with one client and counts what they cost.
#[derive(Debug)]
pub struct Extractor<'c> {
    client: &'c pendo::Client,
    page_rows: u64,
    parallel: bool,
    calls: AtomicU32,
    rows: AtomicU64,
}

impl<'c> Extractor<'c> {
    pub fn new(client: &'c pendo::Client) -> Self {
        Extractor {
            client,
            page_rows: DEFAULT_PAGE_ROWS,
            parallel: false,
            calls: AtomicU32::new(0),
            rows: AtomicU64::new(0),
        }
    }

    /// Rows per page (at least 2, so a page can always move past the previous key).
    pub fn with_page_rows(mut self, rows: u64) -> Self {
        self.page_rows = rows.max(2);
        self
    }

    /// Whether an extraction's independent queries run side by side (here one at a time; runs
    /// take `connections.pendo.parallel_queries`, on unless configured off). Side by side, a
    /// run's wait is its longest query rather than their sum (Pendo answers them at once); one
    /// at a time is gentler on a subscription whose aggregation capacity others share.
    pub fn with_parallel_queries(mut self, parallel: bool) -> Self {
        self.parallel = parallel;
        self
    }

    /// Calls and rows so far, over every extraction this extractor ran.
    pub fn stats(&self) -> ExtractStats {
        ExtractStats { pendo_calls: self.calls.load(Ordering::Relaxed), rows: self.rows.load(Ordering::Relaxed) }
    }

    /// One unpaged aggregation, for catalogues (features, guides) that are small by nature.
    async fn once(&self, query: &'static str, p: &Pipeline) -> Result<Vec<Value>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let resp = self.client.aggregate(p).await.map_err(|source| ExtractError::Pendo { query, source })?;
        self.rows.fetch_add(resp.results.len() as u64, Ordering::Relaxed);
        Ok(resp.results)
    }

    /// Pages through a query in `sort` order and hands each row to `fold`.
    ///
    /// `build` gets the keyset condition and must apply it right after the source, so Pendo
    /// filters raw rows before grouping them. Without `overlap`, the sort keys must be unique
    /// per result row (the group's keys) and the next page starts after the last row's keys,
    /// compared in order. With `overlap`, the next page starts *at* the last row's first key:
    /// for grouped results with several rows per first key, where a page may end between them;
    /// `fold` must then tolerate seeing a row twice.
    async fn paged(
        &self,
        query: &'static str,
        sort: &[&'static str],
        overlap: bool,
        build: impl Fn(Option<Expr>) -> Pipeline,
        mut fold: impl FnMut(&Value) -> Result<()>,
    ) -> Result<()> {
        let sort_keys: Vec<SortKey> = sort.iter().map(|k| SortKey::asc(k)).collect();
        let keys = if overlap { &sort[..1.min(sort.len())] } else { sort };
        let key_of = |row: &Value| {
            keys.iter()
                .map(|k| match row.get(*k) {
                    Some(Value::String(s)) => Some(Lit::Str(s.clone())),
                    Some(v) => v.as_i64().map(Lit::Int),
                    None => None,
                })
                .collect::<Option<Vec<Lit>>>()
                .ok_or_else(|| bad_row(query, keys.first().copied().unwrap_or("accountId"), row))
        };
        let mut last: Option<Vec<Lit>> = None;
        // Breaks in a row that brought no new row; a break is read on from its last row.
        let mut stalled = 0u32;
        loop {
            let cond = last.as_deref().map(|l| keyset(sort, l, overlap));
            let p = build(cond).sort(&sort_keys).limit(self.page_rows);
            self.calls.fetch_add(1, Ordering::Relaxed);
            let started = std::time::Instant::now();
            // Rows are folded as they arrive; only the page's last row is kept, for its key.
            let mut last_row: Option<Value> = None;
            let read = self
                .client
                .aggregate_each(&p, |row| {
                    fold(&row).map_err(PageStop::Fold)?;
                    last_row = Some(row);
                    Ok(())
                })
                .await;
            let rows = match read {
                Ok(rows) => rows,
                // The rows before the break are folded: the next page starts after the last
                // of them, as it would after a full page, so none is folded twice (or, with
                // `overlap`, only rows `fold` tolerates twice).
                Err(PageStop::Pendo(source))
                    if source.rows_before_break().is_some() && stalled < MAX_STALLED_BREAKS =>
                {
                    self.rows.fetch_add(source.rows_before_break().unwrap_or(0), Ordering::Relaxed);
                    let next = last_row.as_ref().map(&key_of).transpose()?;
                    if next.is_some() && next != last {
                        stalled = 0;
                        last = next;
                    } else {
                        stalled += 1;
                    }
                    tracing::warn!(query, error = %source, "Pendo page broke off; reading on from its last row");
                    tokio::time::sleep(std::time::Duration::from_millis(100 << stalled)).await;
                    continue;
                }
                Err(PageStop::Pendo(source)) => return Err(ExtractError::Pendo { query, source }),
                Err(PageStop::Fold(e)) => return Err(e),
            };
            self.rows.fetch_add(rows, Ordering::Relaxed);
            tracing::debug!(query, rows, seconds = started.elapsed().as_secs_f64(), "Pendo page read");
            if rows < self.page_rows {
                return Ok(());
            }
            let Some(row) = last_row else { return Ok(()) };
            let next = key_of(&row)?;
            if overlap && last.as_ref() == Some(&next) {
                let key = match next.first() {
                    Some(Lit::Str(s)) => s.clone(),
                    other => other.map(ToString::to_string).unwrap_or_default(),
                };
                return Err(ExtractError::Stuck { query, key });
            }
            last = Some(next);
        }
    }
}

/// The rows after `last` in `keys` order (`k1 > v1 || (k1 == v1 && (k2 > v2 || ...))`), or with
/// `overlap` the rows at or after the first key.
fn keyset(keys: &[&str], last: &[Lit], overlap: bool) -> Expr {
    let mut pairs = keys.iter().zip(last).rev();
    let Some((k, v)) = pairs.next() else { return Expr::lit(true) };
    let first = |k: &str, v: &Lit| {
        if overlap { Expr::field(k).ge(Expr::lit(v.clone())) } else { Expr::field(k).gt(Expr::lit(v.clone())) }
    };
    pairs.fold(first(k, v), |rest, (k, v)| {
        Expr::field(k).gt(Expr::lit(v.clone())).or(Expr::field(k).eq(Expr::lit(v.clone())).and(rest))
    })
}

/// Why a streamed page stopped: the Pendo call (or its body) failed, or the fold refused a row.
enum PageStop {
    Pendo(pendo::Error),
    Fold(ExtractError),
}

impl From<pendo::Error> for PageStop {
    fn from(e: pendo::Error) -> Self {
        PageStop::Pendo(e)
    }
}

fn bad_row(query: &'static str, field: &'static str, row: &Value) -> ExtractError {
    ExtractError::BadRow { query, field, snippet: row.to_string().chars().take(200).collect() }
}

/// A text field of a result row.
fn text<'v>(row: &'v Value, field: &str) -> Option<&'v str> {
    row.get(field).and_then(Value::as_str)
}

/// A count or sum: Pendo may send sums as floats; missing, negative or non-numbers are 0.
fn count(row: &Value, field: &str) -> u64 {
    match row.get(field) {
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite() && *f > 0.0).map(|f| f.round() as u64))
            .unwrap_or(0),
        _ => 0,
    }
}

/// Applies `cond` if there is one.
fn maybe_filter(p: Pipeline, cond: Option<Expr>) -> Pipeline {
    match cond {
        Some(c) => p.filter(c),
        None => p,
    }
}

/// Per-account engagement over `window`.
///
/// # Errors
/// [`ExtractError::Pendo`] naming the query that failed; [`ExtractError::InvalidWindow`].
pub async fn engagement(
    client: &pendo::Client,
    window: &Window,
    core: &CoreFeatures,
) -> Result<Vec<AccountUsage>, ExtractError> {
    Extractor::new(client).engagement(window, core).await
}

/// Matching facts for every Pendo account.
///
/// # Errors
/// [`ExtractError::Pendo`] naming the query that failed; [`ExtractError::InvalidField`].
pub async fn account_facts(
    client: &pendo::Client,
    metadata_fields: &[(String, String)],
) -> Result<Vec<AccountFacts>, ExtractError> {
    Extractor::new(client).account_facts(metadata_fields).await
}
