//! Store migrations are forward-only and applied when a newer binary opens an older store: a
//! store made by the previous schema (every migration but the latest), holding rows in the form
//! of that release, is opened by the current code, which migrates it and reads and changes
//! what it holds.

use std::borrow::Cow;
use std::collections::BTreeMap;

use chrono::{TimeZone, Utc};
use engine::store::{
    Action, FailureFilter, FailureSelector, FailureStatus, FieldChange, FingerprintPut, OutcomeFilter, RecordOutcome,
    RunId, Store,
};
use serde_json::json;

/// The embedded migrations of a backend less the newest: the previous release's schema.
fn previous(current: sqlx::migrate::Migrator) -> sqlx::migrate::Migrator {
    let newest = current.migrations.iter().map(|m| m.version).max().unwrap_or_default();
    before(current, newest)
}

/// The embedded migrations of a backend older than `version`: the schema a store made before
/// that migration has. (The Migrator's fields are public for `migrate!` itself; the lockfile
/// pins sqlx.)
fn before(current: sqlx::migrate::Migrator, version: i64) -> sqlx::migrate::Migrator {
    let older: Vec<_> = current.migrations.iter().filter(|m| m.version < version).cloned().collect();
    assert!(!older.is_empty() && older.len() < current.migrations.len(), "an older schema to upgrade from");
    sqlx::migrate::Migrator {
        migrations: Cow::Owned(older),
        ignore_missing: false,
        locking: current.locking,
        no_tx: current.no_tx,
        table_name: current.table_name.clone(),
        create_schemas: current.create_schemas.clone(),
    }
}

