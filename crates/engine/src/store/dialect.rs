//! What truly differs between the two databases, and nothing else: how a timestamp, a JSON
//! document, a list argument and "no limit" are bound and read back, how a batch of rows is
//! inserted (multi-row VALUES vs UNNEST of column arrays), how a writing transaction starts
//! (`BEGIN IMMEDIATE` vs row locks), and the few SQL fragments spelled differently.
//!
//! Both backends stay on their native sqlx drivers (SQLite keeps INTEGER microseconds and TEXT
//! JSON, PostgreSQL `timestamptz` and `jsonb`), wrapped in small enums ([`Pool`], [`Tx`],
//! [`Stmt`], [`DbRow`]) that dispatch at run time. sqlx's `Any` driver would have lost the
//! native types (UUIDs, timestamps, arrays for UNNEST), and code generic over
//! `sqlx::Database` needs a higher-ranked bound for every type bound and every executor,
//! which costs more text than it saves; a `match` per call costs nothing next to a query.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::stream::BoxStream;
use sqlx::postgres::{PgArguments, PgPool, PgRow};
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqlitePool, SqliteRow};
use sqlx::types::Json;
use sqlx::{Decode, Encode, PgConnection, Postgres, QueryBuilder, Row, SqlSafeStr, Sqlite, SqliteConnection, Type};

use super::{Backend, StoreError, query_err};

/// SQLite allows 32,766 bound parameters per statement; stay well below it.
const SQLITE_MAX_PARAMS: usize = 30_000;

/// Rows per PostgreSQL UNNEST statement: large enough to amortise round trips, small enough to
/// keep each statement's arrays a few MB.
const POSTGRES_BATCH: usize = 10_000;

/// The transaction-scoped advisory lock that serializes inbox claims across PostgreSQL workers
/// (a claim takes a millisecond): the visitor/account exclusion reads other rows' claims, and
/// two claimers running side by side under READ COMMITTED would each miss the other's
/// uncommitted claim and take two events of one visitor. The number is arbitrary, fixed
/// ("usagesync inbox").
const INBOX_CLAIM_LOCK: i64 = 0x7573_6167_6573_796e;

