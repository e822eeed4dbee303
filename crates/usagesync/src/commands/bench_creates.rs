//! `usagesync bench creates`: the record-creating workflows (engagement-drop-alert,
//! expansion-opportunity, trial-usage, a signal whose actions are an Opportunity and Account
//! fields, a per-person signal that makes a Task on the Contact, and a drop alert over hourly
//! windows) against the emulators in a child process: a first run and a re-run of each, with
//! their time, Salesforce calls and records created or written.

use std::time::Instant;

use anyhow::{Context as _, Result};
use engine::workflow::RunOptions;
use serde_json::Value;

use super::table::{self, thousands};

const WORKFLOWS: &str = r#"
  churn-alerts:
    template: engagement-drop-alert
    schedule: "0 7 * * *"
    window_days: 7
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    score:
      active_visitors: { weight: 0.5, target: 5 }
      active_days: { weight: 0.5, target: 5 }
    alert: { below: 20, drop_share: 0.5, owner_field: CSM__c }
  expansion:
    template: expansion-opportunity
    schedule: "0 8 * * 1"
    window_days: 30
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    expansion:
      milestones:
        - { name: premium, feature_visitors: { features: [{premium}], min_visitors: 3 } }
        - { name: heavy-use, sustained_usage: { min_daily_events: 100, days: 10 } }
  trials:
    template: trial-usage
    schedule: "0 * * * *"
    window_days: 30
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    trial:
      fields:
        active_users: Trial_Active_Users__c
        features_explored: Trial_Features_Explored__c
        guides_completed: Trial_Guides_Completed__c
        last_active: Trial_Last_Active__c
      stages:
        - { metric: active_users, at_least: 2, stage: Qualification }
  renewal-risk:
    template: engagement-drop-alert
    schedule: "0 7 * * *"
    window_days: 7
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    score:
      active_visitors: { weight: 0.5, target: 5 }
      active_days: { weight: 0.5, target: 5 }
    alert:
      when: "score < 20.0"
      subject: "Renewal risk: {account}"
      description: "{account}: {metric} {from} -> {to}. Core features: {core_features}."
      opportunity: { stage: Qualification, close_date: "+30d" }
      set_fields: { At_Risk__c: true, Risk_Reason__c: "{subject}" }
  people-quiet:
    template: contact-engagement
    schedule: "45 6 * * *"
    window_days: 14
    contacts:
      match: email
      alert:
        when: "days_since_last_active >= 14.0 && previous.active_days > 0.0"
        rearm_when: "active_days > 0.0"
        subject: "{person} has not used the product for {days_since_last_active} days"
        due_in_days: 5
  usage-collapse:
    template: engagement-drop-alert
    schedule: "15 * * * *"
    window: 6h
    window_includes_current: true
    matching:
      - { rule: pendo_metadata, group: custom, field: sfdcaccountid }
      - { rule: external_id, field: Pendo_Account_Id__c }
      - { rule: email_domain, website_field: Website }
    score:
      active_visitors: { weight: 0.5, target: 3 }
      events: { weight: 0.5, target: 200 }
    alert:
      when: "previous.events >= 200.0 && events < previous.events / 5.0"
      rearm_when: "events >= previous.events / 2.0"
      subject: "Usage collapsed in the last 6 hours: {account}"
"#;

/// The Account fields the renewal-risk alert sets, which the emulated org lacks.
const RISK_FIELDS: &str =
    r#"[{"name": "At_Risk__c", "type": "boolean"}, {"name": "Risk_Reason__c", "type": "string", "length": 255}]"#;

pub async fn creates(sizes: &[usize], days: u32, only: &[String]) -> Result<()> {
    const ALL: [&str; 6] = ["churn-alerts", "expansion", "trials", "renewal-risk", "people-quiet", "usage-collapse"];
    if let Some(unknown) = only.iter().find(|w| !ALL.contains(&w.as_str())) {
        anyhow::bail!("--only {unknown}: the workflows are {}", ALL.join(", "));
    }
    let chosen: Vec<&str> = ALL.into_iter().filter(|w| only.is_empty() || only.iter().any(|o| o == w)).collect();
    let mut rows = Vec::new();
    for &accounts in sizes {
        eprintln!("Generating {accounts} accounts × {days} days in the emulator process…");
        let mut child = super::emulate::in_child(accounts, days).await?;
        let dir = tempfile::tempdir().context("Failed to make a temporary directory")?;
        let store = format!("sqlite://{}", dir.path().join("bench.db").display());
        let features: Vec<Value> = reqwest::Client::new()
            .get(format!("{}/api/v1/feature", child.pendo))
            .header("x-pendo-integration-key", "emulator-integration-key")
            .send()
            .await
            .context("Failed to list Pendo features")?
            .json()
            .await
            .context("Failed to read Pendo features")?;
        let premium: Vec<String> = features
            .iter()
            .filter(|f| f["group"]["id"] == "grp-premium")
            .filter_map(|f| f["id"].as_str().map(|id| format!("\"{id}\"")))
            .collect();
        let head = super::demo::DEMO_CONFIG.split("\nworkflows:").next().unwrap_or_default();
        let text = format!("{head}\nworkflows:{}", WORKFLOWS.replace("{premium}", &premium.join(", ")))
            .replace("daily_share: 0.25", "daily_share: 1.0");
        reqwest::Client::new()
            .post(format!("{}/__emulator/fields/Account", child.salesforce))
            .header("content-type", "application/json")
            .body(RISK_FIELDS)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .context("Failed to add the risk fields to the emulated org")?;
        let ctx = super::demo::context(&text, "bench.yaml", [&child.salesforce, &child.pendo, &store]).await?;
        for &workflow in &chosen {
            for label in ["first run", "re-run"] {
                let t = Instant::now();
                let options =
                    RunOptions { dry_run: false, trigger: "bench".into(), progress: None, ..Default::default() };
                let r = engine::workflow::run(&ctx, workflow, &options).await?;
                let kinds: Vec<String> = r.api_calls.iter().map(|(k, v)| format!("{k} {v}")).collect();
                rows.push(vec![
                    thousands(accounts as u64),
                    workflow.to_owned(),
                    label.to_owned(),
                    r.state.clone(),
                    format!("{:.1}", t.elapsed().as_secs_f64()),
                    thousands(r.changed as u64),
                    thousands(r.written as u64),
                    thousands(r.total_api_calls()),
                    kinds.join(", "),
                ]);
            }
        }
        child.process.kill().await.ok();
    }
    table::print(
        &["accounts", "workflow", "run", "state", "seconds", "decided", "created/written", "SF calls", "calls by kind"],
        &rows,
    );
    Ok(())
}
