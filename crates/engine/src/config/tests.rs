//! Loader tests: the example, located errors, secrets, and arbitrary input.

use std::collections::HashMap;

use std::time::Duration;

use super::*;

fn load_ok(text: &str) -> Config {
    match load_str(text, "test.yaml") {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got:\n{errors}"),
    }
}

fn load_err(text: &str) -> ConfigErrors {
    match load_str(text, "bad.yaml") {
        Ok(_) => panic!("expected errors"),
        Err(errors) => errors,
    }
}

/// The example with one line replaced (matched by its trimmed start).
fn example_with(find: &str, replace: &str) -> String {
    assert!(STARTER.contains(find), "example has no `{find}`");
    STARTER.replacen(find, replace, 1)
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines().position(|l| l.contains(needle)).expect("needle in text") + 1
}

#[test]
fn the_example_loads_with_its_values() {
    let config = load_ok(STARTER);
    let sf = &config.connections.salesforce;
    assert_eq!(sf.login_url.as_str(), "http://127.0.0.1:8443/");
    assert_eq!(sf.api_version, "62.0");
    assert_eq!(
        sf.auth,
        SalesforceAuth::ClientCredentials {
            client_id: "usagesync-emulator".into(),
            client_secret: Secret::Env("SF_CLIENT_SECRET".into()),
        }
    );
    assert_eq!(config.connections.pendo.integration_key, Secret::Env("PENDO_INTEGRATION_KEY".into()));
    assert_eq!(config.store.kind, StoreKind::Sqlite);
    assert_eq!(config.budget, Budget { daily_share: 0.25, min_remaining: 5000 });
    let w = &config.workflows["engagement"];
    assert_eq!(w.name, "engagement");
    assert!(w.enabled);
    assert_eq!(w.schedule.as_str(), "0 6 * * *");
    assert_eq!(w.timezone, chrono_tz::UTC);
    assert_eq!(w.window_days(), 30);
    assert_eq!(w.max_latency, Duration::from_secs(3600));
    let Template::EngagementScores(e) = &w.template else { panic!("engagement is engagement-scores") };
    assert_eq!(e.matching.len(), 5);
    assert_eq!(
        e.matching[3],
        MatchRule::ChildField { group: MetadataGroup::Agent, field: "name".into(), account_field: "Name".into() }
    );
    assert_eq!(e.matching[4], MatchRule::PendoParent { group: MetadataGroup::Custom, field: "parentaccountid".into() });
    assert!(e.rollup_fields.is_empty(), "roll-up writes records: off in the starter");
    assert_eq!(e.matching[0], MatchRule::PendoMetadata { group: MetadataGroup::Custom, field: "sfdcaccountid".into() });
    assert_eq!(
        e.matching[2],
        MatchRule::EmailDomain {
            website_field: "Website".into(),
            min_share: 0.5,
            extra_free_mail: vec!["corp-mail.example".into()],
        }
    );
    assert_eq!(e.recheck_matches_after, Duration::from_secs(7 * 86_400));
    assert_eq!(e.score.terms().count(), 6);
    assert_eq!(e.fields.len(), 9);
    assert_eq!(e.fields.get(Metric::Score), Some("Pendo_Engagement_Score__c"));
    assert_eq!(e.fields.iter().next(), Some((Metric::ActiveVisitors, "Pendo_Active_Visitors__c")));
}

#[test]
fn defaults_fill_omitted_keys() {
    let text = example_with("    api_version: \"62.0\"", "")
        .replace("    max_latency: 1h", "")
        .replace("    enabled: true", "")
        .replace("    timezone: UTC", "")
        .replace("  min_remaining: 5000", "")
        .replace("    recheck_matches_after: 7d", "");
    let config = load_ok(&text);
    assert_eq!(config.connections.salesforce.api_version, DEFAULT_API_VERSION);
    assert_eq!(config.budget.min_remaining, 0);
    let w = &config.workflows["engagement"];
    assert_eq!(w.max_latency, DEFAULT_MAX_LATENCY);
    assert!(w.enabled);
    assert_eq!(w.timezone, chrono_tz::UTC);
}

