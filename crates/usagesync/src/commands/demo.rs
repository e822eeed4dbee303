//! `usagesync demo`: the main job end to end on embedded defaults. It starts both emulators on
//! 127.0.0.1 with one generated world (Pendo usage and the matching Salesforce org), reads each
//! Pendo account's 30-day usage with an aggregation, and writes it onto the matching Salesforce
//! Accounts the way the engine will: read what is there, send only what changed, in 200-record
//! Collections upserts, and report the API calls it cost. A second run shows nothing is rewritten.
//!
//! Matching here uses one rule, the `Pendo_Account_Id__c` external ID; the full rule chain
//! (Pendo metadata, website domains, ambiguity) is the engine's (issue 5).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use emulator::pendo::{GenConfig, PendoConfig, PendoState};
use emulator::salesforce::{self as sf_emulator, Config};
use futures_util::TryStreamExt;
use salesforce::{ClientAuth, ClientConfig, OAuth};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::cli::DemoArgs;

#[derive(Debug, Deserialize)]
struct AccountRow {
    #[serde(rename = "Pendo_Account_Id__c")]
    pendo_id: Option<String>,
    #[serde(rename = "Pendo_Events__c")]
    events: Option<f64>,
    #[serde(rename = "Pendo_Minutes__c")]
    minutes: Option<f64>,
}

#[derive(Debug, Deserialize)]
struct Usage {
    #[serde(rename = "accountId")]
    account_id: String,
    events: f64,
    minutes: f64,
}

pub async fn run(args: DemoArgs) -> Result<()> {
    if args.accounts == 0 {
        bail!("--accounts must be at least 1");
    }
    let gen_config = GenConfig { seed: 1, accounts: args.accounts, days: 30, ..GenConfig::default() };
    let pendo_state = tokio::task::spawn_blocking(move || PendoState::generated(PendoConfig::default(), &gen_config))
        .await
        .context("Failed to generate the demo world")?;
    let sf = sf_emulator::spawn(Config::default(), false).await.context("Failed to start the Salesforce emulator")?;
    super::emulate::seed_matching_org(&sf.state, &pendo_state)?;
    let pendo_emu =
        emulator::pendo::start("127.0.0.1:0", pendo_state).await.context("Failed to start the Pendo emulator")?;
    println!("Salesforce emulator: {}", sf.base_url);
    println!("Pendo emulator:      {}", pendo_emu.base_url);

    let pendo = pendo::Client::new(
        pendo::ClientConfig::new(&pendo_emu.base_url, "emulator-integration-key")
            .context("Failed to configure Pendo")?,
    )
    .context("Failed to build the Pendo client")?;
    let auth = OAuth::client_credentials(&sf.base_url, "usagesync-emulator", "emulator-secret", ClientAuth::Form)
        .context("Failed to configure OAuth")?;
    let client =
        salesforce::Client::new(ClientConfig::default(), auth).context("Failed to build the Salesforce client")?;

    println!();
    println!(
        "{:<5} {:>14} {:>9} {:>8} {:>11} {:>9}",
        "run", "Pendo accounts", "matched", "written", "SF API calls", "failures"
    );
    for run in 1..=2 {
        let used_before = api_used(&client).await?;
        let body = json!({
            "response": {"mimeType": "application/json"},
            "request": {"pipeline": [
                {"source": {"events": null, "timeSeries": {"period": "dayRange", "first": "now()", "count": -30}}},
                {"group": {"group": ["accountId"], "fields": [{"events": {"sum": "numEvents"}}, {"minutes": {"sum": "numMinutes"}}]}},
            ]},
        });
        let usage: Vec<Usage> = pendo
            .aggregate_raw(&body)
            .await
            .context("Failed to read usage from Pendo")?
            .rows()
            .context("Failed to decode Pendo's usage rows")?;
        let current: Vec<AccountRow> = client
            .query("SELECT Pendo_Account_Id__c, Pendo_Events__c, Pendo_Minutes__c FROM Account WHERE Pendo_Account_Id__c != null")
            .try_collect()
            .await
            .context("Failed to read the Accounts' current values")?;
        let current: HashMap<String, (Option<f64>, Option<f64>)> =
            current.into_iter().filter_map(|r| Some((r.pendo_id?, (r.events, r.minutes)))).collect();
        let matched: Vec<&Usage> = usage.iter().filter(|u| current.contains_key(&u.account_id)).collect();
        let changes: Vec<Value> = matched
            .iter()
            .filter(|u| current.get(&u.account_id) != Some(&(Some(u.events), Some(u.minutes))))
            .map(|u| json!({"Pendo_Account_Id__c": u.account_id, "Pendo_Events__c": u.events, "Pendo_Minutes__c": u.minutes}))
            .collect();
        let results = if changes.is_empty() {
            Vec::new()
        } else {
            client
                .upsert_many("Account", "Pendo_Account_Id__c", &changes, false)
                .await
                .context("Failed to write usage")?
        };
        let failures = results.iter().filter(|r| !r.success).count();
        // The /limits read that measures the cost counts too; leave it out.
        let cost = api_used(&client).await?.saturating_sub(used_before).saturating_sub(1);
        println!(
            "{:<5} {:>14} {:>9} {:>8} {:>11} {:>9}",
            run,
            usage.len(),
            matched.len(),
            changes.len() - failures,
            cost,
            failures
        );
        if failures > 0 {
            bail!("{failures} Accounts were not written");
        }
        if run == 2 && !changes.is_empty() {
            bail!("the second run rewrote {} unchanged Accounts", changes.len());
        }
    }
    println!();
    println!("Run 2 wrote nothing: every matched Account already carried its current usage.");
    pendo_emu.shutdown().await;
    Ok(())
}

async fn api_used(client: &salesforce::Client) -> Result<i64> {
    let limits = client.limits().await.context("Failed to read /limits")?;
    Ok(limits.daily_api_requests().map(|l| l.max - l.remaining).unwrap_or(0))
}
