//! `usagesync demo`: the main job end to end on embedded defaults, against an emulated org on
//! 127.0.0.1. It seeds Accounts, then writes engagement fields onto them through usagesync's
//! Salesforce client the way the engine does: read what is there, send only what changed, in
//! 200-record Collections upserts, and report the API calls it cost.
//!
//! Until the Pendo extraction lands (issue 5), the engagement figures come from a small
//! deterministic model rather than from Pendo aggregations; everything on the Salesforce side
//! is the real path.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use emulator::salesforce::{self as sf_emulator, Config};
use futures_util::TryStreamExt;
use salesforce::{Client, ClientAuth, ClientConfig, OAuth};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::DemoArgs;

#[derive(Debug, Deserialize)]
struct AccountRow {
    #[serde(rename = "Pendo_Account_Id__c")]
    pendo_id: Option<String>,
    #[serde(rename = "Pendo_Engagement_Score__c")]
    score: Option<f64>,
    #[serde(rename = "Pendo_Active_Visitors__c")]
    visitors: Option<f64>,
}

/// A deterministic stand-in for an account's engagement on day `day`.
fn engagement(i: usize, day: usize) -> (f64, f64) {
    let visitors = ((i * 7919 + 13) % 97) as f64;
    // A tenth of the accounts change between the two days.
    let drift = if day > 0 && i.is_multiple_of(10) { 5.0 } else { 0.0 };
    let score = ((visitors * 1.3 + (i % 17) as f64) % 100.0 + drift).min(100.0);
    (visitors, (score * 10.0).round() / 10.0)
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if args.accounts == 0 {
        bail!("--accounts must be at least 1");
    }
    let emu = sf_emulator::spawn(Config::default(), false).await.context("Failed to start the Salesforce emulator")?;
    println!("Salesforce emulator: {}", emu.base_url);

    let seed: Vec<Value> = (0..args.accounts)
        .map(|i| json!({"Name": format!("Customer {i:05}"), "Website": format!("customer{i}.example"), "Pendo_Account_Id__c": format!("acct-{i}")}))
        .collect();
    let http = reqwest::Client::new();
    let resp = http
        .post(format!("{}/__emulator/records/Account", emu.base_url))
        .json(&seed)
        .send()
        .await
        .context("Failed to seed the emulated org")?;
    if !resp.status().is_success() {
        bail!("Seeding the emulated org failed: {}", resp.text().await.unwrap_or_default());
    }
    println!("Seeded {} Accounts.", args.accounts);

    let auth = OAuth::client_credentials(&emu.base_url, "usagesync-emulator", "emulator-secret", ClientAuth::Form)
        .context("Failed to configure OAuth")?;
    let client = Client::new(ClientConfig::default(), auth).context("Failed to build the Salesforce client")?;

    println!();
    println!("{:<6} {:>9} {:>9} {:>10} {:>10}", "day", "accounts", "changed", "API calls", "failures");
    for day in 0..3 {
        let before = client.limits().await.context("Failed to read /limits")?;
        let used_before = before.daily_api_requests().map(|l| l.max - l.remaining).unwrap_or(0);
        let current: Vec<AccountRow> = client
            .query("SELECT Pendo_Account_Id__c, Pendo_Engagement_Score__c, Pendo_Active_Visitors__c FROM Account WHERE Pendo_Account_Id__c != null")
            .try_collect()
            .await
            .context("Failed to read current Account values")?;
        let current: HashMap<String, (Option<f64>, Option<f64>)> =
            current.into_iter().filter_map(|r| Some((r.pendo_id?, (r.visitors, r.score)))).collect();
        let changes: Vec<Value> = (0..args.accounts)
            .filter_map(|i| {
                let (visitors, score) = engagement(i, day);
                let key = format!("acct-{i}");
                let unchanged = current.get(&key) == Some(&(Some(visitors), Some(score)));
                (!unchanged).then(|| json!({"Pendo_Account_Id__c": key, "Pendo_Active_Visitors__c": visitors, "Pendo_Engagement_Score__c": score}))
            })
            .collect();
        let results = if changes.is_empty() {
            Vec::new()
        } else {
            client
                .upsert_many("Account", "Pendo_Account_Id__c", &changes, false)
                .await
                .context("Failed to write engagement")?
        };
        let failures = results.iter().filter(|r| !r.success).count();
        // The /limits read above counts too; leave it out of the job's own cost.
        let after = client.limits().await.context("Failed to read /limits")?;
        let used_after = after.daily_api_requests().map(|l| l.max - l.remaining).unwrap_or(0);
        let cost = used_after.saturating_sub(used_before).saturating_sub(1);
        println!("{:<6} {:>9} {:>9} {:>10} {:>10}", day, args.accounts, changes.len(), cost, failures);
        if failures > 0 {
            bail!("{failures} Accounts were not written");
        }
    }
    let written: Vec<Value> = client
        .query("SELECT Id FROM Account WHERE Pendo_Engagement_Score__c != null")
        .try_collect()
        .await
        .context("Failed to verify the written values")?;
    if written.len() != args.accounts {
        bail!("{} of {} Accounts carry an engagement score", written.len(), args.accounts);
    }
    println!();
    println!("All {} Accounts carry engagement; later days wrote only what changed.", written.len());
    Ok(())
}