#[test]
fn every_error_is_reported_with_its_line_and_key() {
    let text = example_with("    window_days: 30", "    window_days: 0")
        .replacen("schedule: \"0 6 * * *\"", "schedule: \"61 6 * * *\"", 1)
        .replacen("timezone: UTC", "timezone: Mars/Olympus", 1)
        .replacen("score: Pendo_Engagement_Score__c", "score: Pendo_Events__c", 1)
        .replacen("minutes: { weight: 0.1, target: 600 }", "minutes: { weight: 0.1, target: 0 }", 1)
        .replacen("daily_share: 0.25", "daily_share: 1.5", 1)
        .replacen("template: engagement-scores", "template: engagement-scorez", 1)
        .replacen("login_url: http://127.0.0.1:8443", "login_url: http://login.example.com", 1)
        .replacen("field: Pendo_Account_Id__c", "field: Pendo Account", 1);
    let errors = load_err(&text);
    let expect = [
        ("connections.salesforce.login_url", "login_url:", "only https"),
        ("budget.daily_share", "daily_share:", "at most 1 (got 1.5)"),
        ("workflows.engagement.template", "template:", "unknown template `engagement-scorez`"),
        ("workflows.engagement.schedule", "schedule:", "not a valid cron"),
        ("workflows.engagement.timezone", "timezone:", "Mars/Olympus"),
        ("workflows.engagement.window_days", "window_days:", "between 1 and 180 (got 0)"),
    ];
    for (key, needle, message) in expect {
        let found =
            errors.errors.iter().find(|e| e.key == key).unwrap_or_else(|| panic!("no error for {key} in:\n{errors}"));
        assert_eq!(found.line, Some(line_of(&text, needle)), "{key}");
        assert!(found.message.contains(message), "{key}: {}", found.message);
    }
    // The template is unknown, so its own keys are not checked; every other error is there.
    assert_eq!(errors.errors.len(), 6, "{errors}");
    let rendered = errors.to_string();
    let window_line = line_of(&text, "window_days:");
    assert!(
        rendered.contains(&format!(
            "bad.yaml:{window_line}:5: workflows.engagement.window_days: must be between 1 and 180 (got 0)"
        )),
        "{rendered}"
    );
    assert_eq!(rendered.lines().count(), 6);
}

#[test]
fn template_keys_are_checked_too() {
    let text = STARTER
        .replacen("score: Pendo_Engagement_Score__c", "score: Pendo_Events__c", 1)
        .replacen("minutes: { weight: 0.1, target: 600 }", "minutes: { weight: 0.1, target: 0 }", 1)
        .replacen("field: Pendo_Account_Id__c", "field: Pendo Account", 1)
        .replacen("min_share: 0.5", "min_share: 0", 1)
        .replacen("group: custom", "group: agents", 1)
        .replacen("feature_adoption: { weight: 0.2, target: 1.0 }", "feature_adoption: { weight: 0.2, target: 2 }", 1)
        .replacen("extra_free_mail: [corp-mail.example]", "extra_free_mail: [Corp Mail]", 1);
    let errors = load_err(&text);
    let expect = [
        ("workflows.engagement.matching[0].group", "group: agents"),
        ("workflows.engagement.matching[1].field", "field: Pendo Account"),
        ("workflows.engagement.matching[2].min_share", "min_share: 0"),
        ("workflows.engagement.matching[2].extra_free_mail[0]", "extra_free_mail:"),
        ("workflows.engagement.score.minutes.target", "minutes: { weight"),
        ("workflows.engagement.score.feature_adoption.target", "feature_adoption: { weight"),
        ("workflows.engagement.fields.score", "score: Pendo_Events__c"),
    ];
    for (key, needle) in expect {
        let found =
            errors.errors.iter().find(|e| e.key == key).unwrap_or_else(|| panic!("no error for {key} in:\n{errors}"));
        assert_eq!(found.line, Some(line_of(&text, needle)), "{key}: {errors}");
    }
    assert_eq!(errors.errors.len(), expect.len(), "{errors}");
    let dup = errors.errors.iter().find(|e| e.key.ends_with("fields.score")).unwrap();
    assert!(dup.message.contains("already the target of `events`"), "{}", dup.message);
}

