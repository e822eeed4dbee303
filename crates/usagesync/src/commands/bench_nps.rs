//! `usagesync bench nps`: nps-realtime's latency and throughput under load, for one or more
//! workers. The emulators and each daemon (`usagesync run`) run as child processes, as in
//! production; this process posts NPS webhooks round-robin to the daemons at a steady rate and
//! afterwards reads each Contact's `SystemModstamp` from the Salesforce emulator: the figure is
//! the time from posting the webhook to the Contact being updated in Salesforce, batching
//! window, Pendo look-ups, the health score and the detractor Tasks of the same batch included.
//! Several workers share one PostgreSQL store (a schema of its own per measurement, dropped
//! after); one worker uses PostgreSQL too when given, else an SQLite file. For each worker
//! count the saturation point is the highest rate tried at which p99 stayed under a second
//! with nothing refused or lost.

use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::table::{self, thousands};

const ACCOUNTS: usize = 100;

async fn get_json(http: &reqwest::Client, url: &str) -> Result<Value> {
    let r = http.get(url).send().await.with_context(|| format!("GET {url}"))?;
    r.json().await.with_context(|| format!("GET {url}: not JSON"))
}

async fn seed(http: &reqwest::Client, sf: &str, object: &str, rows: &[Value]) -> Result<Vec<String>> {
    let mut ids = Vec::new();
    for chunk in rows.chunks(1_000) {
        let r = http.post(format!("{sf}/__emulator/records/{object}")).json(&chunk).send().await?;
        let body: Value = r.json().await?;
        let Some(list) = body["ids"].as_array() else { bail!("seeding {object} failed: {body}") };
        ids.extend(list.iter().filter_map(|v| v.as_str().map(str::to_owned)));
    }
    Ok(ids)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// One measurement: `workers` daemons, `rate` webhooks/s for `seconds`.
struct Row {
    workers: usize,
    rate: u32,
    total: usize,
    posting: f64,
    refused: usize,
    missing: usize,
    throughput: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    calls: f64,
    tasks: usize,
}

impl Row {
    /// Kept up: p99 under a second, nothing refused or left unwritten.
    fn kept_up(&self) -> bool {
        self.refused == 0 && self.missing == 0 && self.p99 < 1_000.0
    }
}

pub async fn nps(rates: &[u32], seconds: u32, window_ms: u64, workers: &[usize], postgres: Option<&str>) -> Result<()> {
    if rates.is_empty() || rates.contains(&0) || seconds == 0 {
        bail!("--rate values and --seconds must be at least 1");
    }
    if workers.is_empty() || workers.contains(&0) {
        bail!("--workers values must be at least 1");
    }
    if postgres.is_none() && workers.iter().any(|w| *w > 1) {
        bail!(
            "several workers share a PostgreSQL store: give --postgres URL (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
    }
    eprintln!("Starting the emulators…");
    let mut emulators = super::emulate::in_child(50, 7).await?;
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let mut rows = Vec::new();
    let mut round = 0usize;
    for &w in workers {
        for &rate in rates {
            round += 1;
            let row = measure(&http, &emulators, round, rate, seconds, window_ms, w, postgres).await;
            match row {
                Ok(row) => rows.push(row),
                Err(e) => {
                    let _ = emulators.process.kill().await;
                    return Err(e);
                }
            }
        }
    }
    let _ = emulators.process.kill().await;

    table::print(
        &[
            "workers",
            "rate/s",
            "events",
            "refused",
            "not written",
            "written/s",
            "p50 ms",
            "p95 ms",
            "p99 ms",
            "max ms",
            "SF calls",
            "calls/answer",
            "Tasks",
        ],
        &rows
            .iter()
            .map(|r| {
                vec![
                    r.workers.to_string(),
                    r.rate.to_string(),
                    thousands(r.total as u64),
                    r.refused.to_string(),
                    r.missing.to_string(),
                    format!("{:.0}", r.throughput),
                    format!("{:.0}", r.p50),
                    format!("{:.0}", r.p95),
                    format!("{:.0}", r.p99),
                    format!("{:.0}", r.max),
                    format!("{:.0}", r.calls),
                    format!("{:.3}", r.calls / (r.total - r.refused).max(1) as f64),
                    thousands(r.tasks as u64),
                ]
            })
            .collect::<Vec<_>>(),
    );
    println!(
        "Latency: webhook POST sent → Contact SystemModstamp in the Salesforce emulator; written/s: answers \
         written over the time from the first post to the last Contact written; posting took {:.1}s per row at most.",
        rows.iter().map(|r| r.posting).fold(0.0, f64::max)
    );
    for &w in workers {
        let mine: Vec<&Row> = rows.iter().filter(|r| r.workers == w).collect();
        let kept: Vec<u32> = mine.iter().filter(|r| r.kept_up()).map(|r| r.rate).collect();
        let first_failed = mine.iter().filter(|r| !r.kept_up()).map(|r| r.rate).min();
        let text = match (kept.iter().max(), first_failed) {
            (Some(best), Some(failed)) if failed > *best => format!("between {best}/s and {failed}/s"),
            (Some(best), Some(failed)) => format!("{best}/s kept up, but {failed}/s did not (noisy machine?)"),
            (Some(best), None) => format!("at least {best}/s (the highest rate tried)"),
            (None, _) => format!("below {}/s (the lowest rate tried)", mine.iter().map(|r| r.rate).min().unwrap_or(0)),
        };
        println!("Saturation, {w} worker(s) (p99 < 1 s, nothing refused or lost): {text}");
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn measure(
    http: &reqwest::Client,
    emulators: &super::emulate::Child,
    round: usize,
    rate: u32,
    seconds: u32,
    window_ms: u64,
    workers: usize,
    postgres: Option<&str>,
) -> Result<Row> {
    let total = rate as usize * seconds as usize;
    let sf = emulators.salesforce.clone();
    let prefix = format!("bench{round}");

    // One Contact per event, spread over 100 Accounts with an engagement score; each answer
    // carries its Account's Pendo id, so workers split the load by account.
    let accounts = get_json(http, &format!("{sf}/__emulator/records/Account")).await?;
    let owner = accounts[0]["OwnerId"].as_str().context("the emulator has no Account owner")?.to_owned();
    let account_rows: Vec<Value> = (0..ACCOUNTS)
        .map(|i| json!({"Name": format!("NPS Bench {round}-{i}"), "OwnerId": owner, "Pendo_Engagement_Score__c": 50}))
        .collect();
    let account_ids = seed(http, &sf, "Account", &account_rows).await?;
    let contact_rows: Vec<Value> = (0..total)
        .map(|i| {
            json!({"LastName": format!("{prefix} {i}"), "AccountId": account_ids[i % account_ids.len()],
                   "Pendo_Visitor_Id__c": format!("{prefix}-v{i}")})
        })
        .collect();
    let contact_ids = seed(http, &sf, "Contact", &contact_rows).await?;

    let dir = tempfile::tempdir().context("Failed to make a temporary directory")?;
    let schema = format!("bench_nps_{:016x}", rand::random::<u64>());
    let store = match postgres {
        Some(url) => {
            drop(engine::store::open_postgres_schema(url, &schema).await?);
            let separator = if url.contains('?') { '&' } else { '?' };
            format!("{url}{separator}options=-c%20search_path%3D{schema}")
        }
        None => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let result =
        run_daemons(http, emulators, &store, dir.path(), &prefix, &contact_ids, rate, total, window_ms, workers).await;
    if let Some(url) = postgres {
        engine::store::drop_postgres_schema(url, &schema).await?;
    }
    result
}

#[allow(clippy::too_many_arguments)]
async fn run_daemons(
    http: &reqwest::Client,
    emulators: &super::emulate::Child,
    store: &str,
    dir: &std::path::Path,
    prefix: &str,
    contact_ids: &[String],
    rate: u32,
    total: usize,
    window_ms: u64,
    workers: usize,
) -> Result<Row> {
    let sf = emulators.salesforce.clone();
    let cfg = dir.join("usagesync.yaml");
    let text = engine::config::STARTER
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &emulators.pendo)
        .replace("sqlite://usagesync.db", store)
        .replace("    enabled: true ", "    enabled: false ")
        .replace("schedule: \"*/15 * * * *\"", "schedule: \"0 0 1 1 *\"")
        .replace("batch_window_ms: 250", &format!("batch_window_ms: {window_ms}"));
    std::fs::write(&cfg, text).context("Failed to write the bench config")?;
    let exe = std::env::current_exe().context("Failed to find this executable")?;
    let mut daemons = Vec::new();
    let mut urls = Vec::new();
    for _ in 0..workers {
        let mut daemon = tokio::process::Command::new(&exe)
            .arg("--config")
            .arg(&cfg)
            .args(["run", "--listen", "127.0.0.1:0"])
            .env("SF_CLIENT_SECRET", "emulator-secret")
            .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
            // The daemons' log level: `USAGESYNC_BENCH_DAEMON_LOG=info` shows each batch's timings.
            .env("USAGESYNC_LOG", std::env::var("USAGESYNC_BENCH_DAEMON_LOG").unwrap_or_else(|_| "warn".into()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .context("Failed to start `usagesync run`")?;
        let stdout = daemon.stdout.take().context("no stdout from the daemon")?;
        let first = BufReader::new(stdout).lines().next_line().await?.context("the daemon exited at once")?;
        urls.push(first.split_whitespace().find(|w| w.starts_with("http://")).context("no daemon URL")?.to_owned());
        daemons.push(daemon);
    }

    eprintln!("{workers} worker(s): posting {total} NPS webhooks at {rate}/s (window {window_ms} ms)…");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let first_post = Utc::now();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..total {
        tick.tick().await;
        let http = http.clone();
        let url = format!("{}/webhooks/pendo", urls[i % urls.len()]);
        let account = format!("{prefix}-a{}", i % ACCOUNTS);
        let visitor = format!("{prefix}-v{i}");
        posts.spawn(async move {
            let sent = Utc::now();
            let body = json!({
                "event": "npsSubmitted", "visitorId": visitor, "accountId": account,
                "timestamp": sent.timestamp(), "uniqueId": format!("{visitor}-{i:08x}"),
                "properties": {"nps": {"rating": i % 11, "reason": "bench"}},
            });
            let ok = http.post(url).json(&body).send().await.is_ok_and(|r| r.status().as_u16() == 202);
            (i, sent, ok)
        });
    }
    let mut sent_at: Vec<Option<DateTime<Utc>>> = vec![None; total];
    let mut refused = 0;
    while let Some(joined) = posts.join_next().await {
        let (i, sent, ok) = joined?;
        if ok {
            sent_at[i] = Some(sent);
        } else {
            refused += 1;
        }
    }
    let posting = started.elapsed().as_secs_f64();

    // Every accepted response on its Contact (up to a minute after the last post).
    let deadline = Instant::now() + Duration::from_secs(60);
    let contacts = loop {
        let all = get_json(http, &format!("{sf}/__emulator/records/Contact")).await?;
        let rows: Vec<Value> = all.as_array().cloned().unwrap_or_default();
        let written = rows
            .iter()
            .filter(|c| {
                c["LastName"].as_str().is_some_and(|n| n.starts_with(&format!("{prefix} ")))
                    && !c["NPS_Score__c"].is_null()
            })
            .count();
        if written >= total - refused || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let by_id: std::collections::HashMap<&str, &Value> =
        contacts.iter().filter_map(|c| Some((c["Id"].as_str()?, c))).collect();
    let mut latencies: Vec<f64> = Vec::new();
    let mut missing = 0;
    let mut last_written = first_post;
    for (i, id) in contact_ids.iter().enumerate() {
        let Some(sent) = sent_at[i] else { continue };
        let Some(c) = by_id.get(id.as_str()) else { continue };
        let stamp = c["SystemModstamp"]
            .as_str()
            .and_then(|s| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").ok())
            .map(|d| d.with_timezone(&Utc));
        match (stamp, c["NPS_Score__c"].is_null()) {
            (Some(stamp), false) => {
                last_written = last_written.max(stamp);
                latencies.push((stamp - sent).num_microseconds().unwrap_or(0) as f64 / 1000.0);
            }
            _ => missing += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    // The store is shared, so any daemon's /metrics counts every worker's calls.
    let metrics = http.get(format!("{}/metrics", urls[0])).send().await?.text().await?;
    let calls: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("usagesync_api_calls_total{workflow=\"nps\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    let tasks = get_json(http, &format!("{sf}/__emulator/records/Task")).await?;
    // Follow-up keys read `usagesync:<workflow>:nps:<visitor>:<seconds>~<hash>`.
    let mine = format!(":{prefix}-v");
    let tasks = tasks
        .as_array()
        .map_or(0, |t| t.iter().filter(|t| t["Usagesync_Key__c"].as_str().is_some_and(|k| k.contains(&mine))).count());
    for mut d in daemons {
        let _ = d.kill().await;
    }
    let span = (last_written - first_post).num_milliseconds().max(1) as f64 / 1000.0;
    Ok(Row {
        workers,
        rate,
        total,
        posting,
        refused,
        missing,
        throughput: latencies.len() as f64 / span,
        p50: percentile(&latencies, 50.0),
        p95: percentile(&latencies, 95.0),
        p99: percentile(&latencies, 99.0),
        max: latencies.last().copied().unwrap_or(f64::NAN),
        calls,
        tasks,
    })
}
