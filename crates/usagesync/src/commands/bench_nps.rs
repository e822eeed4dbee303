//! `usagesync bench nps`: nps-realtime's latency under load. The emulators and the daemon
//! (`usagesync run`) each run as a child process, as in production; this process posts NPS
//! webhooks to the daemon at a steady rate and afterwards reads each Contact's `SystemModstamp`
//! from the Salesforce emulator: the figure is the time from posting the webhook to the Contact
//! being updated in Salesforce, batching window, Pendo look-ups, the health score and the
//! detractor Tasks of the same batch included.

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

pub async fn nps(rate: u32, seconds: u32, window_ms: u64) -> Result<()> {
    if rate == 0 || seconds == 0 {
        bail!("--rate and --seconds must be at least 1");
    }
    let total = rate as usize * seconds as usize;
    eprintln!("Starting the emulators…");
    let mut emulators = super::bench_engagement::start_emulators(50, 7).await?;
    let sf = emulators.salesforce.clone();
    let http = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;

    // One Contact per event, spread over 100 Accounts with an engagement score.
    let accounts = get_json(&http, &format!("{sf}/__emulator/records/Account")).await?;
    let owner = accounts[0]["OwnerId"].as_str().context("the emulator has no Account owner")?.to_owned();
    let account_rows: Vec<Value> = (0..ACCOUNTS)
        .map(|i| json!({"Name": format!("NPS Bench {i}"), "OwnerId": owner, "Pendo_Engagement_Score__c": 50}))
        .collect();
    let account_ids = seed(&http, &sf, "Account", &account_rows).await?;
    let contact_rows: Vec<Value> = (0..total)
        .map(|i| {
            json!({"LastName": format!("Bench {i}"), "AccountId": account_ids[i % account_ids.len()],
                   "Pendo_Visitor_Id__c": format!("bench-v{i}")})
        })
        .collect();
    let contact_ids = seed(&http, &sf, "Contact", &contact_rows).await?;

    let dir = tempfile::tempdir().context("Failed to make a temporary directory")?;
    let cfg = dir.path().join("usagesync.yaml");
    let text = engine::config::STARTER
        .replace("http://127.0.0.1:8443", &sf)
        .replace("http://127.0.0.1:8444", &emulators.pendo)
        .replace("sqlite://usagesync.db", &format!("sqlite://{}", dir.path().join("bench.db").display()))
        .replace("    enabled: true ", "    enabled: false ")
        .replace("schedule: \"*/15 * * * *\"", "schedule: \"0 0 1 1 *\"")
        .replace("batch_window_ms: 250", &format!("batch_window_ms: {window_ms}"));
    std::fs::write(&cfg, text).context("Failed to write the bench config")?;
    let exe = std::env::current_exe().context("Failed to find this executable")?;
    let mut daemon = tokio::process::Command::new(exe)
        .arg("--config")
        .arg(&cfg)
        .args(["run", "--listen", "127.0.0.1:0"])
        .env("SF_CLIENT_SECRET", "emulator-secret")
        .env("PENDO_INTEGRATION_KEY", "emulator-integration-key")
        .env("USAGESYNC_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("Failed to start `usagesync run`")?;
    let stdout = daemon.stdout.take().context("no stdout from the daemon")?;
    let first = BufReader::new(stdout).lines().next_line().await?.context("the daemon exited at once")?;
    let url = first.split_whitespace().find(|w| w.starts_with("http://")).context("no daemon URL")?.to_owned();

    eprintln!("Posting {total} NPS webhooks at {rate}/s for {seconds}s (window {window_ms} ms)…");
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut posts = tokio::task::JoinSet::new();
    for i in 0..total {
        tick.tick().await;
        let http = http.clone();
        let url = format!("{url}/webhooks/pendo");
        posts.spawn(async move {
            let sent = Utc::now();
            let body = json!({
                "event": "npsSubmitted", "visitorId": format!("bench-v{i}"), "accountId": "bench",
                "timestamp": sent.timestamp(), "uniqueId": format!("{i:040x}"),
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
        let all = get_json(&http, &format!("{sf}/__emulator/records/Contact")).await?;
        let rows: Vec<Value> = all.as_array().cloned().unwrap_or_default();
        let written = rows
            .iter()
            .filter(|c| c["LastName"].as_str().is_some_and(|n| n.starts_with("Bench ")) && !c["NPS_Score__c"].is_null())
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
    for (i, id) in contact_ids.iter().enumerate() {
        let Some(sent) = sent_at[i] else { continue };
        let Some(c) = by_id.get(id.as_str()) else { continue };
        let stamp = c["SystemModstamp"]
            .as_str()
            .and_then(|s| DateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S%.f%z").ok())
            .map(|d| d.with_timezone(&Utc));
        match (stamp, c["NPS_Score__c"].is_null()) {
            (Some(stamp), false) => latencies.push((stamp - sent).num_microseconds().unwrap_or(0) as f64 / 1000.0),
            _ => missing += 1,
        }
    }
    latencies.sort_by(f64::total_cmp);
    let metrics = http.get(format!("{url}/metrics")).send().await?.text().await?;
    let calls: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("usagesync_api_calls_total{workflow=\"nps\""))
        .filter_map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum();
    let tasks = get_json(&http, &format!("{sf}/__emulator/records/Task")).await?;
    let tasks = tasks.as_array().map_or(0, |t| t.iter().filter(|t| t["Usagesync_Key__c"].is_string()).count());
    let _ = daemon.kill().await;
    let _ = emulators.process.kill().await;

    table::print(
        &["events", "posted in", "refused", "not written", "p50 ms", "p95 ms", "p99 ms", "max ms", "SF calls", "Tasks"],
        &[vec![
            thousands(total as u64),
            format!("{posting:.1}s"),
            refused.to_string(),
            missing.to_string(),
            format!("{:.0}", percentile(&latencies, 50.0)),
            format!("{:.0}", percentile(&latencies, 95.0)),
            format!("{:.0}", percentile(&latencies, 99.0)),
            format!("{:.0}", latencies.last().copied().unwrap_or(f64::NAN)),
            format!("{calls:.0}"),
            thousands(tasks as u64),
        ]],
    );
    println!("Latency: webhook POST sent → Contact SystemModstamp in the Salesforce emulator.");
    if refused > 0 || missing > 0 {
        bail!("{refused} webhooks refused, {missing} responses not written");
    }
    Ok(())
}