#[test]
fn zero_weights_and_missing_keys_are_reported() {
    let text = STARTER
        .replace("weight: 0.3", "weight: 0")
        .replace("weight: 0.2", "weight: 0")
        .replace("weight: 0.1", "weight: 0")
        .lines()
        .filter(|l| !l.starts_with("    schedule: \"0 6") && !l.starts_with("      client_id:"))
        .collect::<Vec<_>>()
        .join("\n");
    let errors = load_err(&text);
    // The other example workflows lose their schedules too; this test is about engagement.
    let keys: Vec<_> = errors
        .errors
        .iter()
        .map(|e| e.key.as_str())
        .filter(|k| !k.starts_with("workflows.") || k.starts_with("workflows.engagement."))
        .collect();
    assert_eq!(
        keys,
        ["connections.salesforce.auth.client_id", "workflows.engagement.schedule", "workflows.engagement.score"],
        "{errors}"
    );
    // A missing key is placed at the map that should hold it.
    assert_eq!(errors.errors[0].line, Some(line_of(&text, "auth:")));
    assert_eq!(errors.errors[1].line, Some(line_of(&text, "  engagement:")));
    assert_eq!(errors.errors[2].line, Some(line_of(&text, "    score:")));
    assert!(errors.errors[2].message.contains("sum to 0"));
}

#[test]
fn unknown_key_is_rejected_with_line_and_expected_keys() {
    let text = example_with("    window_days: 30", "    window_days: 30\n    windw: 3");
    let errors = load_err(&text);
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let e = &errors.errors[0];
    assert_eq!(e.line, Some(line_of(&text, "windw:")));
    assert_eq!(e.column, Some(5));
    assert_eq!(e.key, "workflows.engagement.windw");
    assert!(e.message.contains("unknown key `windw`"), "{}", e.message);
    assert!(e.message.contains("window_days"), "{}", e.message);
    assert!(errors.to_string().starts_with(&format!("bad.yaml:{}:5: ", e.line.unwrap())));
}

#[test]
fn reading_goes_on_past_unknown_keys_and_wrong_types() {
    let text = example_with("    window_days: 30", "    window_days: thirty\n    windw: 3")
        .replacen("  min_remaining: 5000", "  min_remaining: 5000\n  colour: red", 1)
        .replacen("minutes: { weight: 0.1, target: 600 }", "minutes: { weight: 0.1, target: 600, cap: 3 }", 1)
        .replacen("  url: sqlite://usagesync.db", "  url: sqlite://usagesync.db\n  pool:\n    size: 3\n    idle: 2", 1)
        .replacen("daily_share: 0.25", "daily_share: 1.5", 1)
        .replacen("timezone: UTC", "timezone: Mars/Olympus", 1);
    let errors = load_err(&text);
    let expect = [
        ("store.pool", "  pool:", "unknown key `pool`"),
        ("budget.daily_share", "daily_share:", "at most 1"),
        ("budget.colour", "colour:", "unknown key `colour`; expected one of: daily_share, min_remaining"),
        ("workflows.engagement.timezone", "timezone:", "Mars/Olympus"),
        ("workflows.engagement.window_days", "window_days:", "expected a whole number"),
        ("workflows.engagement.windw", "windw:", "unknown key `windw`"),
        ("workflows.engagement.score.minutes.cap", "minutes: {", "unknown key `cap`"),
    ];
    let got: Vec<_> = errors.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(got, expect.map(|(key, _, _)| key), "{errors}");
    for ((_, needle, message), error) in expect.iter().zip(&errors.errors) {
        assert_eq!(error.line, Some(line_of(&text, needle)), "{error}");
        assert!(error.message.contains(message), "{error}");
    }
}

