//! The extraction against the Pendo emulator on 127.0.0.1: every figure is checked against a
//! computation straight from the emulator's stored data (not through the query engine), across
//! page boundaries, at the window's edges, and with hostile visitor e-mails seeded in.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use chrono::{DateTime, Utc};
use emulator::pendo::store::{DAY_MS, GuideEventType, Store, is_anonymous};
use emulator::pendo::{GenConfig, PendoConfig, PendoState, Running};
use engine::extract::{AccountFacts, AccountUsage, CoreFeatures, ExtractError, Extractor, Window, WindowLength};
use engine::matching::domain::email_domain;
use serde_json::{Value, json};

/// 2026-01-01T00:00Z: a fixed "today" so the data and the window never drift.
const ANCHOR: i64 = 1_767_225_600_000;
const DAYS: u32 = 30;

async fn start(accounts: usize) -> Running {
    let gc = GenConfig { seed: 11, accounts, days: DAYS, anchor_day_ms: Some(ANCHOR), ..GenConfig::default() };
    emulator::pendo::start("127.0.0.1:0", PendoState::generated(PendoConfig::default(), &gc)).await.unwrap()
}

fn client(emu: &Running) -> pendo::Client {
    let mut cfg = pendo::ClientConfig::new(&emu.base_url, "emulator-integration-key").unwrap();
    cfg.retry.max_attempts = 1;
    pendo::Client::new(cfg).unwrap()
}

/// Mid-morning of the anchor day: the window is the 30 whole days before it.
fn window() -> Window {
    Window::days(DateTime::<Utc>::from_timestamp_millis(ANCHOR + 9 * 3_600_000).unwrap(), DAYS)
}

async fn seed(emu: &Running, body: Value) {
    let resp =
        reqwest::Client::new().post(format!("{}/__emulator/seed", emu.base_url)).json(&body).send().await.unwrap();
    let status = resp.status();
    assert!(status.is_success(), "seed failed: {status} {}", resp.text().await.unwrap_or_default());
}

/// Engagement computed from the store's tables, the way the definitions read.
fn expected_usage(store: &Store, from: i64, to: i64, core: &BTreeSet<u32>) -> BTreeMap<String, AccountUsage> {
    let mut out: BTreeMap<String, AccountUsage> = BTreeMap::new();
    for a in &store.accounts {
        let md = a.metadata();
        let last = md.path("auto.lastvisit").as_i64();
        out.insert(
            a.id.to_string(),
            AccountUsage {
                account_id: a.id.to_string(),
                core_features_total: core.len() as u32,
                last_active: last.and_then(DateTime::<Utc>::from_timestamp_millis),
                ..AccountUsage::default()
            },
        );
    }
    let account = |i: u32| store.accounts[i as usize].id.to_string();
    let t = &store.page_rows;
    let mut days: BTreeMap<u32, HashSet<i64>> = BTreeMap::new();
    let mut visitors: BTreeMap<u32, HashSet<u32>> = BTreeMap::new();
    for i in t.range(from, to) {
        let u = out.get_mut(&account(t.account(i))).unwrap();
        u.events += u64::from(t.events(i));
        u.minutes += u64::from(t.minutes(i));
        days.entry(t.account(i)).or_default().insert(t.ts(i).div_euclid(DAY_MS));
        if !is_anonymous(&store.visitors[t.visitor(i) as usize].id) {
            visitors.entry(t.account(i)).or_default().insert(t.visitor(i));
        }
    }
    for (a, d) in days {
        out.get_mut(&account(a)).unwrap().active_days = d.len() as u64;
    }
    for (a, v) in visitors {
        out.get_mut(&account(a)).unwrap().active_visitors = v.len() as u64;
    }
    let f = &store.feature_rows;
    let mut features: BTreeMap<u32, HashSet<u32>> = BTreeMap::new();
    for i in f.range(from, to) {
        if core.contains(&f.item(i)) {
            features.entry(f.account(i)).or_default().insert(f.item(i));
        }
    }
    for (a, s) in features {
        out.get_mut(&account(a)).unwrap().core_features_used = s.len() as u32;
    }
    let mut seen: BTreeMap<u32, HashSet<(u32, u32)>> = BTreeMap::new();
    let mut done: BTreeMap<u32, HashSet<(u32, u32)>> = BTreeMap::new();
    for e in store.guide_events.iter().filter(|e| e.ts >= from && e.ts < to) {
        if is_anonymous(&store.visitors[e.visitor as usize].id) {
            continue;
        }
        let last_step = store.guides[e.guide as usize].step_ids.len() as u32 - 1;
        match e.kind {
            GuideEventType::GuideSeen => {
                seen.entry(e.account).or_default().insert((e.visitor, e.guide));
            }
            GuideEventType::GuideAdvanced if e.step == last_step => {
                done.entry(e.account).or_default().insert((e.visitor, e.guide));
            }
            _ => {}
        }
    }
    for (a, s) in seen {
        out.get_mut(&account(a)).unwrap().guides_seen = s.len() as u64;
    }
    for (a, s) in done {
        out.get_mut(&account(a)).unwrap().guides_completed = s.len() as u64;
    }
    out
}

