//! Opening the PostgreSQL backend, for several workers sharing one state: the pool, the
//! optional per-test schema (kept via `search_path`) and its embedded migrations. The
//! statements are shared with SQLite (`sql.rs`); bulk writes use `UNNEST` and claims use row
//! locks with `SKIP LOCKED` there, through the dialect.

use std::str::FromStr;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};

use super::dialect::{ACQUIRE_TIMEOUT, Pool};
use super::sql::SqlStore;
use super::{Backend, StoreError, query_err, redact_location};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

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

impl SqlStore {
    /// Connects to `url`; with `schema`, creates that schema if missing and keeps every table
    /// in it (via the connection's `search_path`). Then migrates.
    pub async fn open_postgres(url: &str, schema: Option<&str>) -> Result<Self, StoreError> {
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
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .connect_with(options)
            .await
            .map_err(|source| StoreError::Open { location: redact_location(url), source })?;
        MIGRATOR.run(&pool).await.map_err(|source| StoreError::Migrate { backend: Backend::Postgres, source })?;
        Ok(SqlStore::new(Pool::Postgres(pool)))
    }
}