/// A connection pool of either backend.
#[derive(Debug, Clone)]
pub(super) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// A transaction of either backend.
pub(super) enum Tx {
    Sqlite(sqlx::Transaction<'static, Sqlite>),
    Postgres(sqlx::Transaction<'static, Postgres>),
}

/// Where a statement runs: the pool (its own implicit transaction) or an open connection.
pub(super) enum Target<'c, P, C> {
    Pool(&'c P),
    Conn(&'c mut C),
}

type SqliteQuery = Query<'static, Sqlite, SqliteArguments>;
type PgQuery = Query<'static, Postgres, PgArguments>;

/// One statement with its arguments, bound to where it will run, so a statement can never be
/// sent to the other backend.
pub(super) enum Stmt<'c> {
    Sqlite(SqliteQuery, Target<'c, SqlitePool, SqliteConnection>),
    Postgres(PgQuery, Target<'c, PgPool, PgConnection>),
}

/// One result row of either backend.
pub(super) enum DbRow {
    Sqlite(SqliteRow),
    Postgres(PgRow),
}

/// A value both drivers encode natively and alike (text, integers, booleans, UUIDs, dates).
pub(super) trait Bind<'t>: Encode<'t, Sqlite> + Type<Sqlite> + Encode<'t, Postgres> + Type<Postgres> {}
impl<'t, T> Bind<'t> for T where T: Encode<'t, Sqlite> + Type<Sqlite> + Encode<'t, Postgres> + Type<Postgres> {}

/// A value both drivers decode natively and alike.
pub(super) trait Read:
    for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres>
{
}
impl<T> Read for T where T: for<'r> Decode<'r, Sqlite> + Type<Sqlite> + for<'r> Decode<'r, Postgres> + Type<Postgres> {}

impl Pool {
    pub(super) fn backend(&self) -> Backend {
        match self {
            Pool::Sqlite(_) => Backend::Sqlite,
            Pool::Postgres(_) => Backend::Postgres,
        }
    }

    pub(super) fn query(&self, sql: impl SqlSafeStr) -> Stmt<'_> {
        match self {
            Pool::Sqlite(p) => Stmt::Sqlite(sqlx::query(sql), Target::Pool(p)),
            Pool::Postgres(p) => Stmt::Postgres(sqlx::query(sql), Target::Pool(p)),
        }
    }

    /// Starts a transaction that will write. SQLite takes the write lock at once: a deferred
    /// transaction that reads and then writes fails with SQLITE_BUSY when another connection
    /// wrote in between, and the busy timeout does not help then. PostgreSQL relies on row
    /// locks (and `FOR UPDATE` where a read decides a write).
    pub(super) async fn begin_write(&self, operation: &'static str) -> Result<Tx, StoreError> {
        match self {
            Pool::Sqlite(p) => p.begin_with("BEGIN IMMEDIATE").await.map(Tx::Sqlite),
            Pool::Postgres(p) => p.begin().await.map(Tx::Postgres),
        }
        .map_err(query_err(operation))
    }
}

/// One column of a batch insert, a value per row (or one for all rows).
pub(super) enum Column<'a> {
    Text(Vec<&'a str>),
    OptText(Vec<Option<&'a str>>),
    Int(Vec<i64>),
    OptInt(Vec<Option<i64>>),
    Bool(Vec<bool>),
    Time(Vec<DateTime<Utc>>),
}

impl Column<'_> {
    fn array_type(&self) -> &'static str {
        match self {
            Column::Text(_) | Column::OptText(_) => "text",
            Column::Int(_) | Column::OptInt(_) => "int8",
            Column::Bool(_) => "bool",
            Column::Time(_) => "timestamptz",
        }
    }
}

impl Tx {
    /// Inserts `rows` rows given column by column, in their order, in as few statements as the
    /// backend allows: `insert` is `INSERT INTO table (columns)`, `tail` an optional
    /// `ON CONFLICT …` clause, and a `RETURNING …` clause after it, whose rows are returned.
    pub(super) async fn insert_batch(
        &mut self,
        operation: &'static str,
        insert: &str,
        columns: &[Column<'_>],
        rows: usize,
        tail: &str,
    ) -> Result<Vec<DbRow>, StoreError> {
        let mut returned = Vec::new();
        match self {
            Tx::Sqlite(tx) => {
                let per_statement = (SQLITE_MAX_PARAMS / columns.len().max(1)).max(1);
                for start in (0..rows).step_by(per_statement) {
                    let end = (start + per_statement).min(rows);
                    let mut qb = QueryBuilder::<Sqlite>::new(insert);
                    qb.push(" ");
                    qb.push_values(start..end, |mut b, row| {
                        for column in columns {
                            match column {
                                Column::Text(v) => b.push_bind(v[row]),
                                Column::OptText(v) => b.push_bind(v[row]),
                                Column::Int(v) => b.push_bind(v[row]),
                                Column::OptInt(v) => b.push_bind(v[row]),
                                Column::Bool(v) => b.push_bind(v[row]),
                                Column::Time(v) => b.push_bind(v[row].timestamp_micros()),
                            };
                        }
                    });
                    qb.push(tail);
                    // Not kept in the connection's statement cache: a statement of thousands of
                    // parameters compiles to megabytes, and every batch size is another entry
                    // that would stay for the connection's life.
                    let rows = qb.build().persistent(false).fetch_all(&mut **tx).await.map_err(query_err(operation))?;
                    returned.extend(rows.into_iter().map(DbRow::Sqlite));
                }
            }
            Tx::Postgres(tx) => {
                let names: Vec<String> = (0..columns.len()).map(|i| format!("c{i}")).collect();
                let select: Vec<String> = names.iter().map(|n| format!("t.{n}")).collect();
                let arrays: Vec<String> =
                    columns.iter().enumerate().map(|(i, c)| format!("${}::{}[]", i + 1, c.array_type())).collect();
                // WITH ORDINALITY + ORDER BY keeps the rows (and serial ids) in the caller's order.
                let sql = format!(
                    "{insert} SELECT {} FROM UNNEST({}) WITH ORDINALITY AS t({}, n) ORDER BY n{tail}",
                    select.join(", "),
                    arrays.join(", "),
                    names.join(", "),
                );
                for start in (0..rows).step_by(POSTGRES_BATCH) {
                    let end = (start + POSTGRES_BATCH).min(rows);
                    let mut q: PgQuery = sqlx::query(sqlx::AssertSqlSafe(sql.clone()));
                    for column in columns {
                        q = match column {
                            Column::Text(v) => q.bind(&v[start..end]),
                            Column::OptText(v) => q.bind(&v[start..end]),
                            Column::Int(v) => q.bind(&v[start..end]),
                            Column::OptInt(v) => q.bind(&v[start..end]),
                            Column::Bool(v) => q.bind(&v[start..end]),
                            Column::Time(v) => q.bind(&v[start..end]),
                        };
                    }
                    let rows = q.fetch_all(&mut **tx).await.map_err(query_err(operation))?;
                    returned.extend(rows.into_iter().map(DbRow::Postgres));
                }
            }
        }
        Ok(returned)
    }

    pub(super) fn query(&mut self, sql: impl SqlSafeStr) -> Stmt<'_> {
        match self {
            Tx::Sqlite(tx) => Stmt::Sqlite(sqlx::query(sql), Target::Conn(&mut **tx)),
            Tx::Postgres(tx) => Stmt::Postgres(sqlx::query(sql), Target::Conn(&mut **tx)),
        }
    }

    pub(super) async fn commit(self, operation: &'static str) -> Result<(), StoreError> {
        match self {
            Tx::Sqlite(tx) => tx.commit().await,
            Tx::Postgres(tx) => tx.commit().await,
        }
        .map_err(query_err(operation))
    }

    /// Makes inbox claims take turns. SQLite's `BEGIN IMMEDIATE` already does; PostgreSQL
    /// takes a transaction-scoped advisory lock (see [`INBOX_CLAIM_LOCK`]).
    pub(super) async fn serialize_inbox_claims(&mut self, operation: &'static str) -> Result<(), StoreError> {
        if let Tx::Postgres(_) = self {
            self.query("SELECT pg_advisory_xact_lock($1)").bind(INBOX_CLAIM_LOCK).execute(operation).await?;
        }
        Ok(())
    }
}

/// The SQL fragments spelled differently, for the statements built with `format!`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    Sqlite,
    Postgres,
}

impl Dialect {
    pub(super) fn of(pool: &Pool) -> Self {
        match pool {
            Pool::Sqlite(_) => Dialect::Sqlite,
            Pool::Postgres(_) => Dialect::Postgres,
        }
    }

