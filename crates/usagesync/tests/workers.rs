//! Several daemons on one PostgreSQL store share the live NPS load, through the real binary:
//! a burst of webhooks sent round-robin to one, two or three daemons within one batching window
//! is one batch, written once at the same Salesforce calls; a daemon killed with SIGKILL while
//! it holds a batch has its events taken over by another once its claim lapses (leases
//! shortened with `USAGESYNC_TEST_RUN_LEASE_MS`); two answers of one visitor sent to two daemons under slow
//! Salesforce calls end with the newer one on the Contact every time; and `sync nps` under a
//! 5/s Pendo throttle writes every answer. The store is a fresh schema in
//! `USAGESYNC_TEST_POSTGRES_URL` (default the local test database), dropped afterwards;
//! `USAGESYNC_SKIP_POSTGRES=1` skips the tests that need it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

// A binary of its own, not a module of `it`: its daemons run with leases shortened to a second,
// which other tests loading the machine side by side would make lapse.
#[path = "it/support.rs"]
#[allow(dead_code)] // this binary uses part of the shared support
mod support;

use support::{Emulators, bin, emulate, eventually, request};

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use serde_json::{Value, json};

/// How long a daemon may take to write what it was sent.
const WAIT: Duration = Duration::from_secs(60);

fn emulators() -> Emulators {
    emulate(&["--seed-salesforce", "--days", "10", "--accounts", "15"])
}

/// A fresh schema on the test server, dropped when this goes out of scope.
struct Schema {
    url: String,
    name: String,
}

impl Schema {
    fn new() -> Option<Schema> {
        if std::env::var("USAGESYNC_SKIP_POSTGRES").is_ok_and(|v| v == "1") {
            eprintln!("USAGESYNC_SKIP_POSTGRES=1: skipped");
            return None;
        }
        let url = std::env::var("USAGESYNC_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let name = format!("workers_{:016x}", rand::random::<u64>());
        let schema = Schema { url, name };
        let store = runtime().block_on(engine::store::open_postgres_schema(&schema.url, &schema.name));
        drop(store.unwrap_or_else(|e| panic!("PostgreSQL unavailable (USAGESYNC_SKIP_POSTGRES=1 skips): {e}")));
        Some(schema)
    }

    /// The store location every daemon gets: the schema through the connection's search_path.
    fn location(&self) -> String {
        let separator = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{separator}options=-c%20search_path%3D{}", self.url, self.name)
    }

    /// Contact outcomes recorded per answer key, over every nps run of every worker: (updated,
    /// unchanged).
    fn contact_outcomes(&self) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
        runtime().block_on(async {
            let store = engine::store::open_postgres_schema(&self.url, &self.name).await.unwrap();
            let (mut per_key, mut unchanged) = (BTreeMap::new(), BTreeMap::new());
            for run in store.list_runs(Some("nps"), 0).await.unwrap() {
                let outcomes = store.run_outcomes(run.id, &engine::store::OutcomeFilter::default()).await.unwrap();
                for o in outcomes {
                    match (o.object.as_str(), o.action) {
                        ("Contact", engine::store::Action::Updated) => *per_key.entry(o.key).or_insert(0) += 1,
                        ("Contact", engine::store::Action::Unchanged) => *unchanged.entry(o.key).or_insert(0) += 1,
                        _ => {}
                    }
                }
            }
            (per_key, unchanged)
        })
    }
}

impl Schema {
    fn store<T>(&self, f: impl AsyncFnOnce(&dyn engine::store::Store) -> T) -> T {
        runtime().block_on(async {
            let store = engine::store::open_postgres_schema(&self.url, &self.name).await.unwrap();
            f(store.as_ref()).await
        })
    }

    /// Inbox events not yet marked processed: a batch marks its events only after its last
    /// Salesforce call, so 0 means every batch sent so far has finished.
    fn pending(&self) -> u64 {
        self.store(async |store| store.inbox_counts().await.unwrap().pending)
    }

