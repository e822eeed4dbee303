//! `usagesync bench emulator`: how fast the Salesforce emulator answers, so we know it is never
//! the bottleneck of a usagesync benchmark. It starts the emulator in-process on 127.0.0.1,
//! drives it over real HTTP with plain requests (not usagesync's client, whose own cost would
//! blur the figure) and prints a table.

use std::sync::Arc;
use std::time::Instant;

use ::salesforce as sf;
use anyhow::{Context, Result, bail};
use emulator::salesforce::{self, Config};
use futures_util::stream::{self, StreamExt};
use serde_json::{Value, json};

pub struct Row {
    pub name: &'static str,
    pub requests: usize,
    pub records: usize,
    pub seconds: f64,
    pub api_calls: u64,
}

pub async fn emulator(upserts: usize, collection_records: usize, concurrency: usize) -> Result<()> {
    if concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let config = Config { daily_api_requests: 100_000_000, ..Config::default() };
    let emu = salesforce::spawn(config, false).await.context("Failed to start the emulator")?;
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .context("Failed to build an HTTP client")?;
    let token = token(&http, &emu.base_url).await?;
    let base = Arc::new(format!("{}/services/data/v62.0", emu.base_url));

    let mut rows = Vec::new();
    let calls_before = api_used(&http, &emu.base_url).await?;
    let started = Instant::now();
    let failures = stream::iter(0..upserts)
        .map(|i| {
            let http = http.clone();
            let token = token.clone();
            let base = Arc::clone(&base);
            async move {
                let url = format!("{base}/sobjects/Account/Pendo_Account_Id__c/bench-{i}");
                let body = json!({"Name": format!("Bench {i}"), "Pendo_Engagement_Score__c": (i % 100) as f64});
                match http.patch(url).bearer_auth(token).json(&body).send().await {
                    Ok(r) if r.status().is_success() => 0usize,
                    _ => 1,
                }
            }
        })
        .buffer_unordered(concurrency)
        .fold(0usize, |acc, f| async move { acc + f })
        .await;
    let seconds = started.elapsed().as_secs_f64();
    if failures > 0 {
        bail!("{failures} single upserts failed");
    }
    let calls_after = api_used(&http, &emu.base_url).await?;
    rows.push(Row {
        name: "single upsert (PATCH by external ID)",
        requests: upserts,
        records: upserts,
        seconds,
        api_calls: calls_after - calls_before,
    });

    // Bodies are serialised before the clock starts: the figure is the emulator's, and the two
    // cores are shared with this client.
    let batches = collection_records.div_ceil(200);
    let bodies: Vec<bytes::Bytes> = (0..batches)
        .map(|b| {
            let start = b * 200;
            let end = (start + 200).min(collection_records);
            let records: Vec<Value> = (start..end)
                .map(|i| json!({"attributes": {"type": "Account"}, "Pendo_Account_Id__c": format!("coll-{i}"), "Name": format!("Coll {i}"), "Pendo_Events__c": i as f64}))
                .collect();
            bytes::Bytes::from(json!({"allOrNone": false, "records": records}).to_string())
        })
        .collect();
    let url = format!("{base}/composite/sobjects/Account/Pendo_Account_Id__c");
    let started = Instant::now();
    let failures = stream::iter(bodies)
        .map(|body| {
            let req = http.patch(&url).bearer_auth(&token).header("content-type", "application/json").body(body);
            async move {
                match req.send().await {
                    Ok(r) if r.status().is_success() => r.bytes().await.map_or(1usize, |_| 0),
                    _ => 1,
                }
            }
        })
        .buffer_unordered(concurrency.min(8))
        .fold(0usize, |acc, f| async move { acc + f })
        .await;
    let seconds = started.elapsed().as_secs_f64();
    if failures > 0 {
        bail!("{failures} collection requests failed");
    }
    let calls_final = api_used(&http, &emu.base_url).await?;
    rows.push(Row {
        name: "Collections upsert (200 per request)",
        requests: batches,
        records: collection_records,
        seconds,
        api_calls: calls_final - calls_after,
    });
    print_table(&rows);
    Ok(())
}