    /// `value IN` the list bound at `param` with [`Stmt::bind_list`].
    pub(super) fn in_list(self, value: &str, param: &str) -> String {
        match self {
            Dialect::Sqlite => format!("{value} IN (SELECT value FROM json_each({param}))"),
            Dialect::Postgres => format!("{value} = ANY({param})"),
        }
    }

    /// Locks the rows a read selects until the transaction ends; SQLite's write lock (taken by
    /// `BEGIN IMMEDIATE`) already covers the whole database.
    pub(super) fn for_update(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE",
        }
    }

    /// As [`Self::for_update`], passing over rows another transaction holds rather than waiting
    /// for them and then taking them a second time.
    pub(super) fn for_update_skip_locked(self) -> &'static str {
        match self {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        }
    }

    /// Each group's `(field_id, fingerprint, value)` rows as one JSON list of three-element
    /// lists, as text: a record's nine fields come back in one row instead of nine, and the
    /// drivers' cost is per row.
    pub(super) fn json_rows(self, field_id: &str, fingerprint: &str, value: &str) -> String {
        match self {
            Dialect::Sqlite => format!("json_group_array(json_array({field_id}, {fingerprint}, {value}))"),
            Dialect::Postgres => {
                format!("CAST(json_agg(json_build_array({field_id}, {fingerprint}, {value})) AS TEXT)")
            }
        }
    }

    /// The UTC hour (0–23) of the timestamp column `column`, as a BIGINT.
    pub(super) fn utc_hour(self, column: &str) -> String {
        match self {
            Dialect::Sqlite => format!("({column} / 3600000000) % 24"),
            Dialect::Postgres => format!("EXTRACT(HOUR FROM {column} AT TIME ZONE 'UTC')::int8"),
        }
    }
}