    /// The nps batches (each records a run of its own) that recorded an answer of `prefix`'s
    /// visitors.
    fn batches(&self, prefix: &str) -> usize {
        let marker = format!(":{prefix}-v");
        self.store(async |store| {
            let mut n = 0;
            for run in store.list_runs(Some("nps"), 0).await.unwrap() {
                let outcomes = store.run_outcomes(run.id, &engine::store::OutcomeFilter::default()).await.unwrap();
                n += usize::from(outcomes.iter().any(|o| o.key.contains(&marker)));
            }
            n
        })
    }

    /// Who holds a live claim on inbox events now.
    fn claimers(&self) -> Vec<String> {
        self.store(async |store| store.event_claimers(chrono::Utc::now()).await.unwrap())
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let _ = runtime().block_on(engine::store::drop_postgres_schema(&self.url, &self.name));
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn config(dir: &Path, emu: &Emulators, store: &str) -> PathBuf {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/usagesync.yaml"))
        .unwrap()
        .replace("http://127.0.0.1:8443", &emu.salesforce)
        .replace("http://127.0.0.1:8444", &emu.pendo)
        .replace("sqlite://usagesync.db", store)
        .replace("    enabled: true ", "    enabled: false ")
        // No reconciliation during the tests: only the webhooks write.
        .replace("schedule: \"*/15 * * * *\"", "schedule: \"0 0 1 1 *\"");
    let path = dir.join("usagesync.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

struct Daemon {
    child: Child,
    url: String,
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn daemon(cfg: &Path) -> Daemon {
    daemon_with_lease(cfg, 1000)
}

fn daemon_with_lease(cfg: &Path, lease_ms: u64) -> Daemon {
    let mut child = bin()
        .arg("--config")
        .arg(cfg)
        .args(["run", "--listen", "127.0.0.1:0", "--grace-seconds", "5"])
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .env("USAGESYNC_TEST_RUN_LEASE_MS", lease_ms.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = BufReader::new(child.stdout.take().unwrap()).lines().next().unwrap().unwrap();
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).unwrap().to_owned();
    Daemon { child, url }
}

/// Contacts keyed by visitor id (`{prefix}-v{i}`), over ten Accounts.
fn contacts(emu: &Emulators, prefix: &str, n: usize) -> Vec<(String, String)> {
    let (_, accounts) = request(&emu.salesforce, "GET", "/__emulator/records/Account", None);
    let owner = accounts[0]["OwnerId"].as_str().unwrap().to_owned();
    let rows: Vec<Value> = (0..10)
        .map(|i| json!({"Name": format!("{prefix} Co {i}"), "OwnerId": owner, "Pendo_Engagement_Score__c": 60}))
        .collect();
    let (status, body) = request(&emu.salesforce, "POST", "/__emulator/records/Account", Some(&json!(rows)));
    assert_eq!(status, 200, "{body}");
    let accounts: Vec<String> = body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().into()).collect();
    let visitors: Vec<String> = (0..n).map(|i| format!("{prefix}-v{i}")).collect();
    let rows: Vec<Value> = visitors
        .iter()
        .enumerate()
        .map(|(i, v)| json!({"LastName": v, "AccountId": accounts[i % 10], "Pendo_Visitor_Id__c": v}))
        .collect();
    let (status, body) = request(&emu.salesforce, "POST", "/__emulator/records/Contact", Some(&json!(rows)));
    assert_eq!(status, 200, "{body}");
    let ids = body["ids"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_owned());
    visitors.into_iter().zip(ids).collect()
}

fn answer(visitor: &str, account: &str, rating: i64, timestamp: i64) -> Value {
    json!({
        "event": "npsSubmitted", "visitorId": visitor, "accountId": account, "timestamp": timestamp,
        "uniqueId": format!("{visitor}-{timestamp}"),
        "properties": {"nps": {"rating": rating, "reason": format!("said at {timestamp}")}},
    })
}

fn post(daemon: &Daemon, body: &Value) {
    let (status, reply) = request(&daemon.url, "POST", "/webhooks/pendo", Some(body));
    assert_eq!(status, 202, "{reply}");
}

fn contact(emu: &Emulators, id: &str) -> Value {
    let (_, all) = request(&emu.salesforce, "GET", "/__emulator/records/Contact", None);
    all.as_array().unwrap().iter().find(|c| c["Id"] == id).cloned().unwrap_or(Value::Null)
}

/// Salesforce calls so far by kind (`rest`, `query`, `collections`, …), logins left out.
fn salesforce_calls_by_kind(emu: &Emulators) -> BTreeMap<String, u64> {
    let (_, usage) = request(&emu.salesforce, "GET", "/__emulator/usage", None);
    let kinds = usage["byKind"].as_object().unwrap();
    kinds.iter().filter(|(k, _)| *k != "auth").map(|(k, n)| (k.clone(), n.as_u64().unwrap())).collect()
}

fn minus(after: &BTreeMap<String, u64>, before: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, n)| (k.clone(), n - before.get(k).copied().unwrap_or(0))).filter(|(_, n)| *n > 0).collect()
}

fn all_written(emu: &Emulators, expected: &[(String, i64)]) -> Option<String> {
    let (_, all) = request(&emu.salesforce, "GET", "/__emulator/records/Contact", None);
    let by_id: BTreeMap<&str, &Value> =
        all.as_array().unwrap().iter().filter_map(|c| Some((c["Id"].as_str()?, c))).collect();
    let missing: Vec<&String> = expected
        .iter()
        .filter(|(id, rating)| by_id.get(id.as_str()).is_none_or(|c| c["NPS_Score__c"] != *rating as f64))
        .map(|(id, _)| id)
        .collect();
    (!missing.is_empty()).then(|| format!("{} of {} not written: {missing:?}", missing.len(), expected.len()))
}

/// Sends one answer per contact, round-robin over `daemons`, as one burst: from a few threads
/// at once, without pauses, so it arrives well within a batching window.
fn send_burst(daemons: &[&Daemon], people: &[(String, String)], at: i64) -> Vec<(String, i64)> {
    const SENDERS: usize = 4;
    std::thread::scope(|scope| {
        for sender in 0..SENDERS {
            scope.spawn(move || {
                for (i, (visitor, _)) in people.iter().enumerate().skip(sender).step_by(SENDERS) {
                    let rating = i64::try_from(i % 11).unwrap();
                    post(daemons[i % daemons.len()], &answer(visitor, &format!("acct-{}", i % 10), rating, at));
                }
            });
        }
    });
    people.iter().enumerate().map(|(i, (_, id))| (id.clone(), i64::try_from(i % 11).unwrap())).collect()
}

/// These tests start several daemons each and measure batching by Salesforce calls, which two
/// cores shared with other tests' daemons would skew (a starved worker claims late and splits a
/// batch); they run one at a time.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
    SERIAL.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The batching window of this test: long enough that a burst of webhooks (sent without
/// pauses) arrives within it even on a loaded machine, so every phase is one batch by
/// construction, and the Salesforce calls of the phases compare exactly.
const BURST_WINDOW_MS: u64 = 5_000;
/// The daemons' lease in this test. A daemon starved past its lease (a loaded machine) has its
/// batch taken over, rightly: the taker records the answers, found already written (unchanged),
/// which the engine's takeover test covers. Here every answer must be recorded as written, so
/// the lease outlasts any plausible starvation and still lets the killed daemon's batch go soon.
const BURST_LEASE_MS: u64 = 5_000;

#[test]
fn two_and_three_daemons_write_each_answer_once_and_take_over_a_killed_ones_batch() {
    let _one_at_a_time = serial();
    let Some(schema) = Schema::new() else { return };
    let emu = emulators();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu, &schema.location());
    let text = std::fs::read_to_string(&cfg).unwrap();
    assert!(text.contains("batch_window_ms: 250 "), "the example config sets the window");
    std::fs::write(&cfg, text.replace("batch_window_ms: 250 ", &format!("batch_window_ms: {BURST_WINDOW_MS} ")))
        .unwrap();
    let now = chrono::Utc::now().timestamp();
    const N: usize = 60;

    // Each phase: a burst round-robin over the daemons; done once every answer is on its
    // Contact and every event is marked processed (after its batch's last Salesforce call).
    let phase = |daemons: &[&Daemon], prefix: &str| {
        let people = contacts(&emu, prefix, N);
        let before = salesforce_calls_by_kind(&emu);
        let expected = send_burst(daemons, &people, now);
        eventually(&format!("{} daemon(s) write every answer", daemons.len()), WAIT, || {
            all_written(&emu, &expected).or_else(|| {
                let pending = schema.pending();
                (pending > 0).then(|| format!("{pending} events pending"))
            })
        });
        let calls = minus(&salesforce_calls_by_kind(&emu), &before);
        (calls, schema.batches(prefix))
    };
    let a = daemon_with_lease(&cfg, BURST_LEASE_MS);
    let (calls_one, batches_one) = phase(&[&a], "one");
    let b = daemon_with_lease(&cfg, BURST_LEASE_MS);
    let (calls_two, batches_two) = phase(&[&a, &b], "two");
    let c = daemon_with_lease(&cfg, BURST_LEASE_MS);
    let (calls_three, batches_three) = phase(&[&a, &b, &c], "three");
    eprintln!("Salesforce calls by kind: 1 daemon {calls_one:?}, 2 daemons {calls_two:?}, 3 daemons {calls_three:?}");

    // A burst within the window is one batch whichever daemons receive it: every worker waits
    // out the window from the oldest unclaimed answer, then the first to claim takes them all.
    assert_eq!((batches_one, batches_two, batches_three), (1, 1, 1), "batches per burst of {N} answers");
    // So the same Salesforce calls, exactly. Each process reads two things once rather than per
    // batch (cached ten minutes, `rest` calls): its allocation (`/limits`) and the workflow's
    // preflight (describes). The one-daemon burst is `a`'s first batch and pays them; a later
    // burst pays them too if a daemon that has written no batch yet claims it, else none of
    // them. Every per-batch call (queries, Collections, Composite) is the same in each phase.
    let per_batch = |calls: &BTreeMap<String, u64>| {
        calls.iter().filter(|(k, _)| *k != "rest").map(|(k, n)| (k.clone(), *n)).collect::<BTreeMap<_, _>>()
    };
    let once_per_process = |calls: &BTreeMap<String, u64>| calls.get("rest").copied().unwrap_or(0);
    assert!(once_per_process(&calls_one) > 0, "the first batch of a process reads its allocation: {calls_one:?}");
    for (daemons, calls) in [(2, &calls_two), (3, &calls_three)] {
        assert_eq!(per_batch(calls), per_batch(&calls_one), "{daemons} daemons: per-batch calls against one's");
        assert!(
            [0, once_per_process(&calls_one)].contains(&once_per_process(calls)),
            "{daemons} daemons: {calls:?}: a process's once-only reads are all made or none, against one's {calls_one:?}"
        );
    }

    // Slow Salesforce: a batch takes seconds. SIGKILL whichever daemon claims the next burst
    // while it holds it; another takes the batch over once its claim lapses.
    let (status, _) =
        request(&emu.salesforce, "PUT", "/__emulator/faults", Some(&json!({"latencyMs": 1500, "latencyShare": 1.0})));
    assert_eq!(status, 200);
    let killed = contacts(&emu, "killed", 12);
    let mut daemons = vec![a, b, c];
    let expected = send_burst(&[&daemons[0]], &killed, now);
    let mut holder = None;
    eventually("a daemon claims the burst", WAIT, || {
        let claimers = schema.claimers();
        holder = daemons.iter().position(|d| claimers.iter().any(|c| c.contains(&format!(":{}:", d.child.id()))));
        holder.is_none().then(|| format!("claimers {claimers:?}"))
    });
    let mut victim = daemons.remove(holder.unwrap());
    victim.child.kill().unwrap();
    victim.child.wait().unwrap();
    eventually("the killed daemon's answers are written by the others", WAIT, || all_written(&emu, &expected));
    // Recorded (and marked processed) only after the batch's last Salesforce call.
    eventually("the inbox drains", WAIT, || {
        let text = metrics_text(&daemons[0].url);
        (!text.lines().any(|l| l == "usagesync_webhook_queue_depth 0")).then_some(text)
    });
    let (status, _) = request(&emu.salesforce, "PUT", "/__emulator/faults", Some(&json!({})));
    assert_eq!(status, 200);

    // Every answer recorded as written exactly once across all workers. The killed daemon may
    // have written some of its batch to Salesforce before it died without recording it: the
    // worker that took the batch over then finds the Contact holding the answer (unchanged).
    let (updates, unchanged) = schema.contact_outcomes();
    let twice: Vec<_> = updates.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "answers written more than once: {twice:?}");
    let also_unchanged: Vec<_> = unchanged.keys().filter(|k| updates.contains_key(*k)).collect();
    assert!(also_unchanged.is_empty(), "answers recorded as written and again as unchanged: {also_unchanged:?}");
    let not_killed = updates.keys().filter(|k| !k.contains(":killed-")).count();
    assert_eq!(not_killed, 3 * N, "every answer written: {updates:?}");
    for (visitor, _) in &killed {
        let key = format!("nps:{now}:{visitor}");
        assert!(
            updates.contains_key(&key) || unchanged.contains_key(&key),
            "the killed daemon's answer {key} was processed by another: {:?} {:?}",
            updates.keys().filter(|k| k.contains("killed")).collect::<Vec<_>>(),
            unchanged.keys().collect::<Vec<_>>()
        );
    }
    drop(daemons);
}

#[test]
fn the_newer_of_two_answers_wins_whichever_daemon_gets_it() {
    let _one_at_a_time = serial();
    let Some(schema) = Schema::new() else { return };
    let emu = emulators();
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), &emu, &schema.location());
    let (a, b) = (daemon(&cfg), daemon(&cfg));
    // 10% of Salesforce calls take 2.5 s, so one daemon's write can land long after the other's.
    let faults = json!({"seed": 7, "latencyMs": 2500, "latencyShare": 0.1});
    let (status, _) = request(&emu.salesforce, "PUT", "/__emulator/faults", Some(&faults));
    assert_eq!(status, 200);
    let people = contacts(&emu, "pair", 20);
    let now = chrono::Utc::now().timestamp();
    for (i, (visitor, _)) in people.iter().enumerate() {
        // The older answer to one daemon, the newer (a second later) to the other, alternating.
        let (first, second) = if i % 2 == 0 { (&a, &b) } else { (&b, &a) };
        post(first, &answer(visitor, "pair-acct", 2, now));
        post(second, &answer(visitor, &format!("pair-acct-{i}"), 9, now + 1));
    }
    let expected: Vec<(String, i64)> = people.iter().map(|(_, id)| (id.clone(), 9)).collect();
    eventually("every Contact holds the newer answer", WAIT, || all_written(&emu, &expected));
    // Nothing still pending could overwrite it later: both answers of every pair are processed.
    eventually("the inbox drains", WAIT, || {
        let text = metrics_text(&a.url);
        (!text.lines().any(|l| l == "usagesync_webhook_queue_depth 0")).then_some(text)
    });
    for (_, id) in &people {
        let c = contact(&emu, id);
        assert_eq!(c["NPS_Score__c"], 9.0, "{c}");
        let date = chrono::DateTime::parse_from_str(c["NPS_Date__c"].as_str().unwrap(), "%Y-%m-%dT%H:%M:%S%.f%z");
        assert_eq!(date.unwrap().timestamp(), now + 1, "{c}");
    }
}