#[tokio::test]
async fn a_store_made_by_the_previous_schema_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());

    let previous = previous(sqlx::migrate!("migrations/sqlite"));
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
        // A schedule cursor as that release wrote it: a bare time, not keyed to its cron; and
        // the engagement read it kept as base64 cursor text.
        sqlx::query(
            "INSERT INTO cursors (workflow, name, value, updated_at) \
             VALUES ('engagement', 'schedule', '2026-11-28T06:00:00+00:00', 1764000000), \
             ('engagement', 'engagement', 'S2VwdCBhcyB0ZXh0', 1764000000)",
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

    // The engagement read kept as cursor text is forgotten, not carried over: the next run
    // reads its window whole and keeps the state as bytes.
    assert_eq!(store.cursor("engagement", "engagement").await.unwrap(), None);
    assert_eq!(store.kept_state("engagement", "engagement").await.unwrap(), None);
    assert!(store.keep_state("engagement", "engagement", None, vec![1, 2]).await.unwrap());

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

/// The migration that made outcomes pages and interned fingerprints' scopes and fields.
const COMPACT_STORE: i64 = 8;

/// The history and fingerprints of the release before [`COMPACT_STORE`]: rows per outcome (changes in the compact
/// encoding with interned field names, or spelled out as rows older still hold them) and
/// fingerprints keyed by scope and field names. The statements are the same on both backends
/// but for how a run id and a time are written.
fn previous_rows(run: &str, other_run: &str, at: &str) -> Vec<String> {
    vec![
        format!(
            "INSERT INTO runs (id, workflow, template, dry_run, trigger, state, started_at, stats) VALUES \
             ({run}, 'engagement', 'engagement-scores', false, 'cli', 'succeeded', {at}, '{{}}'), \
             ({other_run}, 'engagement', 'engagement-scores', false, 'cli', 'succeeded', {at}, '{{}}')"
        ),
        // Ids 1 and 2, as the engine interned them.
        "INSERT INTO field_names (name) VALUES ('Pendo_Events__c'), ('Pendo_Engagement_Score__c')".into(),
        format!(
            "INSERT INTO outcomes (run_id, object, key, key_lc, salesforce_id, action, changes, error_code, message) VALUES \
             ({run}, 'Account', 'Acme-EMEA', 'acme-emea', '001A00000000001AAA', 'updated', '[[1,3,4],[2,50.5]]', NULL, NULL), \
             ({run}, 'Account', 'globex', NULL, NULL, 'skipped', '[]', NULL, 'Account 001B is claimed by several accounts'), \
             ({other_run}, 'Account', 'initech', 'initech', '001C00000000001AAA', 'failed', \
              '[{{\"field\":\"Pendo_Events__c\",\"before\":null,\"after\":7}}]', 'ERR', 'refused'), \
             ({run}, 'Account', 'hooli', NULL, '001D00000000001AAA', 'updated', '[[1,null,9]]', NULL, NULL)"
        ),
        format!(
            "INSERT INTO fingerprints (scope, key, field, fingerprint, written_at, value) VALUES \
             ('engagement:Account', '001A00000000001AAA', 'Pendo_Events__c', -42, {at}, '4'), \
             ('engagement:Account', '001A00000000001AAA', 'Pendo_Engagement_Score__c', 7, {at}, '50.5'), \
             ('churn-alerts:episodes', 'acme', 'episode', 9, {at}, '{{\"open\":true}}'), \
             ('engagement:Account', '001D00000000001AAA', 'Pendo_Events__c', 11, {at}, NULL)"
        ),
    ]
}

/// What the current code reads and writes in a store upgraded from [`previous_rows`].
async fn check_upgraded_history(store: &dyn Store, run: RunId, other_run: RunId) {
    let all = OutcomeFilter::default();
    let change = |field: &str, before: Option<serde_json::Value>, after: serde_json::Value| FieldChange {
        field: field.into(),
        before,
        after,
    };
    let outcome = |key: &str, salesforce_id: Option<&str>, action: Action, changes: Vec<FieldChange>| RecordOutcome {
        object: "Account".into(),
        key: key.into(),
        salesforce_id: salesforce_id.map(str::to_owned),
        action,
        changes,
        error_code: None,
        message: None,
    };
    let acme = outcome(
        "Acme-EMEA",
        Some("001A00000000001AAA"),
        Action::Updated,
        vec![
            change("Pendo_Events__c", Some(json!(3)), json!(4)),
            change("Pendo_Engagement_Score__c", None, json!(50.5)),
        ],
    );
    let globex = RecordOutcome {
        message: Some("Account 001B is claimed by several accounts".into()),
        ..outcome("globex", None, Action::Skipped, vec![])
    };
    let hooli =
        outcome("hooli", Some("001D00000000001AAA"), Action::Updated, vec![change("Pendo_Events__c", None, json!(9))]);
    assert_eq!(store.run_outcomes(run, &all).await.unwrap(), vec![acme.clone(), globex.clone(), hooli.clone()]);
    let initech = RecordOutcome {
        error_code: Some("ERR".into()),
        message: Some("refused".into()),
        ..outcome(
            "initech",
            Some("001C00000000001AAA"),
            Action::Failed,
            vec![change("Pendo_Events__c", None, json!(7))],
        )
    };
    assert_eq!(store.run_outcomes(other_run, &all).await.unwrap(), vec![initech]);
    // Search by key (any case) and by Salesforce id, filters and pages, as before.
    let search = |s: &str| OutcomeFilter { search: Some(s.into()), ..Default::default() };
    assert_eq!(store.run_outcomes(run, &search("ACME")).await.unwrap(), vec![acme.clone()]);
    assert_eq!(store.run_outcomes(run, &search("001d")).await.unwrap(), vec![hooli.clone()]);
    let skipped = OutcomeFilter { action: Some(Action::Skipped), ..Default::default() };
    assert_eq!(store.run_outcomes(run, &skipped).await.unwrap(), vec![globex]);
    let page = OutcomeFilter { offset: 2, limit: 1, ..Default::default() };
    assert_eq!(store.run_outcomes(run, &page).await.unwrap(), vec![hooli]);
    assert_eq!(store.outcome_counts(run).await.unwrap(), BTreeMap::from([(Action::Updated, 2), (Action::Skipped, 1)]));

    // Fingerprints keep their values under the same scope and field names.
    let prints = store.fingerprints("engagement:Account").await.unwrap();
    assert_eq!(prints.len(), 3);
    assert_eq!(prints.get("001A00000000001AAA", "Pendo_Events__c"), Some(u64::MAX - 41));
    assert_eq!(prints.get("001D00000000001AAA", "Pendo_Events__c"), Some(11));
    let episodes = store.written_values("churn-alerts:episodes", &["acme".into()]).await.unwrap();
    assert_eq!(episodes["acme"], vec![("episode".to_owned(), json!({"open": true}))]);
    let values = store.written_values("engagement:Account", &["001A00000000001AAA".into()]).await.unwrap();
    let mut values = values["001A00000000001AAA"].clone();
    values.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        values,
        vec![("Pendo_Engagement_Score__c".to_owned(), json!(50.5)), ("Pendo_Events__c".to_owned(), json!(4))]
    );

    // New writes land beside the migrated ones: outcomes after the old run's, a fingerprint
    // replacing the old row rather than adding one.
    let now = Utc.with_ymd_and_hms(2026, 11, 28, 6, 0, 0).unwrap();
    let put = FingerprintPut {
        scope: "engagement:Account".into(),
        key: "001A00000000001AAA".into(),
        field: "Pendo_Events__c".into(),
        fingerprint: 5,
        written_at: now,
        value: Some(json!(5)),
    };
    let later = outcome(
        "Acme-EMEA",
        Some("001A00000000001AAA"),
        Action::Updated,
        vec![change("Pendo_Events__c", Some(json!(4)), json!(5))],
    );
    store.record_outcomes(run, std::slice::from_ref(&later), &[put]).await.unwrap();
    let read = store.run_outcomes(run, &all).await.unwrap();
    assert_eq!(read.len(), 4);
    assert_eq!(read[3], later);
    let prints = store.fingerprints("engagement:Account").await.unwrap();
    assert_eq!((prints.len(), prints.get("001A00000000001AAA", "Pendo_Events__c")), (3, Some(5)));
    store.forget_fingerprints("churn-alerts:episodes", "acme").await.unwrap();
    assert!(store.written_values("churn-alerts:episodes", &["acme".into()]).await.unwrap().is_empty());
    let size = store.store_size().await.unwrap();
    assert_eq!((size.rows["outcomes"], size.rows["fingerprints"]), (5, 3));
}