impl<'c> Stmt<'c> {
    pub(super) fn bind<'t, T: Bind<'t>>(self, value: T) -> Self {
        match self {
            Stmt::Sqlite(q, t) => Stmt::Sqlite(q.bind(value), t),
            Stmt::Postgres(q, t) => Stmt::Postgres(q.bind(value), t),
        }
    }

    /// SQLite keeps timestamps as INTEGER microseconds so comparisons (lease expiry) are
    /// numeric; PostgreSQL as `timestamptz`, also microseconds.
    pub(super) fn bind_time(self, value: DateTime<Utc>) -> Self {
        match self {
            Stmt::Sqlite(q, t) => Stmt::Sqlite(q.bind(value.timestamp_micros()), t),
            Stmt::Postgres(q, t) => Stmt::Postgres(q.bind(value), t),
        }
    }

    /// JSON documents are TEXT on SQLite and `jsonb` on PostgreSQL.
    pub(super) fn bind_json(self, value: &serde_json::Value) -> Self {
        match self {
            Stmt::Sqlite(q, t) => Stmt::Sqlite(q.bind(value.to_string()), t),
            Stmt::Postgres(q, t) => Stmt::Postgres(q.bind(Json(value)), t),
        }
    }

    /// A listing limit where 0 means none: SQLite spells that as a negative LIMIT, PostgreSQL
    /// as LIMIT NULL.
    pub(super) fn bind_limit(self, limit: u32) -> Self {
        match self {
            Stmt::Sqlite(q, t) => Stmt::Sqlite(q.bind(if limit == 0 { -1 } else { i64::from(limit) }), t),
            Stmt::Postgres(q, t) => Stmt::Postgres(q.bind((limit != 0).then(|| i64::from(limit))), t),
        }
    }

    /// A list for [`Dialect::in_list`]: a JSON array on SQLite, an array on PostgreSQL.
    pub(super) fn bind_list<T>(self, values: &[T]) -> Result<Self, StoreError>
    where
        T: serde::Serialize,
        for<'t> &'t [T]: Encode<'t, Postgres> + Type<Postgres>,
    {
        Ok(match self {
            Stmt::Sqlite(q, t) => Stmt::Sqlite(q.bind(super::json_text("list argument", &values)?), t),
            Stmt::Postgres(q, t) => Stmt::Postgres(q.bind(values), t),
        })
    }

    /// Runs the statement; returns the rows it changed.
    pub(super) async fn execute(self, operation: &'static str) -> Result<u64, StoreError> {
        let rows: Result<u64, sqlx::Error> = match self {
            Stmt::Sqlite(q, Target::Pool(e)) => q.execute(e).await.map(|r| r.rows_affected()),
            Stmt::Sqlite(q, Target::Conn(e)) => q.execute(e).await.map(|r| r.rows_affected()),
            Stmt::Postgres(q, Target::Pool(e)) => q.execute(e).await.map(|r| r.rows_affected()),
            Stmt::Postgres(q, Target::Conn(e)) => q.execute(e).await.map(|r| r.rows_affected()),
        };
        rows.map_err(query_err(operation))
    }

    pub(super) async fn fetch_all(self, operation: &'static str) -> Result<Vec<DbRow>, StoreError> {
        let rows: Result<Vec<DbRow>, sqlx::Error> = match self {
            Stmt::Sqlite(q, Target::Pool(e)) => {
                q.fetch_all(e).await.map(|r| r.into_iter().map(DbRow::Sqlite).collect())
            }
            Stmt::Sqlite(q, Target::Conn(e)) => {
                q.fetch_all(e).await.map(|r| r.into_iter().map(DbRow::Sqlite).collect())
            }
            Stmt::Postgres(q, Target::Pool(e)) => {
                q.fetch_all(e).await.map(|r| r.into_iter().map(DbRow::Postgres).collect())
            }
            Stmt::Postgres(q, Target::Conn(e)) => {
                q.fetch_all(e).await.map(|r| r.into_iter().map(DbRow::Postgres).collect())
            }
        };
        rows.map_err(query_err(operation))
    }