fn core_items(store: &Store) -> BTreeSet<u32> {
    store
        .features
        .iter()
        .enumerate()
        .filter(|(_, f)| f.doc.path("isCoreEvent").to_json() == json!(true))
        .map(|(i, _)| i as u32)
        .collect()
}

fn by_id(v: Vec<AccountUsage>) -> BTreeMap<String, AccountUsage> {
    v.into_iter().map(|u| (u.account_id.clone(), u)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn engagement_matches_the_stored_data_across_pages() {
    let emu = start(40).await;
    let pendo = client(&emu);
    let from = ANCHOR - i64::from(DAYS) * DAY_MS;
    let expected = emu.state.with_store_read(|s| expected_usage(s, from, ANCHOR, &core_items(s)));
    assert!(expected.values().filter(|u| u.events > 0).count() > 20);
    assert!(expected.values().any(|u| u.guides_completed > 0 && u.guides_completed < u.guides_seen));

    // Small pages: every query crosses several page edges, the guide query mid-account.
    let small = Extractor::new(&pendo).with_page_rows(7);
    let got = small.engagement(&window(), &CoreFeatures::MarkedCore).await.unwrap();
    assert_eq!(by_id(got.clone()), expected);
    let stats = small.stats();
    assert!(stats.pendo_calls > 20, "{stats:?}");

    // Default pages: the same answer in one page per query plus the two catalogues.
    let big = Extractor::new(&pendo);
    let got_big = big.engagement(&window(), &CoreFeatures::MarkedCore).await.unwrap();
    assert_eq!(got_big, got);
    assert_eq!(big.stats().pendo_calls, 7);
    let parallel = Extractor::new(&pendo).with_page_rows(7).with_parallel_queries(true);
    assert_eq!(parallel.engagement(&window(), &CoreFeatures::MarkedCore).await.unwrap(), got);
    assert_eq!(parallel.stats(), small.stats());

    // Explicit ids give the same as the flags that name them; a subset gives fewer.
    let core_ids: Vec<String> =
        emu.state.with_store_read(|s| core_items(s).iter().map(|&i| s.features[i as usize].id.to_string()).collect());
    let by_ids = engine::extract::engagement(&pendo, &window(), &CoreFeatures::Ids(core_ids.clone())).await.unwrap();
    assert_eq!(by_ids, got);
    let one =
        engine::extract::engagement(&pendo, &window(), &CoreFeatures::Ids(vec![core_ids[0].clone()])).await.unwrap();
    assert!(one.iter().all(|u| u.core_features_total == 1 && u.core_features_used <= 1));
    assert!(one.iter().any(|u| u.core_features_used == 1));
    for u in &got {
        assert!((0.0..=1.0).contains(&u.feature_adoption()));
        assert!((0.0..=1.0).contains(&u.guide_completion()));
    }
    emu.shutdown().await;
}

/// Engagement kept between runs: each run reads only the days since the last one (plus two
/// trailing days for late events), and every run's figures are what the stored data says for
/// its window, across page edges, late events, a re-run the same day and a gap of days.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kept_engagement_reads_only_new_days_and_agrees_with_the_data() {
    const HOUR: i64 = 3_600_000;
    const N: u32 = 10;
    let emu = start(40).await;
    let pendo = client(&emu);
    let core = emu.state.with_store_read(core_items);
    let page_id = emu.state.with_store_read(|s| s.pages[0].id.to_string());
    let at = |day: i64, hour: i64| DateTime::<Utc>::from_timestamp_millis(ANCHOR + day * DAY_MS + hour * HOUR).unwrap();
    let run = |end: DateTime<Utc>, state| {
        let pendo = &pendo;
        async move {
            // Pages of 120 rows: every query crosses page edges, and a whole read of 41 accounts
            // × 10 days (at most 410 day sums) fits in the four pages it may take.
            let x = Extractor::new(pendo).with_page_rows(120);
            let w = Window::days(end, N);
            let (usage, state) = x.engagement_kept(&w, &CoreFeatures::MarkedCore, state).await.unwrap();
            if let Some(s) = &state {
                // Expansion's sustained-usage milestone takes its days from the state.
                let read = Extractor::new(pendo).daily_events(&w).await.unwrap();
                assert_eq!(s.daily_events(), read, "the kept day sums are the days' events");
            }
            (by_id(usage), state, x.stats())
        }
    };
    let day_start = |t: DateTime<Utc>| t.timestamp_millis() - t.timestamp_millis().rem_euclid(DAY_MS);
    let expect = |end: DateTime<Utc>| {
        let to = day_start(end);
        emu.state.with_store_read(|s| expected_usage(s, to - i64::from(N) * DAY_MS, to, &core))
    };

    // The first run reads the whole window and keeps it.
    let first_end = at(-10, 9);
    let (got, state, whole) = run(first_end, None).await;
    assert_eq!(got, expect(first_end));
    assert!(got.values().filter(|u| u.events > 0).count() > 20);
    assert!(state.is_some(), "every day of the window has events: the state is kept");
    // Two days later, with a late event on a day the last run already read (the day before its
    // end) from a visitor not seen before: the increment reads 4 days, and sees it.
    seed(
        &emu,
        json!({
            "visitors": [{"visitorId": "late-1", "accountId": "late-acct"}],
            "accounts": [{"accountId": "late-acct"}],
            "events": [{"kind": "page", "id": page_id, "visitorId": "late-1", "accountId": "late-acct",
                        "time": day_start(first_end) - DAY_MS + 5 * HOUR, "numEvents": 9, "numMinutes": 4}],
        }),
    )
    .await;
    let second_end = at(-8, 9);
    let (got, state, inc) = run(second_end, state).await;
    let want = expect(second_end);
    assert_eq!(got, want);
    assert_eq!((want["late-acct"].events, want["late-acct"].active_visitors), (9, 1));
    assert!(state.is_some());
    // Distinct visitors over 4 days are not 4/10 of those over 10, nor are the account list and
    // catalogues, read whole every run.
    assert!(inc.rows * 4 < whole.rows * 3, "an increment reads fewer rows: {inc:?} against {whole:?}");
    // Again the same day, hours later: the trailing days only.
    let third_end = at(-8, 20);
    let (got, state, _) = run(third_end, state).await;
    assert_eq!(got, expect(third_end));
    // Six days on, and then past the window's length: still the data's figures.
    let fourth_end = at(-2, 1);
    let (got, state, _) = run(fourth_end, state).await;
    assert_eq!(got, expect(fourth_end));
    let fifth_end = at(0, 9) + chrono::Duration::hours(1);
    let (got, state, _) = run(fifth_end, state).await;
    assert_eq!(got, expect(fifth_end));
    // The state survives its encoding.
    let bytes = state.as_ref().and_then(|s| s.encode()).unwrap();
    let back = engine::extract::UsageState::decode(&bytes);
    assert!(back.is_some());
    let (again, _, _) = run(fifth_end, back).await;
    assert_eq!(again, got);

    // A subscription too large for four pages of day sums is read as totals and nothing is kept:
    // the same figures, and no day rows asked for.
    let small = Extractor::new(&pendo).with_page_rows(100);
    let (usage, state) =
        small.engagement_kept(&Window::days(fifth_end, N), &CoreFeatures::MarkedCore, None).await.unwrap();
    assert!(state.is_none());
    assert_eq!(by_id(usage), expect(fifth_end));
    let totals = Extractor::new(&pendo).with_page_rows(100);
    totals.engagement(&Window::days(fifth_end, N), &CoreFeatures::MarkedCore).await.unwrap();
    assert_eq!(small.stats().pendo_calls, totals.stats().pendo_calls + 1, "one more: the account list read first");
    emu.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn window_edges_and_idle_accounts() {
    let emu = start(5).await;
    let pendo = client(&emu);
    let (page_id, feature_id) =
        emu.state.with_store_read(|s| (s.pages[0].id.to_string(), s.features[0].id.to_string()));
    let from = ANCHOR - i64::from(DAYS) * DAY_MS;
    seed(
        &emu,
        json!({
            "accounts": [{"accountId": "edge-acct"}, {"accountId": "idle-acct"}],
            "visitors": [
                {"visitorId": "edge-1", "accountId": "edge-acct", "metadata": {"agent": {"email": "e@edge.example"}}},
                {"visitorId": "idle-1", "accountId": "idle-acct", "metadata": {"agent": {"email": "i@idle.example"}}},
            ],
            "events": [
                // One hour before the window: excluded.
                {"kind": "page", "id": page_id, "visitorId": "edge-1", "accountId": "edge-acct", "time": from - 3_600_000, "numEvents": 1000, "numMinutes": 100},
                // The first hour of the window and the last hour of it: included.
                {"kind": "page", "id": page_id, "visitorId": "edge-1", "accountId": "edge-acct", "time": from, "numEvents": 3, "numMinutes": 2},
                {"kind": "page", "id": page_id, "visitorId": "edge-1", "accountId": "edge-acct", "time": ANCHOR - 3_600_000, "numEvents": 4, "numMinutes": 1},
                // The day containing `end`: excluded (still incomplete).
                {"kind": "page", "id": page_id, "visitorId": "edge-1", "accountId": "edge-acct", "time": ANCHOR, "numEvents": 500, "numMinutes": 50},
                {"kind": "feature", "id": feature_id, "visitorId": "edge-1", "accountId": "edge-acct", "time": ANCHOR + 3_600_000, "numEvents": 1},
            ],
        }),
    )
    .await;
    let got = by_id(engine::extract::engagement(&pendo, &window(), &CoreFeatures::MarkedCore).await.unwrap());
    let edge = &got["edge-acct"];
    assert_eq!((edge.events, edge.minutes, edge.active_days, edge.active_visitors), (7, 3, 2, 1));
    assert_eq!(edge.core_features_used, 0, "the feature event after the window is not counted");
    // An account with visitors but nothing in the window is reported, with zeros.
    let idle = &got["idle-acct"];
    assert_eq!((idle.events, idle.minutes, idle.active_days, idle.active_visitors, idle.guides_seen), (0, 0, 0, 0, 0));
    assert_eq!((idle.feature_adoption(), idle.guide_completion()), (0.0, 0.0));
    assert!(idle.core_features_total > 0);

    let err = engine::extract::engagement(
        &pendo,
        &Window { length: WindowLength::Days(0), ..window() },
        &CoreFeatures::MarkedCore,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ExtractError::InvalidWindow(WindowLength::Days(0))));
    emu.shutdown().await;
}

/// Hourly windows and windows that include the current period, against the stored hourly rows:
/// every figure but active days (a day count, which hourly windows do not hold) agrees.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hourly_windows_and_the_current_period() {
    const HOUR: i64 = 3_600_000;
    let emu = start(30).await;
    let pendo = client(&emu);
    let core = emu.state.with_store_read(core_items);
    // Five days before the anchor, at 15:20: inside the generated month, mid-hour.
    let end_ms = ANCHOR - 5 * DAY_MS + 15 * HOUR + 20 * 60_000;
    let end = DateTime::<Utc>::from_timestamp_millis(end_ms).unwrap();
    let this_hour = end_ms - end_ms.rem_euclid(HOUR);
    let today = end_ms - end_ms.rem_euclid(DAY_MS);
    let expect = |from: i64, to: i64, hourly: bool| {
        let mut e = emu.state.with_store_read(|s| expected_usage(s, from, to, &core));
        if hourly {
            e.values_mut().for_each(|u| u.active_days = 0);
        }
        e
    };
    let get = |w: Window| {
        let pendo = &pendo;
        async move { by_id(engine::extract::engagement(pendo, &w, &CoreFeatures::MarkedCore).await.unwrap()) }
    };
    let hours = |n, include_current| Window { end, length: WindowLength::Hours(n), include_current };

    // The six whole hours before this one.
    let six = get(hours(6, false)).await;
    assert_eq!(six, expect(this_hour - 6 * HOUR, this_hour, true));
    assert!(six.values().any(|u| u.events > 0), "the hours hold events");
    // With the current hour: five whole hours and this one.
    let six_now = get(hours(6, true)).await;
    assert_eq!(six_now, expect(this_hour - 5 * HOUR, this_hour + HOUR, true));
    assert_ne!(six_now, six, "the current hour's events count");
    // The window before (what a drop compares with) is the six hours before those.
    assert_eq!(get(hours(6, true).before()).await, expect(this_hour - 11 * HOUR, this_hour - 5 * HOUR, true));
    // Days, with today: six whole days and today so far.
    let week_now = get(Window { end, length: WindowLength::Days(7), include_current: true }).await;
    assert_eq!(week_now, expect(today - 6 * DAY_MS, today + DAY_MS, false));
    assert_ne!(week_now, get(Window::days(end, 7)).await);
    emu.shutdown().await;
}

