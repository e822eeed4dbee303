//! Opening the SQLite backend (the default): one file in WAL mode, or an in-memory database
//! for tests and demos, migrated by its own embedded migrations. Timestamps are stored as
//! INTEGER microseconds since the epoch so comparisons (lease expiry) are numeric; the
//! statements themselves are shared with PostgreSQL (`sql.rs`).

use std::str::FromStr;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteAutoVacuum, SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::dialect::{ACQUIRE_TIMEOUT, Pool};
use super::sql::SqlStore;
use super::{Backend, StoreError, redact_location};

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// Bytes the write-ahead log is cut back to once checkpointed. SQLite otherwise keeps the log at
/// the size of the largest write it ever took (a first run's fingerprints: over 20 MB at
/// 100,000 accounts) beside the database for good.
pub(crate) const WAL_SIZE_LIMIT: u64 = 4 << 20;

impl SqlStore {
    /// Opens `location` (`sqlite::memory:`, `sqlite://path`, `sqlite:path` or a path), creating
    /// the file if missing, and migrates it.
    pub async fn open_sqlite(location: &str) -> Result<Self, StoreError> {
        let open_err = |source| StoreError::Open { location: redact_location(location), source };
        let memory = matches!(location, "sqlite::memory:" | ":memory:" | "sqlite://:memory:");
        let path = (!memory).then(|| {
            location.strip_prefix("sqlite://").or_else(|| location.strip_prefix("sqlite:")).unwrap_or(location)
        });
        let options = match path {
            None => SqliteConnectOptions::from_str("sqlite::memory:").map_err(open_err)?,
            Some(path) => SqliteConnectOptions::new().filename(path),
        };
        // Incremental auto-vacuum lets a prune give the pages it freed back to the filesystem a
        // step at a time (`PRAGMA incremental_vacuum`). It takes effect on files created with
        // it; an older file keeps its mode until a full VACUUM (`usagesync prune --vacuum`).
        let options = options
            .auto_vacuum(SqliteAutoVacuum::Incremental)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .pragma("journal_size_limit", WAL_SIZE_LIMIT.to_string())
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true);
        // An in-memory database lives and dies with its one connection, so the pool must hold
        // exactly one and never retire it.
        let pool_options = if memory {
            SqlitePoolOptions::new().max_connections(1).min_connections(1).idle_timeout(None).max_lifetime(None)
        } else {
            SqlitePoolOptions::new().max_connections(4)
        };
        let pool_options = pool_options.acquire_timeout(ACQUIRE_TIMEOUT);
        // Another process creating the same new file holds it while it switches the journal to
        // WAL, before any busy timeout applies: wait for it rather than fail.
        let mut attempt = 0;
        let pool = loop {
            match pool_options.clone().connect_with(options.clone()).await {
                Ok(pool) => break pool,
                Err(e) if attempt < 20 && e.to_string().contains("database is locked") => {
                    attempt += 1;
                    tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
                }
                Err(e) => return Err(open_err(e)),
            }
        };
        migrate(&pool, path).await?;
        Ok(SqlStore::new(Pool::Sqlite(pool)))
    }
}

/// Opens (creating) and exclusively locks the file at `path`, waiting for another holder.
// Waiting is what this does, so it runs on a spawn_blocking thread, never on the runtime's.
#[allow(clippy::disallowed_methods)]
fn lock_file(path: &str) -> std::io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(path)?;
    file.lock()?;
    Ok(file)
}

/// Migrates under an exclusive lock on a file beside the database (`PATH-migrate.lock`):
/// SQLite gives sqlx's migrator no lock of its own, so two processes opening the same new file
/// at the same moment would both apply the first migration and one would fail.
async fn migrate(pool: &SqlitePool, path: Option<&str>) -> Result<(), StoreError> {
    let lock = match path {
        Some(path) => {
            let lock_path = format!("{path}-migrate.lock");
            let file = tokio::task::spawn_blocking(move || lock_file(&lock_path))
                .await
                .map_err(|e| StoreError::Invalid { what: "migration lock", detail: e.to_string() })?
                .map_err(|e| StoreError::Invalid { what: "migration lock", detail: e.to_string() })?;
            Some(file)
        }
        None => None,
    };
    let result = MIGRATOR.run(pool).await.map_err(|source| StoreError::Migrate { backend: Backend::Sqlite, source });
    drop(lock);
    result
}

#[cfg(test)]
mod concurrent_open_tests {
    use super::*;

    /// Two CLI runs (or a run and the daemon) starting together on a store that does not exist
    /// yet both open it: neither fails on the other's half-done migration.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn processes_opening_a_new_file_together_all_get_the_store() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let path = format!("sqlite://{}", dir.path().join(format!("new-{round}.db")).display());
            let opens: Vec<_> = (0..6).map(|_| SqlStore::open_sqlite(&path)).collect();
            for result in futures_util::future::join_all(opens).await {
                assert!(result.is_ok(), "round {round}: {:?}", result.err());
            }
        }
    }
}