#[test]
fn a_null_value_is_a_missing_key() {
    let text = example_with("    schedule: \"0 6 * * *\"", "    schedule:");
    let errors = load_err(&text);
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert_eq!(errors.errors[0].key, "workflows.engagement.schedule");
}

#[test]
fn syntax_and_type_errors_are_located() {
    let text = example_with("    window_days: 30", "    window_days: thirty");
    let errors = load_err(&text);
    assert_eq!(errors.errors[0].line, Some(line_of(&text, "window_days:")));
    assert_eq!(errors.errors[0].key, "workflows.engagement.window_days", "{errors}");
    assert_eq!(errors.errors[0].message, "expected a whole number, 0 or more");

    let errors = load_err("connections:\n  salesforce: [unclosed\nstore: {}\n");
    assert!(errors.errors[0].line.is_some(), "{errors}");
}

#[test]
fn literal_secret_is_rejected_without_echoing_it() {
    let text = example_with("client_secret: { env: SF_CLIENT_SECRET }", "client_secret: hunter2-very-secret");
    let errors = load_err(&text);
    assert_eq!(errors.errors.len(), 1, "{errors}");
    let e = &errors.errors[0];
    assert_eq!(e.key, "connections.salesforce.auth.client_secret");
    assert_eq!(e.line, Some(line_of(&text, "client_secret:")));
    assert!(e.message.contains("literal secret is not allowed"), "{}", e.message);
    assert!(e.message.contains("{env: NAME}"));
    assert!(!errors.to_string().contains("hunter2"));
}

#[test]
fn secret_with_both_or_neither_source_is_rejected() {
    let both = example_with("integration_key: { env: PENDO_INTEGRATION_KEY }", "integration_key: { env: A, file: /b }");
    let e = &load_err(&both).errors[0];
    assert_eq!(e.key, "connections.pendo.integration_key");
    assert!(e.message.contains("not both"));
}

#[test]
fn http_is_only_allowed_on_loopback_and_passwords_stay_out_of_store_urls() {
    let text = example_with("url: sqlite://usagesync.db", "url: postgres://u:pw@db.example/usagesync");
    let e = &load_err(&text).errors[0];
    assert_eq!(e.key, "store.url");
    assert!(e.message.contains("holds a password"));
    assert!(!e.message.contains("pw@"));

    let text = example_with(
        "url: sqlite://usagesync.db",
        "url: postgres://u@db.example/usagesync\n  password: { env: PGPASSWORD }",
    );
    let config = load_ok(&text);
    assert_eq!(config.store.kind, StoreKind::Postgres);
    assert_eq!(config.store.password, Some(Secret::Env("PGPASSWORD".into())));

    let text = example_with("base_url: http://127.0.0.1:8444", "base_url: https://app.eu.pendo.io");
    assert!(load_ok(&text).connections.pendo.base_url.is_some());
}

#[test]
fn pendo_queries_go_side_by_side_unless_configured_off() {
    assert!(load_ok(STARTER).connections.pendo.parallel_queries);
    let key = "integration_key: { env: PENDO_INTEGRATION_KEY }";
    let off = example_with(key, &format!("{key}\n    parallel_queries: false"));
    assert!(!load_ok(&off).connections.pendo.parallel_queries);
    let bad = example_with(key, &format!("{key}\n    parallel_queries: sometimes"));
    let errors = load_err(&bad).to_string();
    assert!(errors.contains("parallel_queries"), "{errors}");
}