/// Facts computed from the stored visitors and accounts.
fn expected_facts(store: &Store, fields: &[(&str, &str)]) -> BTreeMap<String, AccountFacts> {
    let mut out: BTreeMap<String, AccountFacts> = BTreeMap::new();
    for a in &store.accounts {
        let md = a.metadata();
        let mut metadata = BTreeMap::new();
        for (g, f) in fields {
            match md.path(&format!("{g}.{f}")).to_json() {
                Value::Null => {}
                Value::String(s) => {
                    metadata.insert(format!("{g}.{f}"), s);
                }
                v => {
                    metadata.insert(format!("{g}.{f}"), v.to_string());
                }
            }
        }
        out.insert(
            a.id.to_string(),
            AccountFacts {
                account_id: a.id.to_string(),
                metadata: metadata.into_iter().collect(),
                ..Default::default()
            },
        );
    }
    let mut counts: BTreeMap<String, BTreeMap<String, u32>> = BTreeMap::new();
    for v in store.visitors.iter().filter(|v| !is_anonymous(&v.id)) {
        let md = v.metadata();
        let Some(domain) = md.path("agent.email").as_str().and_then(email_domain) else { continue };
        let mut ids: Vec<String> = md
            .path("auto.accountids")
            .to_json()
            .as_array()
            .map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect())
            .unwrap_or_default();
        ids.sort();
        ids.dedup();
        for id in ids {
            let f =
                out.entry(id.clone()).or_insert_with(|| AccountFacts { account_id: id.clone(), ..Default::default() });
            f.visitors_with_email += 1;
            *counts.entry(id).or_default().entry(domain.clone()).or_default() += 1;
        }
    }
    for (id, c) in counts {
        let mut d: Vec<(String, u32)> = c.into_iter().collect();
        d.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
        if let Some(f) = out.get_mut(&id) {
            f.email_domains = d;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn facts_survive_hostile_emails_and_count_every_account() {
    let emu = start(30).await;
    let pendo = client(&emu);
    let hostile = [
        "  MIXED.Case@Shared.Example.COM.  ",
        "\"quoted@evil.example\"@shared.example.com",
        "back\\slash@bad\\host.com",
        "no-at-sign.example.com",
        "two@@shared.example.com",
        "trailing@shared.example.com...",
        "space@shared example.com",
        "nodot@localhost",
        "unicode@BÜCHER.example",
        "",
        "\u{202e}rtl@shared.example.com\u{0}",
    ];
    let visitors: Vec<Value> = hostile
        .iter()
        .enumerate()
        .map(|(i, e)| {
            json!({"visitorId": format!("hostile-{i}"), "accountId": "hostile-acct",
                   "metadata": {"agent": {"email": e}}})
        })
        .chain([json!({
            // One visitor of two accounts counts for both.
            "visitorId": "shared-visitor", "accountId": "hostile-acct",
            "metadata": {"agent": {"email": "both@shared.example.com"},
                         "auto": {"accountids": ["hostile-acct", "other-acct"]}},
        })])
        .collect();
    seed(&emu, json!({"accounts": [{"accountId": "hostile-acct"}, {"accountId": "other-acct"}], "visitors": visitors}))
        .await;

    let fields = [("custom", "sfdcaccountid"), ("custom", "arr"), ("agent", "website"), ("custom", "nothere")];
    let owned: Vec<(String, String)> = fields.iter().map(|(g, f)| ((*g).to_string(), (*f).to_string())).collect();
    let expected = emu.state.with_store_read(|s| expected_facts(s, &fields));
    let small = Extractor::new(&pendo).with_page_rows(9);
    let got: BTreeMap<String, AccountFacts> =
        small.account_facts(&owned).await.unwrap().into_iter().map(|f| (f.account_id.clone(), f)).collect();
    assert_eq!(got, expected);
    assert!(small.stats().pendo_calls > 10);

    let h = &got["hostile-acct"];
    assert_eq!(
        h.email_domains,
        vec![("shared.example.com".to_string(), 5), ("bücher.example".to_string(), 1)],
        "{h:?}"
    );
    assert_eq!(h.visitors_with_email, 6);
    assert_eq!(got["other-acct"].email_domains, vec![("shared.example.com".to_string(), 1)]);
    assert!(got.values().any(|f| f.metadata_value("custom.sfdcaccountid").is_some()));
    assert!(got.values().all(|f| f.metadata_value("custom.nothere").is_none()));
    assert!(got.values().filter(|f| f.visitors_with_email > 0).count() >= 30);

    let parallel = Extractor::new(&pendo).with_page_rows(9).with_parallel_queries(true);
    let in_parallel = parallel.account_facts(&owned).await.unwrap();
    assert_eq!(in_parallel.into_iter().map(|f| (f.account_id.clone(), f)).collect::<BTreeMap<_, _>>(), got);
    let same = engine::extract::account_facts(&pendo, &owned).await.unwrap();
    assert_eq!(same.into_iter().map(|f| (f.account_id.clone(), f)).collect::<BTreeMap<_, _>>(), got);

    let bad = engine::extract::account_facts(&pendo, &[("custom".into(), "a\"b".into())]).await.unwrap_err();
    assert!(matches!(bad, ExtractError::InvalidField { .. }), "{bad}");
    emu.shutdown().await;
}

/// The engine runs extractions on spawned tasks: the futures must be `Send`.
#[test]
fn extraction_futures_are_send() {
    fn send<T: Send>(_: T) {}
    let pendo = pendo::Client::new(pendo::ClientConfig::new("http://127.0.0.1:9", "k").unwrap()).unwrap();
    let x = Extractor::new(&pendo);
    send(x.engagement(&window(), &CoreFeatures::MarkedCore));
    send(x.account_facts(&[]));
    send(engine::extract::engagement(&pendo, &window(), &CoreFeatures::MarkedCore));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_query_is_named() {
    let emu = start(3).await;
    let mut cfg = pendo::ClientConfig::new(&emu.base_url, "wrong-key").unwrap();
    cfg.retry.max_attempts = 1;
    let pendo = pendo::Client::new(cfg).unwrap();
    let err = engine::extract::engagement(&pendo, &window(), &CoreFeatures::MarkedCore).await.unwrap_err();
    let ExtractError::Pendo { query, source } = &err else { panic!("{err}") };
    assert_eq!(source.status(), Some(403));
    assert!(err.to_string().contains(query), "{err}");
    assert!(!err.is_retryable());
    let err = engine::extract::account_facts(&pendo, &[]).await.unwrap_err();
    assert!(matches!(err, ExtractError::Pendo { .. }), "{err}");
    emu.shutdown().await;
}

/// Peak resident set size of this process in bytes (Linux), 0 elsewhere.
fn peak_rss_bytes() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

/// Measurement, not a check: `EXTRACT_BENCH_URL=http://127.0.0.1:PORT cargo test --release -p
/// engine --test it -- --ignored --nocapture extract::bench` against `cargo run --release -p pendo
/// --example pendo_emulator -- serve --accounts N --days 30` in another process, so the peak RSS
/// printed is the extraction's alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark; needs an emulator URL in EXTRACT_BENCH_URL"]
async fn bench_extraction() {
    let Ok(url) = std::env::var("EXTRACT_BENCH_URL") else { return };
    let pendo = pendo::Client::new(pendo::ClientConfig::new(&url, "emulator-integration-key").unwrap()).unwrap();
    let rss_before = peak_rss_bytes();
    let page_rows = std::env::var("EXTRACT_BENCH_PAGE_ROWS").ok().and_then(|v| v.parse().ok());
    let x = Extractor::new(&pendo)
        .with_page_rows(page_rows.unwrap_or(engine::extract::DEFAULT_PAGE_ROWS))
        .with_parallel_queries(std::env::var("EXTRACT_BENCH_PARALLEL").is_ok_and(|v| v == "1"));
    let end = Utc::now();
    let t = std::time::Instant::now();
    let usage = x.engagement(&Window::days(end, 30), &CoreFeatures::MarkedCore).await.unwrap();
    let t_usage = t.elapsed();
    let after_usage = x.stats();
    let t = std::time::Instant::now();
    let fields = [("custom".to_string(), "sfdcaccountid".to_string())];
    let facts = x.account_facts(&fields).await.unwrap();
    let t_facts = t.elapsed();
    let all = x.stats();
    println!(
        "engagement: {} accounts, {:.2?}, {} calls, {} rows | facts: {} accounts, {:.2?}, {} calls, {} rows | \
         peak RSS before {} MB, after {} MB",
        usage.len(),
        t_usage,
        after_usage.pendo_calls,
        after_usage.rows,
        facts.len(),
        t_facts,
        all.pendo_calls - after_usage.pendo_calls,
        all.rows - after_usage.rows,
        rss_before / 1_000_000,
        peak_rss_bytes() / 1_000_000,
    );
}

/// A fake Pendo whose every aggregation answers `body` with status 200.
async fn fake_pendo(body: &'static str) -> pendo::Client {
    let app = axum::Router::new().route("/api/v1/aggregation", axum::routing::post(move || async move { body }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    let mut cfg = pendo::ClientConfig::new(&format!("http://{addr}"), "k").unwrap();
    cfg.retry.max_attempts = 1;
    pendo::Client::new(cfg).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_pages_keep_their_errors_apart() {
    // A row the fold refuses is the fold's error, naming the query, not a Pendo failure.
    let pendo = fake_pendo(r#"{"results": [{"accountId": "a1"}, {"name": "no id"}, {"accountId": "a3"}]}"#).await;
    let err = engine::extract::account_facts(&pendo, &[]).await.unwrap_err();
    let ExtractError::BadRow { query, field, snippet } = &err else { panic!("{err}") };
    assert_eq!((*query, *field), ("account metadata", "accountId"));
    assert!(snippet.contains("no id"), "{snippet}");
    // A body cut short mid-page is Pendo's failure, with the decode error inside.
    let pendo = fake_pendo(r#"{"results": [{"accountId": "a1"}, {"accountId": "#).await;
    let err = engine::extract::account_facts(&pendo, &[]).await.unwrap_err();
    let ExtractError::Pendo { query, source } = &err else { panic!("{err}") };
    assert_eq!(*query, "account metadata");
    assert!(matches!(source, pendo::Error::Decode { .. }), "{source}");
}

/// Pages whose bodies break off mid-way: the extraction reads on from the last row each one
/// brought, and every figure (whole read and totals alike) is still the stored data's, no row
/// counted twice or lost. Breaks past the limit in a row fail the extraction, naming the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_that_break_off_are_read_on_from_their_last_row() {
    let emu = start(40).await;
    // Retries as configured for runs (the unpaged catalogue reads ask again for a broken body).
    let mut cfg = pendo::ClientConfig::new(&emu.base_url, "emulator-integration-key").unwrap();
    cfg.retry.initial_backoff = std::time::Duration::from_millis(10);
    let pendo = pendo::Client::new(cfg).unwrap();
    let from = ANCHOR - i64::from(DAYS) * DAY_MS;
    let expected = emu.state.with_store_read(|s| expected_usage(s, from, ANCHOR, &core_items(s)));
    let cut = |times: u32, bytes: u64| {
        let url = format!("{}/__emulator/faults", emu.base_url);
        async move {
            let rules = json!({"rules": [
                {"method": "POST", "pathPrefix": "/api/v1/aggregation", "status": 0, "cutAfterBytes": bytes, "times": times}
            ]});
            let resp = reqwest::Client::new().put(url).json(&rules).send().await.unwrap();
            assert!(resp.status().is_success());
        }
    };
    let calls = || emu.state.usage().by_endpoint.get("POST /api/v1/aggregation").copied().unwrap_or(0);

    // Paged queries whose pages break off, each after a few rows: they read on from the last
    // row each time, so a break costs one more call and no row (with a client that never asks
    // twice itself, only the read-on can succeed).
    let once = client(&emu);
    let before = calls();
    let clean = engine::extract::account_facts(&once, &[]).await.unwrap();
    let one_read = calls() - before;
    cut(5, 1_000).await;
    let before = calls();
    assert_eq!(engine::extract::account_facts(&once, &[]).await.unwrap(), clean);
    // (A cut that falls on an answer shorter than 1,000 bytes leaves it whole.)
    assert!((one_read + 1..=one_read + 5).contains(&(calls() - before)), "{} calls", calls() - before);

    // The next six aggregation answers break off after 2,000 bytes, wherever they fall (the
    // unpaged catalogue reads ask again for the whole body).
    cut(6, 2_000).await;
    let got =
        Extractor::new(&pendo).with_page_rows(120).engagement(&window(), &CoreFeatures::MarkedCore).await.unwrap();
    assert_eq!(by_id(got), expected);

    let w = Window::days(DateTime::<Utc>::from_timestamp_millis(ANCHOR + 9 * 3_600_000).unwrap(), DAYS);
    let x = Extractor::new(&pendo).with_page_rows(120);
    let (whole, state) = x.engagement_kept(&w, &CoreFeatures::MarkedCore, None).await.unwrap();
    cut(5, 1_000).await;
    let x = Extractor::new(&pendo).with_page_rows(120);
    let (broken, broken_state) = x.engagement_kept(&w, &CoreFeatures::MarkedCore, None).await.unwrap();
    assert_eq!(by_id(broken), by_id(whole));
    let encoded = |s: Option<engine::extract::UsageState>| s.and_then(|s| s.encode());
    assert_eq!(encoded(broken_state), encoded(state), "the kept state is the same");

    // Breaks before the first row, four in a row, are one too many (a paged query alone).
    cut(4, 10).await;
    let err = engine::extract::account_facts(&pendo, &[]).await.unwrap_err();
    let ExtractError::Pendo { query, source } = &err else { panic!("{err}") };
    assert_eq!(*query, "account metadata");
    assert!(matches!(source, pendo::Error::Interrupted { rows: 0, .. }), "{source}");
    cut(3, 10).await;
    assert_eq!(engine::extract::account_facts(&pendo, &[]).await.unwrap(), clean);
    emu.shutdown().await;
}