    pub(super) async fn fetch_optional(self, operation: &'static str) -> Result<Option<DbRow>, StoreError> {
        let row: Result<Option<DbRow>, sqlx::Error> = match self {
            Stmt::Sqlite(q, Target::Pool(e)) => q.fetch_optional(e).await.map(|r| r.map(DbRow::Sqlite)),
            Stmt::Sqlite(q, Target::Conn(e)) => q.fetch_optional(e).await.map(|r| r.map(DbRow::Sqlite)),
            Stmt::Postgres(q, Target::Pool(e)) => q.fetch_optional(e).await.map(|r| r.map(DbRow::Postgres)),
            Stmt::Postgres(q, Target::Conn(e)) => q.fetch_optional(e).await.map(|r| r.map(DbRow::Postgres)),
        };
        row.map_err(query_err(operation))
    }

    pub(super) async fn fetch_one(self, operation: &'static str) -> Result<DbRow, StoreError> {
        self.fetch_optional(operation)
            .await?
            .ok_or_else(|| StoreError::Query { operation, source: sqlx::Error::RowNotFound })
    }

    /// The rows one at a time, for results too large to hold as rows.
    pub(super) fn fetch(self) -> BoxStream<'c, Result<DbRow, sqlx::Error>> {
        match self {
            Stmt::Sqlite(q, Target::Pool(e)) => q.fetch(e).map(|r| r.map(DbRow::Sqlite)).boxed(),
            Stmt::Sqlite(q, Target::Conn(e)) => q.fetch(e).map(|r| r.map(DbRow::Sqlite)).boxed(),
            Stmt::Postgres(q, Target::Pool(e)) => q.fetch(e).map(|r| r.map(DbRow::Postgres)).boxed(),
            Stmt::Postgres(q, Target::Conn(e)) => q.fetch(e).map(|r| r.map(DbRow::Postgres)).boxed(),
        }
    }
}

fn corrupt(col: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |e| StoreError::Corrupt { what: col, detail: e.to_string() }
}

impl DbRow {
    pub(super) fn get<T: Read>(&self, col: &'static str) -> Result<T, StoreError> {
        match self {
            DbRow::Sqlite(r) => r.try_get(col),
            DbRow::Postgres(r) => r.try_get(col),
        }
        .map_err(corrupt(col))
    }

    /// Text borrowed from the row, for bulk reads that would otherwise allocate per row.
    pub(super) fn str(&self, col: &'static str) -> Result<&str, StoreError> {
        match self {
            DbRow::Sqlite(r) => r.try_get(col),
            DbRow::Postgres(r) => r.try_get(col),
        }
        .map_err(corrupt(col))
    }

    /// An INTEGER column: 64-bit on SQLite, `integer` (32-bit) on PostgreSQL.
    pub(super) fn int(&self, col: &'static str) -> Result<i64, StoreError> {
        match self {
            DbRow::Sqlite(r) => r.try_get(col),
            DbRow::Postgres(r) => r.try_get::<i32, _>(col).map(i64::from),
        }
        .map_err(corrupt(col))
    }

    pub(super) fn opt_time(&self, what: &'static str, col: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
        match self {
            DbRow::Sqlite(r) => {
                let micros: Option<i64> = r.try_get(col).map_err(corrupt(col))?;
                micros.map(|v| from_micros(what, v)).transpose()
            }
            DbRow::Postgres(r) => r.try_get(col).map_err(corrupt(col)),
        }
    }

    pub(super) fn time(&self, what: &'static str, col: &'static str) -> Result<DateTime<Utc>, StoreError> {
        self.opt_time(what, col)?.ok_or_else(|| StoreError::Corrupt { what, detail: "missing timestamp".into() })
    }

    /// A JSON document column (see [`Stmt::bind_json`]).
    pub(super) fn json(&self, what: &'static str, col: &'static str) -> Result<serde_json::Value, StoreError> {
        match self {
            DbRow::Sqlite(r) => super::from_json_text(what, r.try_get::<&str, _>(col).map_err(corrupt(col))?),
            DbRow::Postgres(r) => r.try_get::<Json<serde_json::Value>, _>(col).map(|j| j.0).map_err(corrupt(col)),
        }
    }
}

fn from_micros(what: &'static str, v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v)
        .ok_or_else(|| StoreError::Corrupt { what, detail: format!("timestamp {v} µs is out of range") })
}

/// How long an acquire may wait for a pooled connection before failing.
pub(super) const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(30);