#[test]
fn schedules_time_zones_and_field_names() {
    // croner keeps the pattern, with nicknames and day names normalised.
    for (schedule, kept) in [
        ("*/15 * * * *", "*/15 * * * *"),
        ("0 0 6 * * *", "0 0 6 * * *"),
        ("@daily", "0 0 * * *"),
        ("0 6 * * MON-FRI", "0 6 * * 1-5"),
    ] {
        let text = example_with("\"0 6 * * *\"", &format!("\"{schedule}\""));
        assert_eq!(load_ok(&text).workflows["engagement"].schedule.as_str(), kept);
    }
    for schedule in ["0 25 * * *", "every day", "0 6 * *"] {
        let text = example_with("\"0 6 * * *\"", &format!("\"{schedule}\""));
        assert_eq!(load_err(&text).errors[0].key, "workflows.engagement.schedule", "{schedule}");
    }
    let text = example_with("timezone: UTC", "timezone: Europe/Paris");
    assert_eq!(load_ok(&text).workflows["engagement"].timezone, chrono_tz::Europe::Paris);
    for field in ["ns__Score__c", "Score", "Pendo_Score__c"] {
        let text = example_with("score: Pendo_Engagement_Score__c", &format!("score: {field}"));
        load_ok(&text);
    }
    for field in ["1Score__c", "Score__x", "Pendo__Score", "Score___c", "Score_", "Sc-ore__c"] {
        let text = example_with("score: Pendo_Engagement_Score__c", &format!("score: {field}"));
        assert_eq!(load_err(&text).errors[0].key, "workflows.engagement.fields.score", "{field}");
    }
}

#[test]
fn store_may_be_a_plain_url() {
    let text = example_with("store:\n  url: sqlite://usagesync.db", "store: sqlite://state/usagesync.db");
    let config = load_ok(&text);
    assert_eq!(config.store.url, "sqlite://state/usagesync.db");
    assert_eq!(config.store.kind, StoreKind::Sqlite);

    let text = example_with("store:\n  url: sqlite://usagesync.db", "store: mysql://x@y/z");
    let e = &load_err(&text).errors[0];
    assert_eq!((e.key.as_str(), e.line), ("store.url", Some(line_of(&text, "store: mysql"))));

    let text = example_with("  url: sqlite://usagesync.db", "  url: sqlite://usagesync.db\n  pasword: x");
    let e = &load_err(&text).errors[0];
    assert_eq!((e.key.as_str(), e.line), ("store.pasword", Some(line_of(&text, "pasword"))));
    assert!(e.message.contains("expected one of: url, password"), "{e}");
}

#[test]
fn keys_of_another_flow_are_rejected() {
    let text = example_with(
        "      client_id: usagesync-emulator",
        "      client_id: usagesync-emulator\n      username: a@b.test",
    );
    let e = &load_err(&text).errors[0];
    assert_eq!(e.key, "connections.salesforce.auth.username");
    assert!(e.message.contains("not used by flow `client_credentials`"));

    let text = example_with("flow: client_credentials", "flow: jwt_bearer").replacen(
        "client_secret: { env: SF_CLIENT_SECRET }",
        "username: integration@usagesync.test\n      private_key: { file: keys/dev.key }",
        1,
    );
    let config = load_ok(&text);
    assert_eq!(config.connections.salesforce.auth.flow(), "jwt_bearer");
}

#[test]
fn secrets_resolve_from_env_and_file() {
    let env: HashMap<&str, &str> = HashMap::from([("SF_CLIENT_SECRET", "s3cret")]);
    let lookup = |name: &str| env.get(name).map(|v| (*v).to_owned());
    let value = Secret::Env("SF_CLIENT_SECRET".into()).resolve(&lookup).unwrap();
    assert_eq!(value.expose(), "s3cret");
    assert_eq!(format!("{value:?} {value}"), "[redacted] [redacted]");

    let missing = Secret::Env("NOPE".into()).resolve(&lookup).unwrap_err();
    assert!(missing.message.contains("NOPE is not set"));

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key");
    std::fs::write(&path, "from-file\n").unwrap();
    let value = Secret::File(path.clone()).resolve(&lookup).unwrap();
    assert_eq!(value.expose(), "from-file");
    let err = Secret::File(dir.path().join("absent")).resolve(&lookup).unwrap_err();
    assert!(err.message.contains("absent"), "{}", err.message);
}

