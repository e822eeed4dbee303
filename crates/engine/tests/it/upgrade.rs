//! Store migrations are forward-only and applied when a newer binary opens an older store: a
//! SQLite store made by the previous schema (every migration but the latest), holding an open
//! failure and a schedule cursor in the form of that release, is opened by the current code,
//! which migrates it and reads and changes what it holds.

use std::borrow::Cow;

use chrono::{TimeZone, Utc};
use engine::store::{FailureFilter, FailureSelector, FailureStatus};

#[tokio::test]
async fn a_store_made_by_the_previous_schema_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());

    // The previous release's schema: the same embedded migrations less the newest. (The
    // Migrator's fields are public for `migrate!` itself; the lockfile pins sqlx.)
    let current = sqlx::migrate!("migrations/sqlite");
    let count = current.migrations.len();
    assert!(count >= 2, "at least one older schema to upgrade from");
    let previous = sqlx::migrate::Migrator {
        migrations: Cow::Owned(current.migrations[..count - 1].to_vec()),
        ignore_missing: false,
        locking: current.locking,
        no_tx: current.no_tx,
        table_name: current.table_name.clone(),
        create_schemas: current.create_schemas.clone(),
    };
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        previous.run(&pool).await.unwrap();
        sqlx::query(
            "INSERT INTO failures (workflow, run_id, object, key, payload, error_code, message, fields, status, \
             attempts, first_failed_at, last_failed_at) VALUES ('engagement', x'0193a0b0c0d07000800000000000abcd', 'Account', 'acme', '{}', \
             'FIELD_CUSTOM_VALIDATION_EXCEPTION', 'Score too high', '[]', 'open', 1, 1764000000, 1764000000)",
        )
        .execute(&pool)
        .await
        .unwrap();
        // A schedule cursor as that release wrote it: a bare time, not keyed to its cron.
        sqlx::query(
            "INSERT INTO cursors (workflow, name, value, updated_at) \
             VALUES ('engagement', 'schedule', '2026-11-28T06:00:00+00:00', 1764000000)",
        )
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }

    let store = engine::store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    let now = Utc.with_ymd_and_hms(2026, 11, 27, 10, 0, 0).unwrap();
    let open = store
        .list_failures(&FailureFilter {
            workflow: Some("engagement".into()),
            status: Some(FailureStatus::Open),
            error_code: None,
            limit: 0,
        })
        .await
        .unwrap();
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].key, "acme");
    // What the newest migration added works on the upgraded rows.
    let dismissed =
        store.dismiss_failures(&FailureSelector::Ids(vec![open[0].id]), "known data problem", now).await.unwrap();
    assert_eq!(dismissed, vec![open[0].id]);

    // The old cursor still schedules the same cron; under a changed one it is recomputed.
    let daily: croner::Cron = "0 6 * * *".parse().unwrap();
    let claim = engine::scheduler::claim(store.as_ref(), "engagement", &daily, chrono_tz::UTC, now).await.unwrap();
    assert_eq!(
        claim,
        engine::scheduler::Claim::Wait { next: Some(Utc.with_ymd_and_hms(2026, 11, 28, 6, 0, 0).unwrap()) }
    );
    let hourly: croner::Cron = "0 * * * *".parse().unwrap();
    let claim = engine::scheduler::claim(store.as_ref(), "engagement", &hourly, chrono_tz::UTC, now).await.unwrap();
    assert_eq!(
        claim,
        engine::scheduler::Claim::Wait { next: Some(Utc.with_ymd_and_hms(2026, 11, 27, 11, 0, 0).unwrap()) }
    );
}