const RUN: &str = "0193a0b0-c0d0-7000-8000-00000000a001";
const OTHER_RUN: &str = "0193a0b0-c0d0-7000-8000-00000000a002";

#[tokio::test]
async fn sqlite_history_and_fingerprints_of_the_previous_schema_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.db");
    let url = format!("sqlite://{}?mode=rwc", path.display());
    {
        let pool = sqlx::SqlitePool::connect(&url).await.unwrap();
        before(sqlx::migrate!("migrations/sqlite"), COMPACT_STORE).run(&pool).await.unwrap();
        let blob = |id: &str| format!("x'{}'", id.replace('-', ""));
        for sql in previous_rows(&blob(RUN), &blob(OTHER_RUN), "1764000000000000") {
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
        }
        pool.close().await;
    }
    let store = engine::store::open(&format!("sqlite://{}", path.display())).await.unwrap();
    check_upgraded_history(store.as_ref(), RUN.parse().unwrap(), OTHER_RUN.parse().unwrap()).await;
}

#[tokio::test]
async fn postgres_history_and_fingerprints_of_the_previous_schema_are_kept() {
    if std::env::var("USAGESYNC_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
        eprintln!("USAGESYNC_SKIP_POSTGRES=1: PostgreSQL variant skipped");
        return;
    }
    let url = std::env::var("USAGESYNC_TEST_POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let schema = format!("usagesync_upgrade_{}", uuid::Uuid::now_v7().simple());
    let body = {
        let (url, schema) = (url.clone(), schema.clone());
        tokio::spawn(async move {
            let admin = sqlx::PgPool::connect(&url).await.unwrap();
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA \"{schema}\""))).execute(&admin).await.unwrap();
            admin.close().await;
            let options: sqlx::postgres::PgConnectOptions = url.parse().unwrap();
            let pool = sqlx::PgPool::connect_with(options.options([("search_path", schema.as_str())])).await.unwrap();
            before(sqlx::migrate!("migrations/postgres"), COMPACT_STORE).run(&pool).await.unwrap();
            let uuid = |id: &str| format!("'{id}'");
            for sql in previous_rows(&uuid(RUN), &uuid(OTHER_RUN), "'2025-11-24T16:00:00Z'") {
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&pool).await.unwrap();
            }
            pool.close().await;
            let store = engine::store::open_postgres_schema(&url, &schema).await.unwrap();
            check_upgraded_history(store.as_ref(), RUN.parse().unwrap(), OTHER_RUN.parse().unwrap()).await;
        })
    };
    let outcome = body.await;
    engine::store::drop_postgres_schema(&url, &schema).await.unwrap();
    if let Err(e) = outcome {
        std::panic::resume_unwind(e.into_panic());
    }
}