#[test]
fn check_secrets_reports_each_missing_one() {
    let config = load_ok(STARTER);
    let none = |_: &str| None;
    let errors = config.check_secrets(&none).unwrap_err();
    let keys: Vec<_> = errors.errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(keys, ["connections.salesforce.auth.client_secret", "connections.pendo.integration_key"]);
    assert!(errors.to_string().contains("PENDO_INTEGRATION_KEY is not set"));
    let all = |_: &str| Some("x".to_owned());
    assert!(config.check_secrets(&all).is_ok());
}

#[test]
fn load_reads_a_file_and_rebases_relative_secret_files() {
    let dir = tempfile::tempdir().unwrap();
    let text = example_with("{ env: SF_CLIENT_SECRET }", "{ file: sf.secret }");
    let path = dir.path().join("usagesync.yaml");
    std::fs::write(&path, &text).unwrap();
    std::fs::write(dir.path().join("sf.secret"), "abc\n").unwrap();
    let config = load(&path).unwrap();
    let SalesforceAuth::ClientCredentials { client_secret, .. } = &config.connections.salesforce.auth else {
        panic!("flow")
    };
    assert_eq!(client_secret, &Secret::File(dir.path().join("sf.secret")));
    let env = |_: &str| Some("k".to_owned());
    assert!(config.check_secrets(&env).is_ok());

    let err = load(&dir.path().join("missing.yaml")).unwrap_err();
    assert!(err.to_string().contains("missing.yaml: cannot read the config file"), "{err}");
}

#[test]
fn redacted_yaml_shows_references_and_reloads_to_the_same_config() {
    let config = load_ok(STARTER);
    let yaml = config.redacted_yaml();
    assert!(yaml.contains("SF_CLIENT_SECRET"), "{yaml}");
    let again = load_ok(&yaml);
    assert_eq!(again.redacted_yaml(), yaml);
    assert_eq!(again.workflows["engagement"].schedule, config.workflows["engagement"].schedule);
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_text_never_panics(text in "\\PC*") {
        if let Err(errors) = load_str(&text, "fuzz.yaml") {
            proptest::prop_assert!(!errors.errors.is_empty());
        }
    }

    #[test]
    fn yaml_like_text_never_panics(text in "[a-z_:{}\\[\\]\\-\"' \n0-9.*&!|>#]{0,200}") {
        let _ = load_str(&text, "fuzz.yaml");
    }

    #[test]
    fn mutated_example_never_panics(cut in 0usize..2000, insert in "[a-z:{}\\[\\] \n\"-]{0,8}") {
        let mut text = STARTER.to_owned();
        let mut at = cut.min(text.len());
        while !text.is_char_boundary(at) { at -= 1; }
        text.insert_str(at, &insert);
        // A failed load always says why.
        if let Err(errors) = load_str(&text, "fuzz.yaml") {
            proptest::prop_assert!(!errors.errors.is_empty());
        }
    }
}