/// `usagesync bench bulk`: a `records`-row upsert of Accounts through the client's Bulk API 2.0
/// path, records generated lazily (never all in memory). Prints records/s, the API calls the
/// emulator counted, the jobs used and the process's peak RSS (`VmHWM`), which includes the
/// emulator unless `salesforce_url` points at one running elsewhere.
pub async fn bulk(records: u64, salesforce_url: Option<String>) -> Result<()> {
    let (_emu, base) = match salesforce_url {
        Some(url) => (None, url.trim_end_matches('/').to_string()),
        None => {
            let config = Config { daily_api_requests: 100_000_000, ..Config::default() };
            let emu = salesforce::spawn(config, false).await.context("Failed to start the emulator")?;
            let base = emu.base_url.clone();
            (Some(emu), base)
        }
    };
    let http = reqwest::Client::new();
    let auth = sf::OAuth::client_credentials(&base, "usagesync-emulator", "emulator-secret", sf::ClientAuth::Form)
        .context("Failed to configure OAuth")?;
    let client = sf::Client::new(sf::ClientConfig::default(), auth).context("Failed to build the client")?;
    client.instance_url().await.context("Failed to log in to the emulator")?;
    let rss_before = vm_kb("VmRSS");

    let rows = (0..records).map(|i| BenchAccount {
        key: format!("bulk-{i:08}"),
        name: format!("Bulk Account {i}"),
        score: (i % 100) as f64,
        events: (i * 7 % 1000) as f64,
    });
    let options = sf::IngestOptions::upsert("Account", "Pendo_Account_Id__c");
    let calls_before = api_used(&http, &base).await?;
    let started = Instant::now();
    let mut failed_examples = Vec::new();
    let summary = client
        .bulk_ingest_with(&options, rows, |o| {
            if !matches!(o.status, sf::RowStatus::Success { .. }) && failed_examples.len() < 3 {
                failed_examples.push(format!("{:?}", o.status));
            }
        })
        .await
        .context("Bulk upsert failed")?;
    let seconds = started.elapsed().as_secs_f64();
    let calls = api_used(&http, &base).await? - calls_before;
    if summary.succeeded != records {
        bail!(
            "{} of {records} records succeeded ({} failed, {} unprocessed); e.g. {failed_examples:?}",
            summary.succeeded,
            summary.failed,
            summary.unprocessed
        );
    }
    println!(
        "{:<38} {:>9} {:>6} {:>8} {:>11} {:>9} {:>14}",
        "operation", "records", "jobs", "seconds", "records/s", "API calls", "peak RSS (MB)"
    );
    println!(
        "{:<38} {:>9} {:>6} {:>8.2} {:>11.0} {:>9} {:>14.1}",
        "Bulk API 2.0 upsert (client)",
        records,
        summary.jobs.len(),
        seconds,
        records as f64 / seconds.max(1e-9),
        calls,
        vm_kb("VmHWM").unwrap_or(0) as f64 / 1024.0,
    );
    println!(
        "RSS before the run: {:.1} MB; peak includes the in-process emulator: {}",
        rss_before.unwrap_or(0) as f64 / 1024.0,
        _emu.is_some()
    );
    Ok(())
}

#[derive(serde::Serialize)]
struct BenchAccount {
    #[serde(rename = "Pendo_Account_Id__c")]
    key: String,
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Pendo_Engagement_Score__c")]
    score: f64,
    #[serde(rename = "Pendo_Events__c")]
    events: f64,
}

/// A `kB` line of `/proc/self/status` (`VmHWM` is the peak resident set).
fn vm_kb(key: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':')?.trim().strip_suffix("kB")?.trim().parse().ok())
}

pub fn print_table(rows: &[Row]) {
    println!(
        "{:<38} {:>9} {:>9} {:>8} {:>11} {:>11} {:>9}",
        "operation", "requests", "records", "seconds", "requests/s", "records/s", "API calls"
    );
    for r in rows {
        let secs = r.seconds.max(1e-9);
        println!(
            "{:<38} {:>9} {:>9} {:>8.2} {:>11.0} {:>11.0} {:>9}",
            r.name,
            r.requests,
            r.records,
            r.seconds,
            r.requests as f64 / secs,
            r.records as f64 / secs,
            r.api_calls
        );
    }
}

async fn token(http: &reqwest::Client, base: &str) -> Result<String> {
    let v: Value = http
        .post(format!("{base}/services/oauth2/token"))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", "usagesync-emulator"),
            ("client_secret", "emulator-secret"),
        ])
        .send()
        .await
        .context("Failed to reach the emulator's token endpoint")?
        .json()
        .await
        .context("Failed to read the token response")?;
    v["access_token"].as_str().map(str::to_string).context("The token response had no access_token")
}

async fn api_used(http: &reqwest::Client, base: &str) -> Result<u64> {
    let v: Value = http.get(format!("{base}/__emulator/usage")).send().await?.json().await?;
    v["dailyApiRequests"]["Used"].as_u64().context("usage had no dailyApiRequests.Used")
}

/// Peak resident memory of this process, from `/proc/self/status` (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

pub async fn pendo(seed: u64, accounts: usize, days: u32, runs: usize) -> Result<()> {
    if accounts == 0 || days == 0 {
        bail!("--accounts and --days must be at least 1");
    }
    let report = tokio::task::spawn_blocking(move || emulator::pendo::bench::run(seed, accounts, days, runs, true))
        .await
        .context("The benchmark task failed")?
        .map_err(|e| anyhow::anyhow!("The benchmark failed: {e}"))?;
    println!(
        "generated {} accounts, {} visitors, {} event rows, {} guide events over {} days",
        report.accounts, report.visitors, report.event_rows, report.guide_events, report.days
    );
    println!("{:<44} {:>12}", "generator", "value");
    println!("{:<44} {:>12.0}", "generation time (ms)", report.generate_ms);
    println!("{:<44} {:>12.0}", "accounts/s", report.accounts_per_sec);
    println!("{:<44} {:>12.0}", "event rows/s", report.event_rows_per_sec);
    println!("{:<44} {:>12.0}", "matching Salesforce org (ms)", report.salesforce_org_ms);
    println!("{:<44} {:>12}", "matching Salesforce records", report.salesforce_records);
    println!("{:<44} {:>12.0}", "store size (MiB, estimated)", report.approx_store_bytes as f64 / 1_048_576.0);
    if let Some(rss) = peak_rss_mib() {
        println!("{:<44} {:>12.0}", "peak RSS (MiB)", rss);
    }
    println!();
    println!(
        "{:<44} {:>12} {:>9} {:>9} {:>10}",
        "30-day aggregation", "rows scanned", "rows out", "best ms", "median ms"
    );
    for q in &report.queries {
        println!("{:<44} {:>12} {:>9} {:>9.1} {:>10.1}", q.name, q.rows_scanned, q.rows_out, q.best_ms, q.median_ms);
    }
    Ok(())
}