fn metrics_text(url: &str) -> String {
    let host = url.trim_start_matches("http://");
    let mut s = std::net::TcpStream::connect(host).unwrap();
    s.write_all(format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n").as_bytes()).unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

/// A full inbox answers 503 with Retry-After and stores nothing; the depth is a metric.
#[test]
fn a_full_inbox_answers_503_with_retry_after() {
    let _one_at_a_time = serial();
    let emu = emulators();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("state.db").display());
    let cfg = config(dir.path(), &emu, &store);
    let text = std::fs::read_to_string(&cfg).unwrap();
    // Nothing consumes the inbox (nps-realtime off), and it holds three events.
    let text = text
        .replace("# webhooks:", "webhooks:\n  max_pending: 3\n# old webhooks:")
        .replace("    template: nps-realtime", "    template: nps-realtime\n    enabled: false");
    std::fs::write(&cfg, &text).unwrap();
    let d = daemon(&cfg);
    for i in 0..3 {
        post(&d, &answer(&format!("full-v{i}"), "full", 5, 1_700_000_000));
    }
    // The depth is re-read at most every 250 ms; this process's own stores count at once.
    let (status, reply) =
        request(&d.url, "POST", "/webhooks/pendo", Some(&answer("full-v3", "full", 5, 1_700_000_000)));
    assert_eq!(status, 503, "{reply}");
    assert!(reply["error"].as_str().unwrap().contains("max_pending"), "{reply}");
    let text = metrics_text(&d.url);
    assert!(text.lines().any(|l| l == "usagesync_webhook_queue_depth 3"), "{text}");
    assert!(text.lines().any(|l| l == "usagesync_webhook_refused_total 1"), "{text}");
    assert!(text.contains("usagesync_webhook_lag_seconds"), "{text}");
    let raw = {
        let host = d.url.trim_start_matches("http://");
        let mut s = std::net::TcpStream::connect(host).unwrap();
        let body = serde_json::to_vec(&answer("full-v4", "full", 5, 1_700_000_000)).unwrap();
        s.write_all(
            format!(
                "POST /webhooks/pendo HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                body.len()
            )
            .as_bytes(),
        )
        .unwrap();
        s.write_all(&body).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    assert!(raw.to_ascii_lowercase().contains("retry-after: 5"), "{raw}");
}

/// A burst of webhooks sent at once is stored in groups: each is answered 202 only once its
/// group is committed, so every answer acknowledged before a `kill -9` is in the store after it,
/// once, and a repeat delivery of any of them is recognised.
#[test]
fn every_webhook_of_a_burst_acknowledged_before_a_kill_is_kept() {
    let _one_at_a_time = serial();
    let emu = emulators();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("state.db").display());
    let cfg = config(dir.path(), &emu, &store);
    // Nothing consumes the inbox: what the receiver stored stays pending.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("    template: nps-realtime", "    template: nps-realtime\n    enabled: false");
    std::fs::write(&cfg, &text).unwrap();
    let mut d = daemon(&cfg);
    let url = d.url.clone();
    let senders: Vec<_> = (0..8)
        .map(|t| {
            let url = url.clone();
            std::thread::spawn(move || {
                (0..40)
                    .map(|i| {
                        let body = answer(&format!("burst-v{t}-{i}"), "burst", 7, 1_700_000_000);
                        let (status, _) = request(&url, "POST", "/webhooks/pendo", Some(&body));
                        (body["uniqueId"].as_str().unwrap().to_owned(), status)
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<(String, u16)> = senders.into_iter().flat_map(|s| s.join().unwrap()).collect();
    d.child.kill().unwrap();
    d.child.wait().unwrap();
    let acknowledged: BTreeSet<String> =
        answers.iter().filter(|(_, status)| *status == 202).map(|(id, _)| id.clone()).collect();
    assert_eq!(acknowledged.len(), 320, "a burst of 320 fits the queue: {answers:?}");
    let kept = runtime().block_on(async {
        let store = engine::store::open(&store).await.unwrap();
        store.pending_events(1_000).await.unwrap()
    });
    let kept: BTreeSet<String> = kept.into_iter().map(|e| e.unique_id).collect();
    assert_eq!(kept, acknowledged);

    let d = daemon(&cfg);
    let (status, reply) =
        request(&d.url, "POST", "/webhooks/pendo", Some(&answer("burst-v3-7", "burst", 7, 1_700_000_000)));
    assert_eq!(status, 200, "a repeat of a kept event: {reply}");
}

/// `sync nps` under a 5/s Pendo throttle: every visitor's e-mail look-up waits its turn, none
/// fails the batch, and every answer is written.
#[test]
fn sync_nps_under_a_pendo_throttle_writes_every_answer() {
    let _one_at_a_time = serial();
    let emu = emulators();
    let dir = tempfile::tempdir().unwrap();
    let store = format!("sqlite://{}", dir.path().join("state.db").display());
    let cfg = config(dir.path(), &emu, &store);
    // Generated visitors whose one Contact matches by e-mail: the look-ups go to Pendo.
    let (_, visitors) = request(&emu.pendo, "GET", "/__emulator/visitors", None);
    let (_, all_contacts) = request(&emu.salesforce, "GET", "/__emulator/records/Contact", None);
    let people: Vec<(String, String)> = visitors
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|v| {
            let email = v["metadata"]["agent"]["email"].as_str()?;
            let hits: Vec<&Value> = all_contacts
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["Email"].as_str().is_some_and(|e| e.eq_ignore_ascii_case(email)))
                .collect();
            (hits.len() == 1)
                .then(|| (v["visitorId"].as_str().unwrap().to_owned(), hits[0]["Id"].as_str().unwrap().to_owned()))
        })
        .take(30)
        .collect();
    assert!(people.len() >= 20, "the generated world has visitors with one Contact each: {}", people.len());
    // A subscription to other events only: only pollEvents has the answers, and `sync nps`
    // reconciles them into the inbox.
    let subscription = json!({"url": "http://127.0.0.1:9/webhooks/pendo", "events": ["guideDisplayed"]});
    let (status, reply) = request(&emu.pendo, "PUT", "/__emulator/webhooks", Some(&subscription));
    assert_eq!(status, 200, "{reply}");
    for (i, (visitor, _)) in people.iter().enumerate() {
        let rating = i64::try_from(i % 11).unwrap();
        let body = json!({"event": "npsSubmitted", "visitorId": visitor, "accountId": "t", "rating": rating});
        let (status, reply) = request(&emu.pendo, "POST", "/__emulator/webhooks/fire", Some(&body));
        assert!((200..300).contains(&status), "{status} {reply}");
    }
    let throttle = json!({"rateLimit": {"perSecond": 5.0}});
    let (status, reply) = request(&emu.pendo, "PUT", "/__emulator/faults", Some(&throttle));
    assert_eq!(status, 200, "{reply}");
    let out = bin()
        .arg("--config")
        .arg(&cfg)
        .args(["--json", "sync", "nps"])
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(0), "{text}");
    let expected: Vec<(String, i64)> =
        people.iter().enumerate().map(|(i, (_, id))| (id.clone(), i64::try_from(i % 11).unwrap())).collect();
    assert_eq!(all_written(&emu, &expected), None, "{text}");
    let (_, usage) = request(&emu.pendo, "GET", "/__emulator/usage", None);
    assert!(usage["throttled"].as_u64().unwrap() > 0, "the throttle was met: {usage}");
}