#[test]
fn verify_is_top_level_or_per_workflow_and_one_of_sample_or_all() {
    let config = load_ok(STARTER);
    assert_eq!(config.verify, Verify::Sample(200));
    assert_eq!(config.verify_for("engagement"), Verify::Sample(200));
    let without = STARTER.replacen("verify:", "# verify:", 1).replacen("  sample: 200", "#", 1);
    assert_eq!(load_ok(&without).verify, Verify::Sample(DEFAULT_VERIFY_SAMPLE), "the default is one query");
    let off = example_with("  sample: 200", "  sample: 0");
    assert_eq!(load_ok(&off).verify_for("engagement"), Verify::Off);
    let own = example_with("    # verify: { all: true }", "    verify: { all: true }");
    let config = load_ok(&own);
    assert_eq!((config.verify, config.verify_for("engagement")), (Verify::Sample(200), Verify::All));
    // What `usagesync config` writes back reads the same.
    let again = load_ok(&config.redacted_yaml());
    assert_eq!((again.verify, again.verify_for("engagement")), (Verify::Sample(200), Verify::All));

    let both = example_with("    # verify: { all: true }", "    verify: { all: true, sample: 10 }");
    let errors = load_err(&both);
    assert_eq!(errors.errors.len(), 1, "{errors}");
    assert_eq!(errors.errors[0].key, "workflows.engagement.verify.all");
    assert!(errors.errors[0].message.contains("not both"), "{errors}");
    let unknown = example_with("  sample: 200", "  sample: 200\n  every: 3");
    let errors = load_err(&unknown);
    assert_eq!(errors.errors[0].key, "verify.every", "{errors}");
    assert!(errors.errors[0].message.contains("expected one of: sample, all"), "{errors}");
}

#[test]
fn retention_defaults_to_30_days_and_is_checked_at_its_line() {
    assert_eq!(load_ok(STARTER).retention, Retention { history_days: 30 });
    let without = STARTER.replace("retention:", "# retention:").replace("  history_days: 30", "");
    assert_eq!(load_ok(&without).retention.history_days, DEFAULT_HISTORY_DAYS);
    let week = example_with("  history_days: 30", "  history_days: 7");
    assert_eq!(
        load_ok(&week).retention.cutoff(chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(10)),
        chrono::DateTime::UNIX_EPOCH + chrono::Duration::days(3)
    );
    for bad in ["0", "3651", "99999999999"] {
        let text = example_with("  history_days: 30", &format!("  history_days: {bad}"));
        let errors = load_err(&text);
        assert_eq!(errors.errors.len(), 1, "{errors}");
        let e = &errors.errors[0];
        assert_eq!((e.key.as_str(), e.line), ("retention.history_days", Some(line_of(&text, "history_days:"))));
        assert!(e.message.contains("between 1 and 3650"), "{e}");
    }
    let text = example_with("  history_days: 30", "  history_dayz: 30");
    let errors = load_err(&text);
    assert!(errors.to_string().contains(&format!("bad.yaml:{}:", line_of(&text, "history_dayz"))), "{errors}");
}

#[test]
fn windows_are_days_or_hours_and_hours_only_where_they_mean_something() {
    let w = |text: &str| load_ok(text).workflows["engagement"].clone();
    let days = w(&example_with("    window_days: 30", "    window: 30d"));
    assert_eq!((days.window, days.window_days(), days.window_includes_current), (WindowLength::Days(30), 30, false));
    // Hourly engagement scores need a score and fields without active days.
    let hourly = STARTER
        .replacen("    window_days: 30", "    window: 36h\n    window_includes_current: true", 1)
        .replacen("      active_days: { weight: 0.3, target: 20 }\n", "", 1)
        .replacen("      active_days: Pendo_Active_Days__c\n", "", 1);
    let h = w(&hourly);
    assert_eq!((h.window, h.window_days(), h.window_includes_current), (WindowLength::Hours(36), 2, true));
    assert_eq!(h.window(chrono::DateTime::UNIX_EPOCH).length, WindowLength::Hours(36));
    // Written back and read again: the same window.
    let again = load_ok(&load_ok(&hourly).redacted_yaml());
    assert_eq!(again.workflows["engagement"].window, WindowLength::Hours(36));
    assert!(again.workflows["engagement"].window_includes_current);
    // The starter's hourly alert loads.
    assert_eq!(load_ok(STARTER).workflows["usage-collapse"].window, WindowLength::Hours(6));

    let cases = [
        (example_with("    window_days: 30", "    window: 36h"), "active_days counts whole days"),
        (example_with("    window_days: 30", "    window: 3w"), "`3w` is not a window"),
        (example_with("    window_days: 30", "    window: 30é"), "`30é` is not a window"),
        (example_with("    window_days: 30", "    window: h"), "`h` is not a window"),
        (example_with("    window_days: 30", "    window: 721h"), "between 1 and 720 hours (got 721h)"),
        (example_with("    window_days: 30", "    window: 0d"), "between 1 and 180 days (got 0d)"),
        (example_with("    window_days: 30", "    window_days: 30\n    window: 30d"), "not both"),
        (example_with("    window_days: 14", "    window: 24h"), "counts in whole days"),
    ];
    for (text, message) in cases {
        let errors = load_err(&text);
        let key = errors.errors.iter().find(|e| e.message.contains(message));
        let key = key.unwrap_or_else(|| panic!("no error saying `{message}` in:\n{errors}"));
        assert!(key.key.ends_with(".window") || key.key.ends_with(".window_days"), "{}", key.key);
        assert!(key.line.is_some(), "located: {errors}");
    }
    // An hourly alert whose condition names active days is refused.
    let alert = STARTER.replacen(
        "      when: \"previous.events >= 200.0",
        "      when: \"active_days > 0.0 && previous.events >= 200.0",
        1,
    );
    assert!(load_err(&alert).to_string().contains("active_days counts whole days"));
}

#[test]
fn hierarchy_rules_and_rollup_fields_are_checked_at_their_lines() {
    let text = STARTER.replacen("        account_field: Name\n", "        account_field: Bad Name\n", 1).replacen(
        "    # rollup_fields:                # each parent",
        "    rollup_fields:\n      events: Pendo_Events__c\n      updated_at: Family_Updated__c\n    # x",
        1,
    );
    let errors = load_err(&text);
    let rollup = line_of(&text, "    rollup_fields:");
    let expect = [
        ("workflows.engagement.matching[3].account_field", line_of(&text, "account_field: Bad Name")),
        ("workflows.engagement.rollup_fields.events", rollup + 1),
        ("workflows.engagement.rollup_fields.updated_at", rollup + 2),
    ];
    for (key, line) in expect {
        let found =
            errors.errors.iter().find(|e| e.key == key).unwrap_or_else(|| panic!("no error for {key} in:\n{errors}"));
        assert_eq!(found.line, Some(line), "{key}: {errors}");
    }
    let own = errors.errors.iter().find(|e| e.key.ends_with("rollup_fields.events")).unwrap();
    assert!(own.message.contains("also in `fields`"), "{}", own.message);

    // A hierarchy rule twice is refused at its line.
    let twice = STARTER.replacen(
        "      - rule: pendo_metadata        # a Salesforce",
        "      - rule: pendo_parent\n        group: custom\n        field: p\n      - rule: pendo_metadata        # a Salesforce",
        1,
    );
    let errors = load_err(&twice);
    let e = errors.errors.iter().find(|e| e.key == "workflows.engagement.matching[5].rule").unwrap();
    assert!(e.message.contains("once"), "{errors}");
    // Only refining rules: nothing would ever match.
    let lone = STARTER.replacen(
        "      - rule: pendo_metadata\n        group: custom\n        field: sfdcaccountid\n      - rule: external_id\n        field: Pendo_Account_Id__c\n      - rule: pendo_parent          # a subsidiary",
        "      - rule: pendo_parent          # a subsidiary",
        1,
    );
    assert_ne!(lone, STARTER);
    let errors = load_err(&lone);
    assert!(
        errors.errors.iter().any(|e| e.key == "workflows.new-users.matching" && e.message.contains("refine")),
        "{errors}"
    );
    // rollup_fields belongs to engagement-scores alone.
    let alert = STARTER.replacen(
        "template: engagement-drop-alert",
        "template: engagement-drop-alert\n    rollup_fields: { events: X__c }",
        1,
    );
    assert!(load_err(&alert).errors.iter().any(|e| e.key.ends_with("rollup_fields")), "{}", load_err(&alert));
}
